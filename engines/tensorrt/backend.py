"""The TensorRT backend: a plan built for this GPU and TensorRT version, run on one CUDA stream.

A plan runs only on the TensorRT version and GPU architecture it was built for. The engine record
says which; a mismatch is refused with both versions named instead of crashing inside TensorRT.
On activation, one execution context per optimisation profile is created and its device buffers are
allocated once, at the profile's largest shapes; each batch picks the profile whose sequence bucket
holds it, copies its inputs in, runs ``execute_async_v3`` and copies the logits out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from engines.base import Engine, EngineOptions, Feeds
from engines.bundle import Bundle
from engines.errors import EngineError
from engines.manifest import EngineRecord
from engines.tensorrt import cuda

CUDA_OPTIONS = EngineOptions(device="cuda")


@dataclass
class _ProfileSlot:
    index: int
    max_batch: int
    min_seq: int
    max_seq: int
    context: Any
    inputs: dict[str, int]
    outputs: dict[str, int]


class TensorRTEngine(Engine):
    backend: ClassVar[str] = "tensorrt"

    def __init__(self, bundle: Bundle, options: EngineOptions = CUDA_OPTIONS) -> None:
        super().__init__(bundle, options)
        self.record = self._pick_record(bundle, options)
        self.plan_path = bundle.path / self.record.file
        self._slots: list[_ProfileSlot] = []
        self._lock = threading.Lock()
        self._engine: Any = None
        self._runtime: Any = None
        self._stream: Any = None

    @classmethod
    def from_plan(
        cls, bundle: Bundle, plan: Path, record: EngineRecord, options: EngineOptions
    ) -> TensorRTEngine:
        """An engine on a plan that is not registered yet (used while verifying a fresh build)."""
        engine = cls.__new__(cls)
        Engine.__init__(engine, bundle, options)
        engine.record, engine.plan_path = record, plan
        engine._slots, engine._lock = [], threading.Lock()
        engine._engine = engine._runtime = engine._stream = None
        return engine

    @property
    def name(self) -> str:
        return f"tensorrt-sm{(self.record.gpu_arch or '').replace('.', '')}-{self.record.precision}"

    @staticmethod
    def _pick_record(bundle: Bundle, options: EngineOptions) -> EngineRecord:
        if options.engine_id is not None:
            return bundle.engine_record(options.engine_id)
        from engines.tensorrt.cuda import device_compute_capability

        capability = device_compute_capability()
        plans = [
            r for r in bundle.engine_records() if r.backend == "tensorrt" and r.precision == options.precision
        ]
        for record in plans:
            if record.gpu_arch == capability:
                return record
        built = [(r.gpu_arch, r.runtime_version) for r in plans]
        raise EngineError(
            f"bundle {bundle.label} has no {options.precision} TensorRT plan for compute capability "
            f"{capability} (it has {built or 'none'}); build one on this node with "
            f"'parley engine build {bundle.path} --backend tensorrt'"
        )

    def _check_compatible(self) -> None:
        import tensorrt as trt

        from engines.tensorrt.cuda import device_compute_capability

        capability = device_compute_capability()
        if self.record.runtime_version != trt.__version__:
            raise EngineError(
                f"{self.plan_path} was built with TensorRT {self.record.runtime_version}, but this "
                f"node runs TensorRT {trt.__version__}: rebuild the plan here"
            )
        if self.record.gpu_arch != capability:
            raise EngineError(
                f"{self.plan_path} was built for compute capability {self.record.gpu_arch}, but "
                f"this GPU is {capability}: rebuild the plan on this kind of node"
            )

    def _activate_impl(self) -> None:
        import tensorrt as trt

        self._check_compatible()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"TensorRT could not deserialize {self.plan_path} (corrupt, or built elsewhere)"
            )
        self._stream = cuda.stream_create()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [t.output for t in self.bundle.manifest.tasks]
        if set(inputs) != set(self.tokenizer.input_names) or not set(outputs) <= set(names):
            raise EngineError(
                f"{self.plan_path} has tensors {names}; the manifest expects inputs "
                f"{self.tokenizer.input_names} and outputs {outputs}"
            )
        for index in range(self._engine.num_optimization_profiles):
            _, _, (max_batch, max_seq) = self._engine.get_tensor_profile_shape(inputs[0], index)
            (_, min_seq) = self._engine.get_tensor_profile_shape(inputs[0], index)[0]
            context = self._engine.create_execution_context()
            context.set_optimization_profile_async(index, self._stream)
            in_buffers = {n: cuda.malloc(max_batch * max_seq * 8) for n in inputs}  # int64
            out_buffers = {
                o: cuda.malloc(max_batch * n * 4) for o, (_, n) in zip(outputs, self._tasks, strict=True)
            }
            for name, pointer in {**in_buffers, **out_buffers}.items():
                context.set_tensor_address(name, pointer)
            self._slots.append(
                _ProfileSlot(index, max_batch, min_seq, max_seq, context, in_buffers, out_buffers)
            )
        cuda.stream_sync(self._stream)
        if self.options.max_batch > min(s.max_batch for s in self._slots):
            raise EngineError(
                f"max_batch {self.options.max_batch} is larger than the plan's profiles allow "
                f"({min(s.max_batch for s in self._slots)})"
            )

    def _deactivate_impl(self) -> None:
        for slot in self._slots:
            for pointer in [*slot.inputs.values(), *slot.outputs.values()]:
                cuda.free(pointer)
        self._slots.clear()
        if self._stream is not None:
            cuda.stream_destroy(self._stream)
        self._engine = self._runtime = self._stream = None

    def _slot_for(self, seq: int) -> _ProfileSlot:
        for slot in self._slots:
            if slot.min_seq <= seq <= slot.max_seq:
                return slot
        raise EngineError(f"no optimisation profile of {self.plan_path} covers sequence length {seq}")

    def _infer_impl(self, feeds: Feeds) -> dict[str, npt.NDArray[np.float32]]:
        batch, seq = feeds["input_ids"].shape
        slot = self._slot_for(int(seq))
        with self._lock:
            for name, pointer in slot.inputs.items():
                host = np.ascontiguousarray(feeds[name], dtype=np.int64)
                slot.context.set_input_shape(name, (batch, seq))
                cuda.copy_to_device(pointer, host, self._stream)
            if not slot.context.execute_async_v3(self._stream):
                raise EngineError(f"TensorRT execution failed for a batch of shape {(batch, seq)}")
            results = {}
            for (task, n_labels), task_spec in zip(self._tasks, self.bundle.manifest.tasks, strict=True):
                host_out = np.empty((batch, n_labels), dtype=np.float32)
                cuda.copy_to_host(host_out, slot.outputs[task_spec.output], self._stream)
                results[task] = host_out
            cuda.stream_sync(self._stream)
        return results
