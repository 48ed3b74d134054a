"""The TensorRT backend: a plan built for this GPU and TensorRT version, run on one CUDA stream.

A plan runs only on the TensorRT version and GPU architecture it was built for. Among a bundle's
plans the one matching (precision, compute capability, TensorRT version) is chosen; when none does,
the error lists what exists and the command that builds the missing one. Loading a plan recorded for
another GPU or TensorRT version is refused with both versions named instead of crashing inside
TensorRT.

On activation, one execution context per optimisation profile is created. The contexts never run at
once (one stream, one lock), so they share everything that is not per-profile state: one activation
scratch allocation sized for the largest profile (``ExecutionContextAllocationStrategy.USER_MANAGED``),
one device buffer per input and output sized for the largest shapes, and one page-locked host buffer
per tensor for the copies. Tensor types come from the plan (``get_tensor_dtype``), not assumptions.
Every TensorRT and CUDA call that reports failure through its return value is checked, and a failed
activation frees whatever it had allocated before raising.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from engines.base import Engine, EngineOptions, Feeds
from engines.bundle import Bundle
from engines.errors import EngineError
from engines.manifest import EngineRecord
from engines.tensorrt.cuda import CudaRuntime, host_array, stream_handle

CUDA_OPTIONS = EngineOptions(device="cuda")


@dataclass
class _Profile:
    index: int
    context: Any
    min_seq: int
    max_seq: int
    max_batch: int


@dataclass
class _Tensor:
    """One input or output: its type, its device buffer and its pinned host buffer (largest shape)."""

    name: str
    dtype: np.dtype[Any]
    nbytes: int
    device: int = 0
    host: int = 0


@dataclass
class _Resources:
    """Everything an activation allocates, so that every path out can free all of it."""

    stream: Any = None
    scratch: int = 0
    tensors: list[_Tensor] = field(default_factory=list)
    profiles: list[_Profile] = field(default_factory=list)


def select_plan(
    records: list[EngineRecord],
    *,
    precision: str,
    compute_capability: str,
    tensorrt_version: str,
    model: str,
    version: str,
) -> EngineRecord:
    """The TensorRT plan for this precision, GPU kind and TensorRT version; the newest if several.

    Plans for other TensorRT versions are never picked: after an upgrade, the old plan would only be
    refused at load. When nothing matches, the error lists every plan the bundle has.
    """
    plans = [r for r in records if r.backend == "tensorrt"]
    matching = [
        r
        for r in plans
        if r.precision == precision
        and r.gpu_arch == compute_capability
        and r.runtime_version == tensorrt_version
    ]
    if matching:
        return max(matching, key=lambda r: r.built_at)
    have = ", ".join(
        f"{r.precision} for compute capability {r.gpu_arch} with TensorRT {r.runtime_version}" for r in plans
    )
    raise EngineError(
        f"bundle {model}/{version} has no {precision} TensorRT plan for compute capability "
        f"{compute_capability} with TensorRT {tensorrt_version} (it has {have or 'no TensorRT plans'}); "
        f"build one on this node with 'parley engine build {model} {version} --backend tensorrt "
        f"--precision {precision}'"
    )


def check_compatible(
    record: EngineRecord, plan: Path, compute_capability: str, tensorrt_version: str
) -> None:
    """Refuse a plan built for another TensorRT version or GPU kind, naming both sides."""
    if record.runtime_version != tensorrt_version:
        raise EngineError(
            f"{plan} was built with TensorRT {record.runtime_version}, but this node runs TensorRT "
            f"{tensorrt_version}: rebuild the plan here"
        )
    if record.gpu_arch != compute_capability:
        raise EngineError(
            f"{plan} was built for compute capability {record.gpu_arch}, but this GPU is "
            f"{compute_capability}: rebuild the plan on this kind of node"
        )


class TensorRTEngine(Engine):
    backend: ClassVar[str] = "tensorrt"

    def __init__(self, bundle: Bundle, options: EngineOptions = CUDA_OPTIONS) -> None:
        super().__init__(bundle, options)
        self._init_state()
        self.record = self._pick_record(bundle, options)
        self.plan_path = bundle.path / self.record.file

    @classmethod
    def from_plan(
        cls, bundle: Bundle, plan: Path, record: EngineRecord, options: EngineOptions
    ) -> TensorRTEngine:
        """An engine on a plan that is not registered yet (used while verifying a fresh build)."""
        engine = cls.__new__(cls)
        Engine.__init__(engine, bundle, options)
        engine._init_state()
        engine.record, engine.plan_path = record, plan
        return engine

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cuda: CudaRuntime | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._res = _Resources()
        self._inputs: list[_Tensor] = []
        self._outputs: dict[str, _Tensor] = {}

    @property
    def name(self) -> str:
        return f"tensorrt-sm{(self.record.gpu_arch or '').replace('.', '')}-{self.record.precision}"

    @staticmethod
    def _pick_record(bundle: Bundle, options: EngineOptions) -> EngineRecord:
        if options.engine_id is not None:
            return bundle.engine_record(options.engine_id)
        import tensorrt as trt

        return select_plan(
            bundle.engine_records(),
            precision=options.precision,
            compute_capability=CudaRuntime().compute_capability(),
            tensorrt_version=str(trt.__version__),
            model=bundle.manifest.model,
            version=bundle.manifest.version,
        )

    # -- activation ----------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        try:
            self._activate()
        except BaseException:
            self._release()
            raise

    def _activate(self) -> None:
        import tensorrt as trt

        cuda = self._cuda = CudaRuntime()
        check_compatible(self.record, self.plan_path, cuda.compute_capability(), str(trt.__version__))
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT could not deserialize {self.plan_path} (corrupt, or built elsewhere)"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        expected_outputs = [t.output for t in self.bundle.manifest.tasks]
        if sorted(inputs) != sorted(self.tokenizer.input_names) or sorted(outputs) != sorted(
            expected_outputs
        ):
            raise EngineError(
                f"{self.plan_path} has inputs {inputs} and outputs {outputs}; the manifest names inputs "
                f"{self.tokenizer.input_names} and outputs {expected_outputs}"
            )

        # Profiles first: nothing is allocated for a plan whose shapes cannot serve these options.
        shapes = [
            engine.get_tensor_profile_shape(inputs[0], i) for i in range(engine.num_optimization_profiles)
        ]
        largest_batch = min(int(s[2][0]) for s in shapes)
        if self.options.max_batch > largest_batch:
            raise EngineError(
                f"max_batch {self.options.max_batch} is larger than the plan's profiles allow "
                f"({largest_batch})"
            )
        max_rows = max(int(s[2][0]) for s in shapes)
        max_tokens = max(int(s[2][0]) * int(s[2][1]) for s in shapes)

        res = self._res
        res.stream = cuda.stream_create()
        for name in inputs:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if dtype.kind != "i":
                raise EngineError(f"{self.plan_path}: input {name} is {dtype}, expected an integer type")
            res.tensors.append(_Tensor(name, dtype, max_tokens * dtype.itemsize))
        widths = dict(zip(expected_outputs, (n for _, n in self._tasks), strict=True))
        for name in outputs:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if dtype.kind != "f":
                raise EngineError(f"{self.plan_path}: output {name} is {dtype}, expected floating point")
            res.tensors.append(_Tensor(name, dtype, max_rows * widths[name] * dtype.itemsize))
        for tensor in res.tensors:
            tensor.device = cuda.malloc(tensor.nbytes)
            tensor.host = cuda.malloc_host(tensor.nbytes)
        self._inputs = [t for t in res.tensors if t.name in inputs]
        self._outputs = {t.name: t for t in res.tensors if t.name in outputs}

        scratch = max(int(engine.get_device_memory_size_for_profile_v2(i)) for i in range(len(shapes)))
        res.scratch = cuda.malloc(max(scratch, 1))
        handle = stream_handle(res.stream)
        for index, (low, _, high) in enumerate(shapes):
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise EngineError(f"TensorRT could not create an execution context for {self.plan_path}")
            res.profiles.append(_Profile(index, context, int(low[1]), int(high[1]), int(high[0])))
            context.set_device_memory(res.scratch, max(scratch, 1))
            context.set_optimization_profile_async(index, handle)  # raises on failure
            for tensor in res.tensors:
                if not context.set_tensor_address(tensor.name, tensor.device):
                    raise EngineError(
                        f"TensorRT refused the address of tensor {tensor.name} (profile {index})"
                    )
        cuda.stream_sync(res.stream)

    def _deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free everything an activation allocated, in dependency order; keep going past failures
        and raise the first one at the end, so one bad free does not leak the rest."""
        res, cuda = self._res, self._cuda
        errors: list[BaseException] = []

        def attempt(step: Any, *args: Any) -> None:
            try:
                step(*args)
            except Exception as exc:  # collected and re-raised below
                errors.append(exc)

        if res.stream is not None and cuda is not None:
            attempt(cuda.stream_sync, res.stream)
        res.profiles.clear()  # contexts go before the memory they run in
        self._engine = self._runtime = None
        if cuda is not None:
            for tensor in res.tensors:
                if tensor.device:
                    attempt(cuda.free, tensor.device)
                if tensor.host:
                    attempt(cuda.free_host, tensor.host)
            if res.scratch:
                attempt(cuda.free, res.scratch)
            if res.stream is not None:
                attempt(cuda.stream_destroy, res.stream)
        self._res, self._inputs, self._outputs = _Resources(), [], {}
        if errors:
            raise errors[0]

    # -- inference -----------------------------------------------------------------------------
    def _profile_for(self, batch: int, seq: int) -> _Profile:
        for profile in self._res.profiles:
            if profile.min_seq <= seq <= profile.max_seq and batch <= profile.max_batch:
                return profile
        raise EngineError(
            f"no optimisation profile of {self.plan_path} covers a batch of shape {(batch, seq)}"
        )

    def _infer_impl(self, feeds: Feeds) -> dict[str, npt.NDArray[np.float32]]:
        assert self._cuda is not None
        cuda, stream = self._cuda, self._res.stream
        batch, seq = feeds["input_ids"].shape
        profile = self._profile_for(int(batch), int(seq))
        with self._lock:
            for tensor in self._inputs:
                nbytes = batch * seq * tensor.dtype.itemsize
                staged = host_array(tensor.host, nbytes).view(tensor.dtype).reshape(batch, seq)
                np.copyto(staged, feeds[tensor.name], casting="same_kind")
                if not profile.context.set_input_shape(tensor.name, (int(batch), int(seq))):
                    raise EngineError(f"TensorRT refused input shape {(batch, seq)} for {tensor.name}")
                cuda.copy_to_device(tensor.device, tensor.host, nbytes, stream)
            if not profile.context.execute_async_v3(stream_handle(stream)):
                raise EngineError(f"TensorRT execution failed for a batch of shape {(batch, seq)}")
            widths = {}
            for (task, n_labels), spec in zip(self._tasks, self.bundle.manifest.tasks, strict=True):
                tensor = self._outputs[spec.output]
                widths[task] = (tensor, n_labels)
                cuda.copy_to_host(
                    tensor.host, tensor.device, batch * n_labels * tensor.dtype.itemsize, stream
                )
            cuda.stream_sync(stream)
            return {
                task: host_array(t.host, batch * n * t.dtype.itemsize)
                .view(t.dtype)
                .reshape(batch, n)
                .astype(np.float32, copy=True)
                for task, (t, n) in widths.items()
            }
