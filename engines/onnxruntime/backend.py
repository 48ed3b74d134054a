"""The ONNX Runtime backend: fp32 from the bundle's model.onnx, int8/fp16 from compiled variants.

Threads and graph optimisation are options. The session is created on ``activate`` and dropped on
``deactivate``; ``run`` is thread-safe, so a worker may call ``infer`` from a pool thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from engines.base import DEFAULT_OPTIONS, Engine, EngineOptions, Feeds
from engines.bundle import Bundle
from engines.errors import EngineError

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def model_path(bundle: Bundle, options: EngineOptions) -> Path:
    """model.onnx for fp32; otherwise the compiled ONNX Runtime variant of that precision."""
    if options.engine_id is not None:
        return bundle.path / bundle.engine_record(options.engine_id).file
    if options.precision == "fp32":
        return bundle.onnx_path
    for record in bundle.engine_records():
        if record.backend == "onnxruntime" and record.precision == options.precision:
            return bundle.path / record.file
    raise EngineError(
        f"bundle {bundle.label} has no {options.precision} ONNX Runtime engine; build one with "
        f"'parley engine build {bundle.path} --backend onnxruntime --precision {options.precision}'"
    )


# ONNX Runtime fuses Add + LayerNormalization into SkipLayerNormalization; on CPU, for MiniLM's width
# (384), that kernel is slower than the two it replaces: the demo student's INT8 graph ran at 1,132
# utt/s with the fusion and 1,534 without (sorted batches of 32, 2 cores; docs/engines.md). CUDA keeps it.
_CPU_DISABLED_FUSIONS: Final = ["SkipLayerNormFusion"]


def session(path: Path, options: EngineOptions) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = _LEVELS[options.graph_optimization]
    # Lanes run calls side by side: each gets one thread unless told otherwise (threads=0 would give
    # every concurrent call the whole machine's pool to fight over).
    so.intra_op_num_threads = options.threads or (1 if options.lanes > 1 else 0)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ONNX Runtime's pool threads spin while they wait for work. Alone on a machine that buys a little;
    # in the worker it burns the cores that Kafka, Redis and Python need: spinning off, the engine
    # alone ran as fast (1,057-1,176 utt/s against 1,128-1,168) on 12% less CPU, and the worker's
    # backlog drain used 15 CPU-seconds instead of 23 for the same 6,000 utterances.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if options.device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(
                "device=cuda needs onnxruntime-gpu and a CUDA GPU; this onnxruntime offers "
                f"{ort.get_available_providers()}"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=so,
            providers=providers,
            disabled_optimizers=_CPU_DISABLED_FUSIONS if options.device == "cpu" else [],
        )
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise EngineError(f"ONNX Runtime cannot load {path}: {exc}") from None


class OnnxRuntimeEngine(Engine):
    backend: ClassVar[str] = "onnxruntime"
    concurrent_calls: ClassVar[bool] = True  # InferenceSession.run is thread-safe

    def __init__(self, bundle: Bundle, options: EngineOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(bundle, options)
        self.path = model_path(bundle, options)
        self._session: ort.InferenceSession | None = None
        self._outputs = [task.output for task in bundle.manifest.tasks]

    @classmethod
    def from_file(
        cls, bundle: Bundle, path: Path, options: EngineOptions = DEFAULT_OPTIONS
    ) -> OnnxRuntimeEngine:
        """An engine on a candidate ONNX file of the bundle's model that is not registered yet."""
        engine = cls(bundle, options)
        engine.path = path
        return engine

    def _activate_impl(self) -> None:
        self._session = session(self.path, self.options)
        inputs = {i.name for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if inputs != set(self.tokenizer.input_names) or not set(self._outputs) <= outputs:
            raise EngineError(
                f"{self.path} takes {sorted(inputs)} and gives {sorted(outputs)}, but the manifest "
                f"expects {self.tokenizer.input_names} and {self._outputs}"
            )

    def _deactivate_impl(self) -> None:
        self._session = None

    def _infer_impl(self, feeds: Feeds) -> dict[str, npt.NDArray[np.float32]]:
        assert self._session is not None
        results = self._session.run(self._outputs, dict(feeds))
        return {name: np.asarray(r) for (name, _), r in zip(self._tasks, results, strict=True)}
