"""``parley engine export``: a training checkpoint → a bundle (ONNX, tokenizer, torch weights, manifest).

The bundle is assembled in a staging directory; the registry moves it into place in one rename, so a
reader never sees half a bundle. Before it is handed over, the ONNX graph is checked with onnx's
checker and run with ONNX Runtime against the torch model on sample texts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Required, TypedDict

import structlog

from engines.bundle import ONNX_FILE, SAMPLE_FILE, Bundle, file_digests
from engines.checkpoint import read_checkpoint
from engines.errors import EngineError
from engines.manifest import BundleManifest, write_manifest
from engines.tokenize import TOKENIZER_DIR
from engines.torch.model import TORCH_DIR, ExportWrapper, StudentModel

log = structlog.get_logger(__name__)

# Opset 20 has a Gelu operator: the exporter writes GELU as one node instead of Erf, Div, Add and two
# Muls that ONNX Runtime's CPU fusions did not recognise in the torch.export graph (docs/engines.md).
OPSET: Final = 20
MAX_EXPORT_BATCH: Final = 4096
EXPORT_CHECK_TOLERANCE: Final = 1e-4


def export_onnx(model: StudentModel, manifest: BundleManifest, path: Path) -> None:
    """Write the student as ONNX with torch.export (dynamo): dynamic batch and sequence axes, one logits
    output per task; then check the file with onnx's full checker.

    Attention is exported in its eager form (MatMul, Softmax, MatMul) rather than through
    scaled_dot_product_attention, whose export adds IsNaN/Where masking and extra transposes that
    cost ~25% of CPU throughput; the two are the same function (verified against torch after export).
    """
    import onnx
    import torch

    inputs = list(manifest.inputs)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    sequence = torch.export.Dim("sequence", min=1, max=max(manifest.max_length, 16))
    example = {name: torch.ones((2, 16), dtype=torch.int64) for name in inputs}
    with _eager_attention(model), warnings.catch_warnings(), torch.inference_mode():
        # The exporter explains its axis renaming at length; the graph is checked below instead.
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            ExportWrapper(model.eval()).eval(),
            (),
            str(path),
            kwargs=example,
            input_names=inputs,
            output_names=[task.output for task in manifest.tasks],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in inputs},
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            external_data=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


@contextmanager
def _eager_attention(model: StudentModel) -> Iterator[None]:
    """Export with the encoder's eager attention, then put back what it used before."""
    config = getattr(model.encoder, "config", None)
    setter = getattr(model.encoder, "set_attn_implementation", None)
    before = getattr(config, "_attn_implementation", None)
    if setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)


def build_bundle(
    checkpoint: Path, staging_parent: Path, sample: Sequence[SampleRow], version: str | None = None
) -> Path:
    """Assemble a complete, checked bundle from ``checkpoint`` in a new directory under ``staging_parent``."""
    manifest, model = read_checkpoint(checkpoint)
    context = manifest.training.config.get("context_turns") or 0
    if not isinstance(context, int) or context < 0:
        raise EngineError(f"{checkpoint}: training.config.context_turns is {context!r}, not a count")
    if context != manifest.context_turns:  # checkpoints written before the manifest carried it
        manifest = manifest.model_copy(update={"context_turns": context})
    if version is not None:
        manifest = manifest.model_copy(update={"version": version})
    # Re-validate: the override must obey the same rules as the manifest itself.
    manifest = BundleManifest.model_validate(manifest.model_dump())
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".staging-{manifest.model}-{manifest.version}-", dir=staging_parent)
    )
    try:
        shutil.copytree(checkpoint / TOKENIZER_DIR, staging / TOKENIZER_DIR)
        shutil.copytree(checkpoint / TORCH_DIR, staging / TORCH_DIR)
        export_onnx(model, manifest, staging / ONNX_FILE)
        _write_sample(staging / SAMPLE_FILE, sample, manifest)
        manifest = manifest.model_copy(update={"files": file_digests(staging)})
        write_manifest(manifest, staging)
        bundle = Bundle.open(staging)
        _check_against_torch(bundle, bundle.sample()[0])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle built", model=manifest.model, version=manifest.version, files=len(manifest.files))
    return staging


class SampleRow(TypedDict, total=False):
    text: Required[str]
    gold: dict[str, str]


def _write_sample(path: Path, sample: Sequence[SampleRow], manifest: BundleManifest) -> None:
    if not sample:
        raise EngineError("export needs sample texts: engines are verified on them on every node")
    labels = {t.name: set(t.labels) for t in manifest.tasks}
    with path.open("w", encoding="utf-8") as f:
        for row in sample:
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise EngineError(f"sample row without text: {row!r}")
            gold = {
                task: label
                for task, label in row.get("gold", {}).items()
                if task in labels and label in labels[task]
            }
            f.write(json.dumps({"text": row["text"], "gold": gold}, ensure_ascii=False) + "\n")


def _check_against_torch(bundle: Bundle, texts: Sequence[str]) -> None:
    from engines.verify import compare

    if not texts:
        raise EngineError("export needs sample texts to check the ONNX graph against torch")
    result = compare(bundle, "onnxruntime", texts, reference="torch")
    if result.max_abs_diff > EXPORT_CHECK_TOLERANCE or result.label_agreement < 1.0:
        raise EngineError(
            f"the exported ONNX graph of {bundle.label} differs from torch: max |Δp| "
            f"{result.max_abs_diff:.2e}, label agreement {result.label_agreement:.4f}"
        )


def read_sample_rows(path: Path | None) -> list[SampleRow]:
    """Verification texts: a JSONL file with 'text' (and optional 'gold' {task: label}), or the sample
    conversations that ship with parley, with their gold labels."""
    if path is None:
        from parley.samples import read_conversations, read_labels

        gold = read_labels()
        return [{"text": u.text, "gold": gold.get(u.utterance_id, {})} for u in read_conversations()]
    rows: list[SampleRow] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EngineError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise EngineError(f"{path}, line {number}: needs a 'text' string")
            rows.append({"text": row["text"], "gold": row.get("gold", {})})
    return rows
