"""The TensorRT path's logic, on CPU: no GPU, no TensorRT.

What can be decided without a GPU is tested for real (profile ranges, names, plan selection across
TensorRT versions, the int8 refusal, the fp16 graph's types, the timing cache's atomic merge). The
CUDA runtime and TensorRT's runtime are replaced by small stand-ins of the same shape as cuda-python's
``cuda.bindings.runtime`` and ``tensorrt`` (the attributes parley calls, nothing more), to check that
every CUDA error is raised with its name, that node detection never quietly calls a broken GPU node
``cpu``, and that a failed activation frees everything it allocated. tests/engines/test_gpu.py runs
the real thing where a GPU and TensorRT exist.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from engines.base import EngineOptions
from engines.build import check_precision, convert_fp16, default_precision
from engines.errors import EngineError
from engines.manifest import EngineRecord
from engines.node import CPU_NODE, NodeSetupError, detect_node, gpu_target
from engines.tensorrt.backend import TensorRTEngine, check_compatible, select_plan
from engines.tensorrt.build import default_profiles, plan_engine_id, timing_cache_name
from engines.tensorrt.cuda import CudaError, CudaRuntime

# -- a cuda-python runtime stand-in ---------------------------------------------------------------


class _Err(Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class FakeCudart:
    """cuda.bindings.runtime's calling convention: every call returns (cudaError_t, *values)."""

    cudaError_t = _Err
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, *, device_error: _Err | None = None, fail: dict[str, int] | None = None) -> None:
        self.device_error = device_error
        self.fail = dict(fail or {})  # call name -> fail on the n-th call (1-based)
        self.calls: dict[str, int] = {}
        self.live: dict[int, tuple[str, int]] = {}  # pointer -> (kind, bytes)
        self.streams: set[int] = set()
        self._next = 0x1000

    def _failing(self, call: str) -> bool:
        self.calls[call] = self.calls.get(call, 0) + 1
        return self.fail.get(call) == self.calls[call]

    def cudaGetErrorName(self, err: _Err) -> tuple[_Err, bytes]:
        return _Err.cudaSuccess, err.name.encode()

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, ...]:
        if self.device_error is not None:
            return (self.device_error, None)
        props = types.SimpleNamespace(major=9, minor=0, name=b"Fake H200\x00\x00")
        return _Err.cudaSuccess, props

    def _alloc(self, call: str, kind: str, nbytes: int) -> tuple[Any, ...]:
        if self._failing(call):
            return (_Err.cudaErrorMemoryAllocation, 0)
        self._next += 0x1000
        self.live[self._next] = (kind, nbytes)
        return _Err.cudaSuccess, self._next

    def cudaMalloc(self, nbytes: int) -> tuple[Any, ...]:
        return self._alloc("cudaMalloc", "device", nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[Any, ...]:
        return self._alloc("cudaMallocHost", "host", nbytes)

    def cudaFree(self, pointer: int) -> tuple[_Err]:
        assert self.live.pop(pointer)[0] == "device"
        return (_Err.cudaSuccess,)

    def cudaFreeHost(self, pointer: int) -> tuple[_Err]:
        assert self.live.pop(pointer)[0] == "host"
        return (_Err.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[_Err, int]:
        self._next += 1
        self.streams.add(self._next)
        return _Err.cudaSuccess, self._next

    def cudaStreamDestroy(self, stream: int) -> tuple[_Err]:
        self.streams.remove(stream)
        return (_Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[_Err]:
        return (_Err.cudaSuccess,)


# -- a tensorrt runtime stand-in ------------------------------------------------------------------


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.device_memory: tuple[int, int] | None = None

    def set_device_memory(self, pointer: int, size: int) -> None:
        self.device_memory = (pointer, size)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        return True

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return not (self.engine.refuse_address and name == self.engine.outputs[-1])


class FakeEngine:
    def __init__(
        self, inputs: dict[str, str], outputs: dict[str, str], profiles: list[Any], refuse_address: bool
    ) -> None:
        self.inputs, self.outputs_dtypes = inputs, outputs
        self.outputs = list(outputs)
        self.names = [*inputs, *outputs]
        self.profiles = profiles
        self.refuse_address = refuse_address
        self.contexts: list[FakeContext] = []

    num_io_tensors = property(lambda self: len(self.names))
    num_optimization_profiles = property(lambda self: len(self.profiles))

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name in self.inputs else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return {**self.inputs, **self.outputs_dtypes}[name]

    def get_tensor_profile_shape(self, name: str, index: int) -> Any:
        return self.profiles[index]

    def get_device_memory_size_for_profile_v2(self, index: int) -> int:
        return 1000 * (index + 1)

    def create_execution_context(self, strategy: str) -> FakeContext:
        assert strategy == "user-managed"
        context = FakeContext(self)
        self.contexts.append(context)
        return context


def fake_tensorrt(engine: FakeEngine | None, version: str = "11.4.0.106") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")  # type: ignore[attr-defined]
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="user-managed")  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: np.dtype(dtype).type  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            return engine

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    fake = FakeCudart()
    monkeypatch.setattr("engines.tensorrt.cuda.load_cudart", lambda: fake)
    return fake


def record(
    precision: str = "fp16", arch: str = "9.0", version: str = "11.4.0.106", **kw: Any
) -> EngineRecord:
    engine_id = plan_engine_id(precision, gpu_target(arch), version)
    return EngineRecord(
        engine_id=engine_id,
        backend="tensorrt",
        precision=precision,
        file=f"engines/{engine_id}.plan",
        sha256="0" * 64,
        runtime_version=version,
        gpu_arch=arch,
        built_at=kw.get("built_at", datetime(2026, 12, 1, tzinfo=UTC)),
    )


# -- profiles and names ---------------------------------------------------------------------------


@pytest.mark.parametrize(("max_length", "buckets"), [(128, 3), (64, 2), (40, 2), (32, 1), (16, 1)])
def test_profiles_cover_every_length_once_over_the_whole_batch_range(max_length: int, buckets: int) -> None:
    profiles = default_profiles(max_length, max_batch=64)
    assert len(profiles) == buckets
    covered = [seq for p in profiles for seq in range(p.min[1], p.max[1] + 1)]
    assert covered == list(range(1, max_length + 1))
    for p in profiles:
        assert p.min[0] == 1
        assert p.max[0] == 64
        assert p.min[1] <= p.opt[1] <= p.max[1]
        assert 0 < p.opt[0] <= 64


def test_names_carry_precision_gpu_kind_and_tensorrt_version() -> None:
    assert gpu_target("9.0") == "gpu-sm90"
    assert gpu_target("12.0") == "gpu-sm120"
    assert plan_engine_id("fp16", "gpu-sm90", "10.13.3.9") == "tensorrt-fp16-gpu-sm90-10.13.3.9"
    assert timing_cache_name("gpu-sm90", "11.4.0.106") == "tensorrt-timing/gpu-sm90-trt11.4.0.106.cache"


# -- precision ------------------------------------------------------------------------------------


def test_tensorrt_refuses_int8_and_defaults_to_fp16() -> None:
    assert default_precision("tensorrt") == "fp16"
    assert default_precision("onnxruntime") == "int8"
    assert check_precision("tensorrt", "fp32") == "fp32"
    with pytest.raises(EngineError, match=r"tensorrt cannot build int8 .*Q/DQ.*fp16, fp32"):
        check_precision("tensorrt", "int8")


def test_build_tensorrt_refuses_int8_before_touching_tensorrt(registered) -> None:
    from engines.tensorrt.build import build_tensorrt

    registry, bundle = registered
    with pytest.raises(EngineError, match="cannot build int8"):
        build_tensorrt(bundle, registry, "int8")
    assert not any(r.backend == "tensorrt" for r in bundle.engine_records())


def test_cli_build_refuses_int8_for_tensorrt_as_a_usage_error() -> None:
    from parley.cli import cli

    result = CliRunner().invoke(
        cli, ["engine", "build", "student", "v1", "--backend", "tensorrt", "--precision", "int8"]
    )
    assert result.exit_code == 2, result.output
    assert "cannot build int8" in result.output


def test_fp16_conversion_keeps_integer_inputs_and_float32_outputs(registered, tmp_path: Path) -> None:
    import onnx

    _, bundle = registered
    target = tmp_path / "model.fp16.onnx"
    convert_fp16(bundle.onnx_path, target)
    model = onnx.load(str(target))
    t = onnx.TensorProto
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input} == dict.fromkeys(
        bundle.manifest.inputs, t.INT64
    )
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {t.FLOAT}
    weights = [w for w in model.graph.initializer if w.data_type in (t.FLOAT, t.FLOAT16)]
    assert weights
    assert all(w.data_type == t.FLOAT16 for w in weights)


# -- plan selection and compatibility -------------------------------------------------------------


def test_plan_selection_follows_the_tensorrt_version() -> None:
    old, new = record(version="10.13.3.9"), record(version="11.4.0.106")
    args = {"precision": "fp16", "compute_capability": "9.0", "model": "m", "version": "v1"}
    # File-name order puts the old plan first; the running TensorRT version decides.
    assert select_plan([old, new], tensorrt_version="11.4.0.106", **args) is new
    assert select_plan([old, new], tensorrt_version="10.13.3.9", **args) is old


def test_plan_selection_takes_the_newest_of_equal_plans() -> None:
    first = record()
    second = record(built_at=first.built_at + timedelta(hours=1))
    chosen = select_plan(
        [second, first],
        precision="fp16",
        compute_capability="9.0",
        tensorrt_version="11.4.0.106",
        model="m",
        version="v1",
    )
    assert chosen is second


def test_no_matching_plan_lists_what_exists_and_the_real_build_command() -> None:
    plans = [record(version="10.13.3.9"), record(precision="fp32", arch="8.9")]
    with pytest.raises(EngineError) as caught:
        select_plan(
            plans,
            precision="fp16",
            compute_capability="9.0",
            tensorrt_version="11.4.0.106",
            model="student",
            version="v7",
        )
    message = str(caught.value)
    assert "fp16 for compute capability 9.0 with TensorRT 10.13.3.9" in message
    assert "fp32 for compute capability 8.9 with TensorRT 11.4.0.106" in message
    assert "'parley engine build student v7 --backend tensorrt --precision fp16'" in message


def test_compatibility_check_names_both_versions() -> None:
    plan = Path("engines/x.plan")
    with pytest.raises(EngineError, match=r"TensorRT 10\.13\.3\.9, but this node runs TensorRT 11\.4"):
        check_compatible(record(version="10.13.3.9"), plan, "9.0", "11.4.0.106")
    with pytest.raises(EngineError, match=r"compute capability 9\.0, but this GPU is 8\.9"):
        check_compatible(record(), plan, "8.9", "11.4.0.106")
    check_compatible(record(), plan, "9.0", "11.4.0.106")


# -- CUDA error checks ----------------------------------------------------------------------------


def test_cuda_errors_are_raised_with_the_call_and_the_error_name() -> None:
    cuda = CudaRuntime(FakeCudart(fail={"cudaMalloc": 2}))
    assert cuda.malloc(64) > 0
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation") as caught:
        cuda.malloc(64)
    assert caught.value.name == "cudaErrorMemoryAllocation"
    assert cuda.compute_capability() == "9.0"
    assert cuda.device_name() == "Fake H200"
    with pytest.raises(CudaError, match="cudaGetDeviceProperties failed: cudaErrorInsufficientDriver"):
        CudaRuntime(FakeCudart(device_error=_Err.cudaErrorInsufficientDriver)).compute_capability()


def test_check_returns_one_value_several_or_none() -> None:
    cuda = CudaRuntime(FakeCudart())
    assert cuda.check("x", (_Err.cudaSuccess,)) is None
    assert cuda.check("x", (_Err.cudaSuccess, 5)) == 5
    assert cuda.check("x", (_Err.cudaSuccess, 5, 6)) == (5, 6)


# -- node detection -------------------------------------------------------------------------------


@pytest.fixture
def tensorrt_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real(name, *a)
    )
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(None))


def test_cpu_is_cpu_without_touching_cuda() -> None:
    assert detect_node("cpu", cudart=FakeCudart(device_error=_Err.cudaErrorInsufficientDriver)) == CPU_NODE


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_auto_is_cpu_and_gpu_is_an_error() -> None:
    assert detect_node("auto") == CPU_NODE
    with pytest.raises(NodeSetupError, match="TensorRT is not installed"):
        detect_node("gpu")


def test_a_working_gpu_is_a_gpu_node(tensorrt_installed: None) -> None:
    node = detect_node("auto", cudart=FakeCudart())
    assert (node.target, node.backend, node.is_gpu) == ("gpu-sm90", "tensorrt", True)
    assert (node.compute_capability, node.tensorrt_version, node.gpu_name) == (
        "9.0",
        "11.4.0.106",
        "Fake H200",
    )


def test_a_broken_cuda_is_never_quietly_a_cpu_node(tensorrt_installed: None) -> None:
    broken = FakeCudart(device_error=_Err.cudaErrorInsufficientDriver)
    for device in ("auto", "gpu"):
        with pytest.raises(NodeSetupError, match=r"cudaErrorInsufficientDriver.*PARLEY_ENGINE_DEVICE=cpu"):
            detect_node(device, cudart=broken)  # type: ignore[arg-type]


def test_no_gpu_at_all_is_a_cpu_node_under_auto_only(tensorrt_installed: None) -> None:
    absent = FakeCudart(device_error=_Err.cudaErrorNoDevice)
    assert detect_node("auto", cudart=absent) == CPU_NODE
    with pytest.raises(NodeSetupError, match="cudaErrorNoDevice"):
        detect_node("gpu", cudart=absent)


def test_tensorrt_without_cuda_python_is_an_error(
    tensorrt_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.tensorrt import cuda

    def missing() -> Any:
        raise cuda.CudaUnavailable("the TensorRT backend needs cuda-python")

    monkeypatch.setattr(cuda, "load_cudart", missing)
    with pytest.raises(NodeSetupError, match="needs cuda-python"):
        detect_node("auto")


# -- activation: sizes from the plan, nothing leaked on failure -----------------------------------


def _plan_engine(bundle: Any, *, refuse_address: bool = False, max_batch: int = 64) -> FakeEngine:
    inputs = dict.fromkeys(bundle.manifest.inputs, "int32")
    outputs = {t.output: "float16" for t in bundle.manifest.tasks}
    profiles = [
        [(1, 1), (max_batch // 2, 16), (max_batch, 32)],
        [(1, 33), (max_batch // 2, 48), (max_batch, 128)],
    ]
    return FakeEngine(inputs, outputs, profiles, refuse_address)


def _engine_on(bundle: Any, tmp_path: Path, max_batch: int = 32) -> TensorRTEngine:
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"plan")
    return TensorRTEngine.from_plan(
        bundle, plan, record(), EngineOptions(device="cuda", precision="fp16", max_batch=max_batch)
    )


def test_activation_sizes_buffers_from_the_plans_types_and_shares_them(
    registered, tmp_path: Path, cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    plan_engine = _plan_engine(bundle)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(plan_engine))
    engine = _engine_on(bundle, tmp_path)
    engine.activate()
    device = sorted(n for kind, n in cudart.live.values() if kind == "device")
    host = sorted(n for kind, n in cudart.live.values() if kind == "host")
    widths = [n for _, n in bundle.tasks()]
    inputs = [64 * 128 * 4] * len(bundle.manifest.inputs)  # int32: 4 bytes, largest profile
    outputs = [64 * n * 2 for n in widths]  # float16: 2 bytes
    assert host == sorted(inputs + outputs)
    assert device == sorted([*inputs, *outputs, 2000])  # plus one scratch, the largest profile's
    assert len(plan_engine.contexts) == 2
    first, second = plan_engine.contexts
    assert first.addresses == second.addresses  # one set of buffers serves every profile
    assert first.device_memory is not None
    assert first.device_memory[1] == 2000
    assert second.device_memory == first.device_memory  # one scratch shared by the profiles
    engine.deactivate()
    assert cudart.live == {}
    assert cudart.streams == set()


def test_a_refused_tensor_address_frees_everything(
    registered, tmp_path: Path, cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(_plan_engine(bundle, refuse_address=True)))
    engine = _engine_on(bundle, tmp_path)
    with pytest.raises(EngineError, match="refused the address"):
        engine.activate()
    assert cudart.calls.get("cudaMalloc", 0) > 0
    assert cudart.live == {}
    assert cudart.streams == set()
    assert not engine.active


def test_a_failed_allocation_frees_the_earlier_ones(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    fake = FakeCudart(fail={"cudaMallocHost": 2})
    monkeypatch.setattr("engines.tensorrt.cuda.load_cudart", lambda: fake)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(_plan_engine(bundle)))
    with pytest.raises(CudaError, match="cudaMallocHost"):
        _engine_on(bundle, tmp_path).activate()
    assert fake.live == {}
    assert fake.streams == set()


def test_a_max_batch_beyond_the_plan_allocates_nothing(
    registered, tmp_path: Path, cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(_plan_engine(bundle, max_batch=16)))
    with pytest.raises(EngineError, match=r"max_batch 32 is larger than the plan's profiles allow \(16\)"):
        _engine_on(bundle, tmp_path, max_batch=32).activate()
    assert "cudaMalloc" not in cudart.calls
    assert cudart.streams == set()


def test_a_plan_with_outputs_the_manifest_does_not_name_is_refused(
    registered, tmp_path: Path, cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    plan_engine = _plan_engine(bundle)
    plan_engine.outputs_dtypes["debug_logits"] = "float32"
    plan_engine.outputs.append("debug_logits")
    plan_engine.names.append("debug_logits")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(plan_engine))
    with pytest.raises(EngineError, match="debug_logits"):
        _engine_on(bundle, tmp_path).activate()
    assert cudart.live == {}
    assert cudart.streams == set()


def test_an_undeserialisable_plan_is_an_error_not_a_crash(
    registered, tmp_path: Path, cudart: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bundle = registered
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(None))
    with pytest.raises(EngineError, match="could not deserialize"):
        _engine_on(bundle, tmp_path).activate()
    assert cudart.live == {}


# -- the timing cache beside the registry ---------------------------------------------------------


def test_timing_cache_lives_beside_the_registry_and_updates_atomically(registered) -> None:
    registry, _ = registered
    name = timing_cache_name("gpu-sm90", "11.4.0.106")
    assert registry.read_side_file(name) is None
    registry.update_side_file(name, lambda current: (current or b"") + b"a")
    path = Path(registry.side_file_uri(name))
    assert path.is_relative_to(Path(registry.root))
    assert path.read_bytes() == b"a"
    assert registry.models() == ["student"]  # the cache is not mistaken for a model

    def interrupted(current: bytes | None) -> bytes:
        raise RuntimeError("build died while merging")

    with pytest.raises(RuntimeError):
        registry.update_side_file(name, interrupted)
    assert path.read_bytes() == b"a"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_concurrent_timing_cache_updates_are_merged_in_turn(registered) -> None:
    registry, _ = registered
    name = "tensorrt-timing/concurrent.cache"
    threads = [
        threading.Thread(
            target=registry.update_side_file, args=(name, lambda c, i=i: (c or b"") + bytes([65 + i]))
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((registry.read_side_file(name) or b"").decode()) == list("ABCDEFGH")
