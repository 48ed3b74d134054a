"""Opening a bundle directory: its manifest, its files checked against their SHA-256, its engines.

<bundle>/manifest.json      the contract (engines.manifest.BundleManifest)
<bundle>/tokenizer/         Hugging Face tokenizer files (tokenizer.json is what engines read)
<bundle>/model.onnx         fp32 ONNX graph, dynamic batch and sequence axes, one output per task
<bundle>/torch/             the student's weights, for the torch reference and rebuilds
<bundle>/sample.jsonl       texts (and gold labels when known) every node verifies its engines on
<bundle>/engines/           compiled engines (ONNX variants, TensorRT plans), each with a .json record
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engines.errors import EngineError, ManifestError
from engines.manifest import BundleManifest, EngineRecord, read_manifest
from engines.tokenize import TOKENIZER_DIR, Tokenizer

ONNX_FILE: Final = "model.onnx"
SAMPLE_FILE: Final = "sample.jsonl"
ENGINES_DIR: Final = "engines"
_CHUNK: Final = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(root: Path, exclude: tuple[str, ...] = ("manifest.json", ENGINES_DIR)) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative POSIX path, except the manifest and engines."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in exclude:
            continue
        digests[rel] = sha256_of(path)
    return digests


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: BundleManifest

    @classmethod
    def open(cls, path: Path, *, verify: bool = True) -> Bundle:
        """Open a bundle; with ``verify``, every file listed in the manifest must exist and match."""
        if not path.is_dir():
            raise EngineError(f"{path} is not a bundle directory (it does not exist or is a file)")
        manifest = read_manifest(path)
        bundle = cls(path, manifest)
        if verify:
            bundle.check_files()
        return bundle

    def check_files(self) -> None:
        if not self.manifest.files:
            raise ManifestError(
                f"{self.path / 'manifest.json'} lists no files: this is a checkpoint, not a bundle"
            )
        for rel, expected in self.manifest.files.items():
            file = self.path / rel
            if not file.is_file():
                raise EngineError(f"bundle {self.label} is missing {file}")
            if sha256_of(file) != expected:
                raise EngineError(
                    f"bundle {self.label}: {file} is corrupt (its SHA-256 differs from the manifest)"
                )

    @property
    def label(self) -> str:
        return f"{self.manifest.model}/{self.manifest.version}"

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def engines_dir(self) -> Path:
        return self.path / ENGINES_DIR

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.path / TOKENIZER_DIR, self.manifest.max_length, self.manifest.inputs)

    def sample(self) -> tuple[list[str], dict[str, list[str | None]]]:
        """The verification sample: texts, and per task the gold label of each text (None if unknown)."""
        path = self.path / SAMPLE_FILE
        if not path.is_file():
            raise EngineError(f"bundle {self.label} has no {SAMPLE_FILE} to verify engines on")
        texts: list[str] = []
        gold: dict[str, list[str | None]] = {t.name: [] for t in self.manifest.tasks}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            texts.append(row["text"])
            for task, labels in gold.items():
                labels.append(row.get("gold", {}).get(task))
        return texts, gold

    def tasks(self) -> list[tuple[str, int]]:
        return [(t.name, len(t.labels)) for t in self.manifest.tasks]

    def engine_records(self) -> list[EngineRecord]:
        records = []
        if self.engines_dir.is_dir():
            for sidecar in sorted(self.engines_dir.glob("*.json")):
                try:
                    records.append(EngineRecord.model_validate_json(sidecar.read_text(encoding="utf-8")))
                except ValueError as exc:
                    raise ManifestError(f"{sidecar} is not a valid engine record: {exc}") from None
        return records

    def engine_record(self, engine_id: str) -> EngineRecord:
        for record in self.engine_records():
            if record.engine_id == engine_id:
                return record
        known = [r.engine_id for r in self.engine_records()]
        raise EngineError(f"bundle {self.label} has no engine {engine_id!r}; it has {known}")
