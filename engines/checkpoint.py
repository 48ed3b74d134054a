"""Training checkpoints: the torch half of a bundle, written by train/ and read by ``parley engine export``.

    <checkpoint>/manifest.json   a BundleManifest with ``files`` empty (nothing exported yet)
    <checkpoint>/tokenizer/      the encoder's tokenizer, saved with transformers
    <checkpoint>/torch/          config.json + model.safetensors (engines.torch.model)

One format for both keeps the contract in one place: export adds model.onnx and the file digests.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engines.errors import EngineError
from engines.manifest import BundleManifest, read_manifest, write_manifest
from engines.tokenize import TOKENIZER_DIR
from engines.torch.model import TORCH_DIR, WEIGHTS_FILE, StudentModel, load_weights, save_weights


def write_checkpoint(
    model: StudentModel, tokenizer_source: str | Path, manifest: BundleManifest, out: Path
) -> Path:
    """Write a checkpoint to ``out`` (replaced whole: written beside it, then renamed into place)."""
    from transformers import AutoTokenizer

    if [t.name for t in manifest.tasks] != model.task_names:
        raise EngineError(f"manifest tasks {manifest.task_names} differ from the model's {model.task_names}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(staging / TOKENIZER_DIR)
        save_weights(model, staging)
        write_manifest(manifest.model_copy(update={"files": {}}), staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def read_checkpoint(path: Path) -> tuple[BundleManifest, StudentModel]:
    """The manifest and the student (eval mode, CPU) of a checkpoint directory."""
    manifest = read_manifest(path)
    for needed in (path / TOKENIZER_DIR / "tokenizer.json", path / TORCH_DIR / WEIGHTS_FILE):
        if not needed.is_file():
            raise EngineError(f"checkpoint {path} is missing {needed}")
    tasks = [(t.name, len(t.labels)) for t in manifest.tasks]
    try:
        model = load_weights(path, tasks)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EngineError(f"checkpoint {path} cannot be loaded: {exc}") from None
    return manifest, model
