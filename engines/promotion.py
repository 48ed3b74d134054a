"""The promotion rule: which engine of a bundle version a node kind's pointer may move to.

One rule for every caller (``parley engine promote``, the rebuild watcher, the demo):

- only a *verified* engine is promoted: its record carries a parity check against the reference that
  passes the thresholds of its precision (:func:`engines.verify.thresholds_for`);
- it must run on the target: a GPU engine (its record names a ``gpu_arch``) only on that arch's
  ``gpu-smXY`` target; on a ``cpu`` target only ONNX Runtime engines built without a GPU;
- among the candidates (the one engine asked for by id, or every engine of the backend, by default
  the backend the target runs: TensorRT on ``gpu-*``, ONNX Runtime elsewhere), the fastest precision
  wins: int8, then fp16, then fp32.

Nothing here builds or verifies; a version without a promotable engine raises :class:`EngineError`
saying what to run first, and the pointer stays where it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from engines.errors import EngineError
from engines.manifest import EngineRecord
from engines.node import gpu_target
from engines.verify import thresholds_for

if TYPE_CHECKING:
    from engines.bundle import Bundle
    from engines.pointer import Current, PointerStore

__all__ = ["PRECISION_ORDER", "backend_for", "choose_engine", "is_verified", "promote", "runs_on"]

PRECISION_ORDER: Final = ("int8", "fp16", "fp32")
"""Fastest first: the order in which a verified engine is preferred."""


def backend_for(target: str) -> str:
    """The backend a node kind serves with: TensorRT on ``gpu-*`` targets, ONNX Runtime elsewhere."""
    return "tensorrt" if target.startswith("gpu") else "onnxruntime"


def is_verified(record: EngineRecord) -> bool:
    """Does the engine carry a parity check that passes its precision's thresholds?"""
    limits = thresholds_for(record.precision)
    return (
        record.parity is not None
        and record.parity.label_agreement >= limits.min_agreement
        and record.parity.max_abs_diff <= limits.max_abs_diff
    )


def runs_on(record: EngineRecord, target: str) -> bool:
    """Can a node of kind ``target`` load this engine? A GPU build needs its own arch's target."""
    if record.gpu_arch is not None:
        return target == gpu_target(record.gpu_arch)
    if target == "cpu":
        # ONNX Runtime engines built for CUDA say so in their id (backend-precision-target-runtime).
        return record.backend == "onnxruntime" and "-cuda-" not in record.engine_id
    return True


def choose_engine(
    records: Sequence[EngineRecord],
    target: str,
    *,
    model: str,
    version: str,
    backend: str | None = None,
    engine_id: str | None = None,
) -> EngineRecord:
    """The engine of ``model``/``version`` to promote on ``target`` among ``records`` (the rule of the
    module docstring); :class:`EngineError` when there is none."""
    if engine_id is not None:
        wanted = engine_id
        candidates = [r for r in records if r.engine_id == engine_id]
    else:
        wanted = backend or backend_for(target)
        candidates = [r for r in records if r.backend == wanted]
    label = f"{model}/{version}"
    build = f"parley engine build {model} {version}" + (" --backend tensorrt" if wanted == "tensorrt" else "")
    if not candidates:
        raise EngineError(
            f"{label} has no verified {wanted} engine (none is recorded): run '{build}' first; it "
            "verifies the engine against torch before recording it"
        )
    verified = [r for r in candidates if is_verified(r)]
    if not verified:
        raise EngineError(
            f"{label} has no verified {wanted} engine: no record carries a parity check that passes "
            f"its precision's thresholds; rebuild with '{build}'"
        )
    runnable = [r for r in verified if runs_on(r, target)]
    if not runnable:
        built_for = ", ".join(
            sorted({f"compute capability {r.gpu_arch}" if r.gpu_arch else "cpu" for r in verified})
        )
        raise EngineError(
            f"{label}'s verified {wanted} engines were built for {built_for}, not for the target "
            f"{target}: build one on a {target} node"
        )
    rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
    # Fastest precision first; among equals (e.g. plans of two TensorRT versions) the newest build.
    return min(runnable, key=lambda r: (rank.get(r.precision, len(rank)), -r.built_at.timestamp()))


async def promote(
    pointers: PointerStore,
    bundle: Bundle,
    target: str,
    *,
    backend: str | None = None,
    engine_id: str | None = None,
    records: Sequence[EngineRecord] | None = None,
) -> Current:
    """Move ``target``'s pointer for the bundle's model to its chosen engine (among ``records``, the
    bundle's engine records by default) and return the new current pointer."""
    chosen = choose_engine(
        bundle.engine_records() if records is None else records,
        target,
        model=bundle.manifest.model,
        version=bundle.manifest.version,
        backend=backend,
        engine_id=engine_id,
    )
    return await pointers.promote(
        bundle.manifest.model, bundle.manifest.version, chosen.engine_id, chosen.backend, target
    )
