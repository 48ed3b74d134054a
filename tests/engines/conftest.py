"""A real student for the engine tests: all-MiniLM-L6-v2 with heads fitted on the sample conversations.

Random heads give near-uniform probabilities, whose top label flips at the slightest numeric noise;
a few hundred steps on the heads (encoder frozen) make the predictions confident, as a trained
student's are, so parity thresholds mean what they say.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch", reason="the engine tests need the train extra (torch, transformers)")

from engines.checkpoint import write_checkpoint  # noqa: E402
from engines.manifest import BundleManifest, TaskSpec  # noqa: E402
from engines.torch.model import StudentModel, default_encoder, output_name  # noqa: E402
from stream.samples import conversations_path  # noqa: E402
from stream.send import read_utterances  # noqa: E402

SENTIMENT = ["negative", "neutral", "positive"]
ACTS = ["inform", "question", "directive", "commissive"]


def sample_texts() -> list[str]:
    return [u.text for u in read_utterances(conversations_path())]


def rule_labels(text: str) -> dict[str, str]:
    """Deterministic labels the heads can learn (not meant to be linguistically right)."""
    lower = text.lower()
    sentiment = (
        "positive"
        if any(w in lower for w in ("thank", "great", "perfect", "fair"))
        else (
            "negative"
            if any(w in lower for w in ("sorry", "ridiculous", "give up", "wrong", "not"))
            else "neutral"
        )
    )
    act = (
        "question"
        if "?" in text
        else (
            "directive"
            if lower.startswith(("please", "let", "could"))
            else ("commissive" if lower.startswith(("i will", "i'll", "i've")) else "inform")
        )
    )
    return {"sentiment": sentiment, "dialogue_act": act}


def manifest(version: str, encoder: str) -> BundleManifest:
    return BundleManifest(
        model="student",
        version=version,
        created_at=datetime.now(UTC),
        base_model=encoder,
        tasks=[
            TaskSpec(name="sentiment", labels=SENTIMENT, output=output_name("sentiment")),
            TaskSpec(name="dialogue_act", labels=ACTS, output=output_name("dialogue_act")),
        ],
        max_length=64,
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        code_revision="test",
    )


def fit_heads(model: StudentModel, texts: list[str], steps: int = 300) -> StudentModel:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_encoder())
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        pooled = model.pooled(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    targets = {
        "sentiment": torch.tensor([SENTIMENT.index(rule_labels(t)["sentiment"]) for t in texts]),
        "dialogue_act": torch.tensor([ACTS.index(rule_labels(t)["dialogue_act"]) for t in texts]),
    }
    opt = torch.optim.Adam(model.heads.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(torch.nn.functional.cross_entropy(model.heads[k](pooled), y) for k, y in targets.items())
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    encoder = default_encoder()
    model = fit_heads(
        StudentModel.from_encoder(encoder, [("sentiment", 3), ("dialogue_act", 4)]), sample_texts()
    )
    return write_checkpoint(
        model, encoder, manifest("v1", encoder), tmp_path_factory.mktemp("ckpt") / "student-v1"
    )


@pytest.fixture(scope="session")
def sample_rows() -> list[dict[str, object]]:
    return [{"text": t, "gold": rule_labels(t)} for t in sample_texts()]


@pytest.fixture(scope="session")
def registered(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_dir: Path, sample_rows: list[dict[str, object]]
):
    """A registry (local directory) holding student/v1 exported from the checkpoint."""
    from engines.export import build_bundle
    from engines.registry import Registry

    registry = Registry(str(tmp_path_factory.mktemp("registry")))
    bundle = registry.put(build_bundle(checkpoint_dir, registry.staging_dir(), sample_rows))  # type: ignore[arg-type]
    return registry, bundle
