"""The demo student: all-MiniLM-L6-v2 with heads fitted on parley's hand-labelled sample conversations.

It exists so that ``make demo`` can run the whole loop on a fresh machine in minutes: it is *not* a
good model (47 utterances), and the real student comes from ``parley train fit``. The encoder is
frozen and only the task heads are fitted, which takes seconds on CPU; the bundle then goes through
the same export, build, verification and promotion as any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DEMO_MODEL = "demo-student"
SENTIMENT = ["negative", "neutral", "positive"]
DIALOGUE_ACTS = ["inform", "question", "directive", "commissive"]
TASKS = {"sentiment": SENTIMENT, "dialogue_act": DIALOGUE_ACTS}


def labelled_samples() -> list[tuple[str, dict[str, str]]]:
    """(text, {task: label}) for every sample utterance, from stream/samples/labels.jsonl."""
    from stream.samples import conversations_path
    from stream.send import read_utterances

    gold: dict[str, dict[str, str]] = {}
    for line in (files("stream.samples") / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        gold.setdefault(row["id"], {})[row["task"]] = row["label"]
    return [
        (u.text, gold[u.utterance_id])
        for u in read_utterances(conversations_path())
        if u.utterance_id in gold
    ]


def fit_heads(
    model: Any, samples: list[tuple[str, dict[str, str]]], steps: int = 300, lr: float = 0.05
) -> Any:
    """Fit the task heads on frozen, mean-pooled encoder outputs (full batch, Adam)."""
    import torch
    from transformers import AutoTokenizer

    from engines.torch.model import default_encoder

    tok = AutoTokenizer.from_pretrained(default_encoder())
    enc = tok([t for t, _ in samples], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        pooled = model.pooled(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    targets = {
        task: torch.tensor([labels.index(g[task]) for _, g in samples]) for task, labels in TASKS.items()
    }
    opt = torch.optim.Adam(model.heads.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.stack(
            [torch.nn.functional.cross_entropy(model.heads[t](pooled), y) for t, y in targets.items()]
        ).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model.eval()


def write_demo_checkpoint(out: Path, version: str, seed: int = 0) -> Path:
    import torch

    from engines.checkpoint import write_checkpoint
    from engines.manifest import BundleManifest, TaskSpec
    from engines.torch.model import StudentModel, default_encoder, output_name

    torch.manual_seed(seed)
    encoder = default_encoder()
    model = fit_heads(
        StudentModel.from_encoder(encoder, [(t, len(ls)) for t, ls in TASKS.items()]), labelled_samples()
    )
    manifest = BundleManifest(
        model=DEMO_MODEL,
        version=version,
        created_at=datetime.now(UTC),
        base_model=encoder,
        tasks=[TaskSpec(name=t, labels=ls, output=output_name(t)) for t, ls in TASKS.items()],
        max_length=64,
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        code_revision="demo",
        training={"config": {"what": "heads only, on the 47 hand-labelled sample utterances", "seed": seed}},
    )
    return write_checkpoint(model, encoder, manifest, out)


async def ensure_demo_bundle(
    registry_uri: str, redis_settings: Any, work_dir: Path, target: str = "cpu"
) -> str:
    """Make sure the demo model is registered, built, verified and promoted; return the serving version."""
    import asyncio

    from engines.build import build_onnxruntime
    from engines.export import build_bundle
    from engines.pointer import PointerStore
    from engines.registry import Registry
    from parley.clients import redis_client

    registry = Registry(registry_uri)
    client = redis_client(redis_settings)
    try:
        pointers = PointerStore(client, redis_settings.key_prefix)
        current = await pointers.get(DEMO_MODEL, target)
        if current is not None and registry.has(DEMO_MODEL, current.version):
            log.info("demo bundle already serving", version=current.version, engine=current.engine_id)
            return current.version
        version = "demo-1"
        if not registry.has(DEMO_MODEL, version):
            log.info("training the demo student (heads only, on the sample conversations)")
            ckpt = await asyncio.to_thread(write_demo_checkpoint, work_dir / "demo-checkpoint", version)
            rows = [{"text": t, "gold": g} for t, g in labelled_samples()]
            staged = await asyncio.to_thread(build_bundle, ckpt, registry.staging_dir(), rows)  # type: ignore[arg-type]
            registry.put(staged)
        bundle = registry.open(DEMO_MODEL, version)
        built = await asyncio.to_thread(build_onnxruntime, bundle, registry, "int8")
        await pointers.promote(DEMO_MODEL, version, built.record.engine_id, "onnxruntime", target)
        log.info("demo bundle promoted", version=version, engine=built.record.engine_id)
        return version
    finally:
        await client.aclose()
