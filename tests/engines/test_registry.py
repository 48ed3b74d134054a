"""The registry: atomic, immutable versions, locally and through fsspec; clear errors for bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engines.base import load_engine
from engines.bundle import Bundle, sha256_of
from engines.errors import EngineError, ManifestError
from engines.export import build_bundle
from engines.registry import Registry, RegistryError

pytestmark = pytest.mark.slow


def _copy_bundle(bundle: Bundle, target: Path) -> Path:
    shutil.copytree(bundle.path, target, ignore=shutil.ignore_patterns("engines"))
    return target


def test_put_lists_and_opens_a_version(registered) -> None:
    """A registered version is listed, opens with its files verified, and serves predictions."""
    registry, _ = registered
    assert registry.models() == ["student"]
    assert "v1" in registry.versions("student")
    opened = registry.open("student", "v1")
    with load_engine(opened, "onnxruntime") as engine:
        assert engine.infer(["thanks a lot"])["sentiment"].shape == (1, 3)


def test_same_bundle_again_is_accepted_other_contents_are_refused(registered, tmp_path: Path) -> None:
    """Re-putting an identical bundle is harmless; a different bundle under the same version is refused."""
    registry, bundle = registered
    registry.put(_copy_bundle(bundle, registry.staging_dir() / "again"))
    other = _copy_bundle(bundle, registry.staging_dir() / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "sample.jsonl").write_text('{"text": "something else", "gold": {}}\n')
    manifest["files"]["sample.jsonl"] = sha256_of(other / "sample.jsonl")
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="immutable"):
        registry.put(other)


def test_half_written_version_is_invisible(registered) -> None:
    """A version folder without its manifest (an interrupted upload) is neither listed nor opened."""
    registry, _ = registered
    (Path(registry.root) / "student" / "v-partial").mkdir(parents=True)
    (Path(registry.root) / "student" / "v-partial" / "model.onnx").write_bytes(b"half")
    assert "v-partial" not in registry.versions("student")
    with pytest.raises(RegistryError, match="no bundle student/v-partial"):
        registry.open("student", "v-partial")


def test_corrupt_file_is_named(registered, tmp_path: Path) -> None:
    """A bundle file whose bytes changed is refused, naming the file."""
    _, bundle = registered
    copy = _copy_bundle(bundle, tmp_path / "corrupt")
    with (copy / "model.onnx").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(EngineError, match=r"model\.onnx is corrupt"):
        Bundle.open(copy)


def test_missing_file_is_named(registered, tmp_path: Path) -> None:
    """A bundle missing a listed file is refused, naming it."""
    _, bundle = registered
    copy = _copy_bundle(bundle, tmp_path / "missing")
    (copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(EngineError, match=r"missing .*tokenizer\.json"):
        Bundle.open(copy)


def test_onnx_file_that_does_not_parse_is_a_clear_error(registered, tmp_path: Path) -> None:
    """Garbage in model.onnx (with a matching digest) fails at load with the file named."""
    _, bundle = registered
    copy = _copy_bundle(bundle, tmp_path / "garbage")
    (copy / "model.onnx").write_bytes(b"this is not a protobuf")
    engine = load_engine(Bundle.open(copy, verify=False), "onnxruntime")
    with pytest.raises(EngineError, match=r"cannot load .*model\.onnx"):
        engine.activate()


def test_newer_manifest_format_is_refused(registered, tmp_path: Path) -> None:
    """A bundle from a newer parley is refused with 'upgrade', naming the manifest."""
    _, bundle = registered
    copy = _copy_bundle(bundle, tmp_path / "newer")
    data = json.loads((copy / "manifest.json").read_text())
    data["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="upgrade parley"):
        Bundle.open(copy)


def test_failed_export_leaves_nothing_in_the_registry(checkpoint_dir: Path, tmp_path: Path) -> None:
    """An export that fails (no sample texts) removes its staging folder and registers nothing."""
    registry = Registry(str(tmp_path / "reg"))
    with pytest.raises(EngineError, match="sample"):
        build_bundle(checkpoint_dir, registry.staging_dir(), [])
    assert list(registry.staging_dir().iterdir()) == []
    assert registry.models() == []


def test_remote_registry_through_fsspec(registered, tmp_path: Path) -> None:
    """Through fsspec (memory://): upload with the manifest last, download into the cache, open, infer."""
    _, bundle = registered
    remote = Registry("memory://parley-test-registry", cache_dir=tmp_path / "cache")
    staged = _copy_bundle(bundle, tmp_path / "staged")
    opened = remote.put(staged)
    assert remote.versions("student") == ["v1"]
    assert opened.path.is_relative_to(tmp_path / "cache")
    with load_engine(opened, "onnxruntime") as engine:
        assert engine.infer(["where is my order"])["dialogue_act"].shape == (1, 4)
    remote.fs.rm(remote.root, recursive=True)


def test_version_that_does_not_exist_lists_the_ones_that_do(registered) -> None:
    """Opening an unknown version names the versions the registry has."""
    registry, _ = registered
    with pytest.raises(RegistryError, match="v1"):
        registry.open("student", "v404")
