"""``manifest.json``: what a bundle holds, and what training knew when it produced it.

The manifest is written once, with the bundle, and never changed (a bundle version is immutable).
Compiled engines added later by a node carry their own sidecar metadata under ``engines/``.
``format_version`` lets an older reader refuse a newer bundle with a clear error instead of
misreading it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from engines.errors import ManifestError
from parley.contracts import ContractError, validate

MANIFEST_NAME: Final = "manifest.json"
FORMAT_VERSION: Final = 1

# Model names and versions become directory names and Redis keys: keep them path-safe.
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSpec(_Strict):
    """One classification task of the student: its labels in the order of the logits."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    labels: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=2)
    output: str = Field(description="Name of the ONNX output holding this task's logits.")

    @model_validator(mode="after")
    def _unique_labels(self) -> Self:
        dupes = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if dupes:
            raise ValueError(f"task {self.name!r} lists labels more than once: {dupes}")
        return self


class TrainingInfo(_Strict):
    """The training run behind the bundle: its full config and its evaluation metrics."""

    config: dict[str, JsonValue] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)


class BundleManifest(_Strict):
    """The manifest of one bundle version (docs/engines.md, "From checkpoint to serving engine")."""

    format_version: int = Field(FORMAT_VERSION, ge=1)
    model: Name
    version: Name
    created_at: AwareDatetime
    base_model: str = Field(description="The encoder the student started from (hub id or path).")
    tasks: list[TaskSpec] = Field(min_length=1)
    max_length: int = Field(ge=8, le=8192, description="Longest token sequence the model reads.")
    context_turns: int = Field(0, ge=0, description="Previous turns fed as a text pair (0: none).")
    inputs: list[str] = Field(default_factory=lambda: ["input_ids", "attention_mask"], min_length=1)
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    data_fingerprints: dict[str, Sha256] = Field(default_factory=dict)
    code_revision: str = Field(description="git revision of the code that trained the model.")
    files: dict[str, Sha256] = Field(
        default_factory=dict, description="SHA-256 of every file of the bundle, by relative path."
    )

    @model_validator(mode="after")
    def _unique_tasks(self) -> Self:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        outputs = [task.output for task in self.tasks]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"each task needs its own ONNX output, got {outputs}")
        return self

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"bundle {self.model}/{self.version} has no task {name!r}; it has {self.task_names}")

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]


def parse_manifest(data: dict[str, Any], *, source: str = MANIFEST_NAME) -> BundleManifest:
    """Validate a manifest's JSON object; ManifestError names ``source`` and every problem."""
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ManifestError(
            f"{source} has format_version {version}, but this parley reads up to {FORMAT_VERSION}: "
            "upgrade parley to load this bundle"
        )
    try:
        return validate(BundleManifest, data, contract="manifest")
    except ContractError as exc:
        problems = "; ".join(str(r) for r in exc.rejections)
        raise ManifestError(f"{source} is not a valid bundle manifest: {problems}") from None


def read_manifest(path: Path) -> BundleManifest:
    """Read ``manifest.json`` (or the bundle directory holding it)."""
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: is this a bundle directory?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{path} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return parse_manifest(data, source=str(path))


def write_manifest(manifest: BundleManifest, directory: Path) -> Path:
    """Write ``manifest.json`` into a bundle directory that is being assembled."""
    path = directory / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


class Parity(_Strict):
    """How an engine's outputs compare with the torch reference (or fp32) on a sample."""

    reference: str = Field(description="What it was compared with, e.g. 'torch-cpu-fp32'.")
    samples: int = Field(ge=1)
    label_agreement: float = Field(
        ge=0.0, le=1.0, description="Share of (utterance, task) with equal top labels."
    )
    max_abs_diff: float = Field(ge=0.0, description="Largest absolute difference of any probability.")
    accuracy_delta: dict[str, float] = Field(
        default_factory=dict,
        description="Per task: engine accuracy minus reference accuracy, when gold labels were given.",
    )


class EngineRecord(_Strict):
    """Sidecar ``engines/<id>.json`` of a compiled engine: what it is, what built it, how it verified.

    Bundles are immutable; compiled engines are added beside them, one file and one record each.
    """

    format_version: int = Field(FORMAT_VERSION, ge=1)
    engine_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    backend: str = Field(description="onnxruntime or tensorrt.")
    precision: str = Field(description="fp32, fp16 or int8.")
    file: str = Field(description="Path of the engine file, relative to the bundle.")
    sha256: Sha256
    runtime_version: str
    gpu_arch: str | None = Field(None, description="CUDA compute capability it was built for; None on CPU.")
    profiles: list[dict[str, JsonValue]] = Field(
        default_factory=list, description="Optimisation profiles (TensorRT)."
    )
    built_at: AwareDatetime
    parity: Parity | None = None
