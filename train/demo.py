"""The demo student: all-MiniLM-L6-v2, frozen, with three task heads fitted on parley's sample
conversations.

It exists so that ``make demo`` can run the whole loop on a fresh machine in minutes. It is *not* a
production model: the heads are fitted on the training part of some fifty hand-written conversations
(parley/samples), and the held-out part is what the demo sends through the worker and scores. The
encoder stays frozen and only the heads (intent, sentiment, dialogue act) are fitted, which takes
seconds on CPU; the bundle then goes through the same export, build, verification and promotion as any
other. The real student comes from ``parley train fit`` (docs/training.md).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from parley.samples import (
    HELD_OUT_FRACTION,
    SPLIT_SEED,
    TASKS,
    Part,
    conversations_path,
    labels_path,
    read_conversations,
    read_labels,
)

log = structlog.get_logger(__name__)

DEMO_MODEL = "demo-student"
MAX_LENGTH = 64


def labelled_samples(part: Part = "all") -> list[tuple[str, dict[str, str]]]:
    """(text, {task: label}) for every sample utterance of ``part`` (all, train or held_out)."""
    gold = read_labels()
    return [(u.text, gold[u.utterance_id]) for u in read_conversations(part) if u.utterance_id in gold]


def data_fingerprints() -> dict[str, str]:
    """SHA-256 of what the demo student learns from: the two sample files and the training split."""
    train = sorted({u.conversation_id for u in read_conversations("train")})
    return {
        "samples/conversations.jsonl": hashlib.sha256(conversations_path().read_bytes()).hexdigest(),
        "samples/labels.jsonl": hashlib.sha256(labels_path().read_bytes()).hexdigest(),
        "samples/train-split": hashlib.sha256("\n".join(train).encode()).hexdigest(),
    }


def _pooled(model: Any, texts: list[str]) -> Any:
    """The student's mean-pooled encoder outputs [N, hidden] for ``texts`` (the encoder is frozen)."""
    import torch
    from transformers import AutoTokenizer

    from engines.torch.model import default_encoder

    tok = AutoTokenizer.from_pretrained(default_encoder())
    enc = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        return model.pooled(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))


def fit_heads(
    model: Any,
    samples: list[tuple[str, dict[str, str]]],
    steps: int = 300,
    lr: float = 0.05,
    l2: float = 1e-2,
    noise: float = 0.5,
) -> Any:
    """Fit the task heads on frozen, mean-pooled encoder outputs (full batch, Adam).

    The heads must survive the INT8 engine, whose dynamically quantised encoder moves each pooled
    vector a little. Unregularised heads overfit the ~300 training utterances with steep decision
    surfaces: their INT8 engine agreed with torch on 96.8% of held-out labels and moved a probability
    by 0.37, failing verification (≥ 97%, ≤ 0.25). An L2 penalty on the head weights and Gaussian noise
    of ``noise`` × each dimension's spread added to the pooled vectors while fitting make them smooth:
    98.3% and 0.12 on the held-out conversations, for a held-out accuracy of 0.81 / 0.77 / 0.78
    (intent / sentiment / dialogue act) against 0.81 / 0.82 / 0.79 unregularised (measured 2026-12-02).
    """
    import torch

    pooled = _pooled(model, [t for t, _ in samples])
    spread = pooled.std(dim=0, keepdim=True)
    targets = {
        task: torch.tensor([labels.index(g[task]) for _, g in samples]) for task, labels in TASKS.items()
    }
    opt = torch.optim.Adam(model.heads.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        noisy = pooled + noise * spread * torch.randn_like(pooled)
        losses = [torch.nn.functional.cross_entropy(model.heads[t](noisy), y) for t, y in targets.items()]
        penalty = sum(model.heads[t].weight.square().sum() for t in targets)
        loss = torch.stack(losses).sum() + l2 * penalty
        loss.backward()
        opt.step()
    return model.eval()


def held_out_accuracy(model: Any) -> dict[str, float]:
    """Per-task accuracy of the torch student on the held-out sample conversations."""
    import torch

    samples = labelled_samples("held_out")
    pooled = _pooled(model, [t for t, _ in samples])
    with torch.no_grad():
        predicted = {t: model.heads[t](pooled).argmax(dim=1).tolist() for t in TASKS}
    return {
        f"held_out_accuracy_{task}": round(
            sum(labels[p] == g[task] for p, (_, g) in zip(predicted[task], samples, strict=True))
            / len(samples),
            4,
        )
        for task, labels in TASKS.items()
    }


def write_demo_checkpoint(out: Path, version: str, seed: int = 0) -> Path:
    """Fit the demo student on the training conversations and write it as a checkpoint at ``out``."""
    import torch

    from engines.checkpoint import write_checkpoint
    from engines.manifest import BundleManifest, TaskSpec, TrainingInfo
    from engines.torch.model import StudentModel, default_encoder, output_name

    torch.manual_seed(seed)
    encoder = default_encoder()
    train = labelled_samples("train")
    model = fit_heads(StudentModel.from_encoder(encoder, [(t, len(ls)) for t, ls in TASKS.items()]), train)
    conversations = read_conversations("train")
    manifest = BundleManifest(
        model=DEMO_MODEL,
        version=version,
        created_at=datetime.now(UTC),
        base_model=encoder,
        tasks=[TaskSpec(name=t, labels=ls, output=output_name(t)) for t, ls in TASKS.items()],
        max_length=MAX_LENGTH,
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        code_revision="demo",
        training=TrainingInfo(
            config={
                "what": "frozen encoder, task heads only, on the training part of parley/samples",
                "seed": seed,
                "split_seed": SPLIT_SEED,
                "held_out_fraction": HELD_OUT_FRACTION,
                "train_conversations": len({u.conversation_id for u in conversations}),
                "train_utterances": len(train),
            },
            metrics=held_out_accuracy(model),
        ),
        data_fingerprints=data_fingerprints(),
    )
    return write_checkpoint(model, encoder, manifest, out)


def _current_demo_version(registry: Any) -> str | None:
    """A registered demo version trained on the sample data as it is now, if there is one."""
    wanted = data_fingerprints()
    for version in reversed(registry.versions(DEMO_MODEL)):
        manifest = registry.manifest(DEMO_MODEL, version)
        if manifest.data_fingerprints == wanted and manifest.task_names == list(TASKS):
            return str(version)
    return None


def _next_demo_version(registry: Any) -> str:
    taken = set(registry.versions(DEMO_MODEL))
    return next(f"demo-{n}" for n in range(1, len(taken) + 2) if f"demo-{n}" not in taken)


async def ensure_demo_bundle(
    registry_uri: str, redis_settings: Any, work_dir: Path, target: str = "cpu"
) -> str:
    """Make sure a demo student trained on the sample data as it is now is registered, built,
    verified and promoted on ``target``; return the serving version. A demo version trained on older
    samples is left in the registry and a new one (the next ``demo-N``) is trained beside it."""
    import asyncio

    from engines.build import build_onnxruntime
    from engines.export import build_bundle
    from engines.pointer import PointerStore
    from engines.promotion import promote
    from engines.registry import Registry
    from parley.clients import redis_client

    registry = Registry(registry_uri)
    client = redis_client(redis_settings)
    try:
        pointers = PointerStore(client, redis_settings.key_prefix)
        version = _current_demo_version(registry)
        current = await pointers.get(DEMO_MODEL, target)
        if current is not None and version is not None and current.version == version:
            log.info("demo bundle already serving", version=version, engine=current.engine_id)
            return version
        if version is None:
            version = _next_demo_version(registry)
            log.info("training the demo student (heads only, on the sample conversations)", version=version)
            ckpt = await asyncio.to_thread(write_demo_checkpoint, work_dir / "demo-checkpoint", version)
            # Engines are verified against torch on every sample utterance, with its gold labels.
            rows = [{"text": t, "gold": g} for t, g in labelled_samples()]
            staged = await asyncio.to_thread(build_bundle, ckpt, registry.staging_dir(), rows)  # type: ignore[arg-type]
            registry.put(staged)
        bundle = registry.open(DEMO_MODEL, version)
        if not any(r.backend == "onnxruntime" and r.precision == "int8" for r in bundle.engine_records()):
            await asyncio.to_thread(build_onnxruntime, bundle, registry, "int8")
        serving = await promote(pointers, bundle, target, backend="onnxruntime")
        log.info("demo bundle promoted", version=version, engine=serving.engine_id)
        return version
    finally:
        await client.aclose()
