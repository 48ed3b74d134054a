"""The bundle registry: ``<root>/<model>/<version>/`` on a local disk or any fsspec file system.

A version is immutable: ``put`` refuses to overwrite one, except to accept the very same bundle again
(so a replayed build is harmless). Writes are atomic for readers: on a local disk the staged bundle
is renamed into place in one step; on an object store every file is uploaded first and
``manifest.json`` last, and a version exists only once its manifest does. Remote bundles are
downloaded into a local cache (again staged and renamed) before an engine loads them.

Which version serves is not decided here but by the pointer (engines.pointer), in Redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import structlog

from engines.bundle import Bundle, sha256_of
from engines.errors import EngineError, ManifestError
from engines.manifest import MANIFEST_NAME, BundleManifest, EngineRecord, parse_manifest, read_manifest

log = structlog.get_logger(__name__)

STAGING: Final = ".staging"
SIDE_FILES: Final = ".cache"


class RegistryError(EngineError):
    """The registry refused an operation (immutability, a missing version, a bad root)."""


class Registry:
    def __init__(self, uri: str, cache_dir: Path | None = None) -> None:
        from fsspec.core import url_to_fs

        self.uri = uri
        self.fs, self.root = url_to_fs(uri)
        self.local = "file" in _protocols(self.fs)
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "parley-registry-cache"

    # -- reading -------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def models(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and self.versions(n))

    def versions(self, model: str) -> list[str]:
        """Versions of a model that are complete (their manifest exists), oldest first."""
        base = self._path(model)
        if not self.fs.exists(base):
            return []
        found = []
        for entry in self.fs.ls(base, detail=False):
            version = entry.rstrip("/").rsplit("/", 1)[-1]
            if not version.startswith(".") and self.fs.exists(self._path(model, version, MANIFEST_NAME)):
                found.append((self.manifest(model, version).created_at, version))
        return [v for _, v in sorted(found)]

    def has(self, model: str, version: str) -> bool:
        return bool(self.fs.exists(self._path(model, version, MANIFEST_NAME)))

    def manifest(self, model: str, version: str) -> BundleManifest:
        path = self._path(model, version, MANIFEST_NAME)
        if not self.fs.exists(path):
            raise RegistryError(
                f"{self.uri} has no bundle {model}/{version}; it has {self.versions(model) or 'none'}"
            )
        try:
            data = json.loads(self.fs.cat_file(path))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path} is not JSON: {exc}") from None
        return parse_manifest(data, source=path)

    def open(self, model: str, version: str, *, verify: bool = True) -> Bundle:
        """The bundle as a local directory (downloaded into the cache first when remote)."""
        self.manifest(model, version)  # clear error when missing
        if self.local:
            return Bundle.open(Path(self._path(model, version)), verify=verify)
        target = self.cache_dir / model / version
        if not (target / MANIFEST_NAME).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
            try:
                self.fs.get(self._path(model, version) + "/", str(staging), recursive=True)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return Bundle.open(target, verify=verify)

    # -- writing -------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """Where to assemble a bundle: inside the registry when local, so the final move is a rename."""
        path = Path(self._path(STAGING)) if self.local else self.cache_dir / STAGING
        path.mkdir(parents=True, exist_ok=True)
        return path

    def put(self, staged: Path) -> Bundle:
        """Move a complete, staged bundle into the registry as ``<model>/<version>``."""
        manifest = read_manifest(staged)
        model, version = manifest.model, manifest.version
        if self.has(model, version):
            existing = self.manifest(model, version)
            if existing.files == manifest.files and existing.files:
                shutil.rmtree(staged, ignore_errors=True)
                log.info("bundle already registered", model=model, version=version)
                return self.open(model, version)
            raise RegistryError(
                f"{self.uri}/{model}/{version} already exists with other contents; a bundle "
                "version is immutable: export under a new version"
            )
        Bundle.open(staged)  # complete and uncorrupted, or refused before anything moves
        if self.local:
            target = Path(self._path(model, version))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, target)  # atomic on one file system; fails if target appeared meanwhile
        else:
            self._upload(staged, self._path(model, version))
            shutil.rmtree(staged, ignore_errors=True)
        log.info("bundle registered", model=model, version=version, registry=self.uri)
        return self.open(model, version)

    def _upload(self, local: Path, remote: str) -> None:
        files = sorted(p for p in local.rglob("*") if p.is_file())
        manifest = local / MANIFEST_NAME
        for path in [p for p in files if p != manifest] + [manifest]:  # the manifest commits the bundle
            rel = path.relative_to(local).as_posix()
            if "/" in rel:
                self.fs.makedirs(remote + "/" + rel.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(path), f"{remote}/{rel}")

    def add_record(self, bundle: Bundle, record: EngineRecord) -> EngineRecord:
        """Record a verified engine whose file is already part of the bundle (fp32 model.onnx)."""
        model, version = bundle.manifest.model, bundle.manifest.version
        remote_dir = self._path(model, version)
        self.fs.makedirs(remote_dir + "/engines", exist_ok=True)
        self.fs.pipe_file(
            f"{remote_dir}/engines/{record.engine_id}.json", record.model_dump_json(indent=2).encode()
        )
        self._mirror_record(bundle, record)
        return record

    def _mirror_record(self, bundle: Bundle, record: EngineRecord, engine_file: Path | None = None) -> None:
        """Keep the local cached copy of a remote bundle in step with what was just written."""
        if self.local:
            return
        cached = self.cache_dir / bundle.manifest.model / bundle.manifest.version
        if cached.exists():
            (cached / "engines").mkdir(exist_ok=True)
            if engine_file is not None:
                shutil.copyfile(engine_file, cached / record.file)
            (cached / "engines" / f"{record.engine_id}.json").write_text(record.model_dump_json(indent=2))

    def add_engine(self, bundle: Bundle, engine_file: Path, record: EngineRecord) -> EngineRecord:
        """Add a compiled engine (file and record) to a registered bundle; the record is written last."""
        if sha256_of(engine_file) != record.sha256:
            raise RegistryError(f"{engine_file} does not match the SHA-256 in its engine record")
        model, version = bundle.manifest.model, bundle.manifest.version
        rel_file = record.file
        remote_dir = self._path(model, version)
        self.fs.makedirs(remote_dir + "/engines", exist_ok=True)
        tmp = f"{remote_dir}/{rel_file}.{uuid.uuid4().hex[:8]}.partial"
        self.fs.put_file(str(engine_file), tmp)
        self.fs.mv(tmp, f"{remote_dir}/{rel_file}")
        self.fs.pipe_file(
            f"{remote_dir}/engines/{record.engine_id}.json", record.model_dump_json(indent=2).encode()
        )
        self._mirror_record(bundle, record, engine_file)
        return record

    # -- side files ----------------------------------------------------------------------------
    def side_file_uri(self, name: str) -> str:
        """Where a build cache named ``name`` lives: ``<registry>/.cache/<name>``, beside the bundles."""
        return self._path(SIDE_FILES, name)

    def read_side_file(self, name: str) -> bytes | None:
        path = self.side_file_uri(name)
        return bytes(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def update_side_file(self, name: str, update: Callable[[bytes | None], bytes]) -> None:
        """Replace a side file with ``update(current contents)``.

        On a local disk the read, the update and the write happen under an exclusive lock and the
        new contents are renamed into place, so concurrent builds on one node merge their changes in
        turn and a reader never sees half a file. On an object store each write is a whole object
        (never torn); two writers racing may lose one update, never corrupt the file.
        """
        path = self.side_file_uri(name)
        if not self.local:
            current = bytes(self.fs.cat_file(path)) if self.fs.exists(path) else None
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, update(current))
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_name(target.name + ".lock")):
            current = target.read_bytes() if target.exists() else None
            data = update(current)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)
