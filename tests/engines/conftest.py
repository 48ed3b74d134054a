"""A real student for the engine tests: all-MiniLM-L6-v2 with heads fitted on the hand-labelled sample
conversations (train.demo), so that predictions are confident, as a trained student's are, and parity
thresholds mean what they say (random heads give near-uniform probabilities whose top label flips at
the slightest numeric noise).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("torch", reason="the engine tests need the train extra (torch, transformers)")

from train.demo import labelled_samples, write_demo_checkpoint


def sample_texts() -> list[str]:
    return [text for text, _ in labelled_samples()]


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "student-v1", "v1")
    # The engine tests call the model "student"; the checkpoint format does not care.
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"demo-student"', '"student"'))
    return path


@pytest.fixture(scope="session")
def sample_rows() -> list[dict[str, object]]:
    return [{"text": text, "gold": gold} for text, gold in labelled_samples()]


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
