"""The promotion rule (engines/promotion.py): verified engines only, runnable on the target, fastest first."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from engines.errors import EngineError
from engines.manifest import EngineRecord, Parity
from engines.promotion import backend_for, choose_engine, is_verified, promote, runs_on


def record(
    engine_id: str,
    *,
    backend: str = "onnxruntime",
    precision: str = "int8",
    gpu_arch: str | None = None,
    agreement: float | None = 1.0,
    diff: float = 0.0,
) -> EngineRecord:
    parity = (
        None
        if agreement is None
        else Parity(reference="torch-cpu-fp32", samples=100, label_agreement=agreement, max_abs_diff=diff)
    )
    return EngineRecord(
        engine_id=engine_id,
        backend=backend,
        precision=precision,
        file=f"engines/{engine_id}.bin",
        sha256="0" * 64,
        runtime_version="1.0",
        gpu_arch=gpu_arch,
        built_at=datetime.now(UTC),
        parity=parity,
    )


FP32 = record("onnxruntime-fp32-cpu-1", precision="fp32")
INT8 = record("onnxruntime-int8-cpu-1")
CUDA_FP16 = record("onnxruntime-fp16-cuda-1", precision="fp16")
TRT_FP16 = record("tensorrt-fp16-sm90", backend="tensorrt", precision="fp16", gpu_arch="9.0")
TRT_FP32 = record("tensorrt-fp32-sm90", backend="tensorrt", precision="fp32", gpu_arch="9.0")
TRT_SM80 = record("tensorrt-fp16-sm80", backend="tensorrt", precision="fp16", gpu_arch="8.0")


def choose(records: list[EngineRecord], target: str = "cpu", **kw: Any) -> EngineRecord:
    return choose_engine(records, target, model="student", version="v1", **kw)


def test_the_fastest_verified_engine_of_the_targets_backend_is_chosen() -> None:
    """On cpu: ONNX Runtime, int8 before fp32; on a GPU kind: TensorRT, fp16 before fp32."""
    assert choose([FP32, INT8, TRT_FP16]) == INT8
    assert choose([TRT_FP32, TRT_FP16, INT8], "gpu-sm90") == TRT_FP16
    assert (backend_for("cpu"), backend_for("gpu-sm90")) == ("onnxruntime", "tensorrt")


def test_an_engine_without_a_passing_parity_check_is_never_promoted() -> None:
    """No parity, or parity outside the precision's thresholds: refused, and a verified slower engine
    is chosen instead when there is one."""
    unchecked = record("onnxruntime-int8-cpu-2", agreement=None)
    drifted = record("onnxruntime-int8-cpu-3", agreement=0.5)
    assert not is_verified(unchecked)
    assert not is_verified(drifted)
    assert is_verified(INT8)
    assert not is_verified(record("onnxruntime-fp32-cpu-2", precision="fp32", diff=0.01))
    with pytest.raises(EngineError, match="no verified onnxruntime engine: no record carries"):
        choose([unchecked, drifted])
    assert choose([unchecked, drifted, FP32]) == FP32
    with pytest.raises(EngineError, match=r"none is recorded.*parley engine build student v1"):
        choose([])


def test_an_engine_named_by_id_is_chosen_only_if_verified() -> None:
    """--engine overrides the preference for speed, not the verification."""
    assert choose([FP32, INT8], engine_id=FP32.engine_id) == FP32
    with pytest.raises(EngineError, match="no verified onnxruntime-int8-cpu-2"):
        choose([record("onnxruntime-int8-cpu-2", agreement=None)], engine_id="onnxruntime-int8-cpu-2")


def test_an_engine_goes_only_where_it_runs() -> None:
    """A plan built for one GPU arch serves only that arch's target; CUDA builds never serve cpu."""
    assert runs_on(TRT_FP16, "gpu-sm90")
    assert not runs_on(TRT_FP16, "gpu-sm80")
    assert not runs_on(TRT_FP16, "cpu")
    assert not runs_on(CUDA_FP16, "cpu")
    assert runs_on(INT8, "cpu")
    with pytest.raises(EngineError, match=r"built for compute capability 8\.0, not for the target gpu-sm90"):
        choose([TRT_SM80], "gpu-sm90")
    with pytest.raises(EngineError, match="not for the target cpu"):
        choose([CUDA_FP16], "cpu", backend="onnxruntime")


async def test_promote_moves_the_pointer_to_the_chosen_engine() -> None:
    """promote() hands the pointer store the bundle's chosen engine and returns what it returns."""
    calls: list[tuple[str, ...]] = []

    class Pointers:
        async def promote(self, model: str, version: str, engine_id: str, backend: str, target: str) -> str:
            calls.append((model, version, engine_id, backend, target))
            return "current"

    bundle = SimpleNamespace(
        manifest=SimpleNamespace(model="student", version="v1"), engine_records=lambda: [FP32, INT8]
    )
    assert await promote(Pointers(), bundle, "cpu") == "current"  # type: ignore[arg-type]
    assert calls == [("student", "v1", INT8.engine_id, "onnxruntime", "cpu")]
    with pytest.raises(EngineError):
        await promote(Pointers(), bundle, "cpu", records=[])  # type: ignore[arg-type]
    assert len(calls) == 1  # nothing moved
