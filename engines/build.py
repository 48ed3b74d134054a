"""Building the engines a node can run, verifying each against torch, and recording the result.

    onnxruntime fp32   the bundle's model.onnx itself (a record only: it is verified like the rest)
    onnxruntime int8   dynamic INT8 quantisation of the weights (CPU)
    onnxruntime fp16   the graph converted to float16 (CUDA only: measured where it runs)
    tensorrt fp16/fp32 a plan for this GPU and this TensorRT version (engines.tensorrt.build)

Each build writes ``engines/<engine_id>.<ext>`` and a record with its parity (label agreement,
largest probability difference and, where the sample has gold labels, the accuracy change).
A build that fails its thresholds is not registered, and nothing is promoted.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import structlog

from engines.base import EngineOptions
from engines.bundle import Bundle, sha256_of
from engines.errors import EngineError
from engines.manifest import EngineRecord
from engines.registry import Registry
from engines.verify import Comparison, Thresholds, VerificationFailed, thresholds_for, verify_candidate

if TYPE_CHECKING:
    from engines.node import Node

log = structlog.get_logger(__name__)

__all__ = [
    "BuildResult",
    "VerificationFailed",
    "build_for_this_node",
    "build_onnxruntime",
    "check_precision",
    "default_precision",
]

Precision = Literal["fp32", "fp16", "int8"]

# What each backend can build, and what it builds when not told. TensorRT has no INT8 here:
# TensorRT 11 removed the INT8 builder flag (only explicitly quantised Q/DQ graphs run in INT8), and
# parley does not produce Q/DQ graphs, so a TensorRT "int8" build could only be an fp32 plan under a
# false name.
PRECISIONS: Final[dict[str, tuple[Precision, ...]]] = {
    "onnxruntime": ("int8", "fp32", "fp16"),
    "tensorrt": ("fp16", "fp32"),
}


def default_precision(backend: str) -> Precision:
    """The precision a backend builds unless told otherwise (the first it supports)."""
    return PRECISIONS[backend][0]


def check_precision(backend: str, precision: str) -> Precision:
    """``precision`` if ``backend`` can build it, else an :class:`EngineError` that says what can."""
    supported = PRECISIONS[backend]
    if precision not in supported:
        why = (
            " (TensorRT 11 has no INT8 builder flag and parley does not produce explicitly "
            "quantised Q/DQ graphs; fp16 is the fast TensorRT precision)"
            if backend == "tensorrt" and precision == "int8"
            else ""
        )
        raise EngineError(
            f"{backend} cannot build {precision} engines{why}: choose one of {', '.join(supported)}"
        )
    return precision


@dataclass(frozen=True, slots=True)
class BuildResult:
    record: EngineRecord
    comparison: Comparison


def cpu_target() -> str:
    return "cpu"


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _engine_id(backend: str, precision: str, target: str, runtime: str) -> str:
    return f"{backend}-{precision}-{target}-{runtime}"


def build_onnxruntime(
    bundle: Bundle,
    registry: Registry,
    precision: Precision,
    *,
    thresholds: Thresholds | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
) -> BuildResult:
    """Build (or, for fp32, just verify) an ONNX Runtime engine, then register its record."""
    check_precision("onnxruntime", precision)
    thresholds = thresholds or thresholds_for(precision)
    runtime = _ort_version()
    target = cpu_target() if device == "cpu" else "cuda"
    engine_id = _engine_id("onnxruntime", precision, target, runtime)
    with tempfile.TemporaryDirectory(prefix="parley-build-") as tmp:
        if precision == "fp32":
            file, rel = bundle.onnx_path, bundle.onnx_path.name
        else:
            file = Path(tmp) / f"{engine_id}.onnx"
            rel = f"engines/{engine_id}.onnx"
            if precision == "int8":
                quantize_int8(bundle.onnx_path, file)
            else:
                if device != "cuda":
                    raise EngineError(
                        "fp16 ONNX Runtime engines are for CUDA: build them with --device cuda on a GPU node"
                    )
                convert_fp16(bundle.onnx_path, file)
        from engines.onnxruntime.backend import OnnxRuntimeEngine

        options = EngineOptions(device=device, precision="fp32", engine_id=None)
        # Run the candidate file directly: it is not registered yet.
        comparison = verify_candidate(
            bundle, engine_id, lambda: OnnxRuntimeEngine.from_file(bundle, file, options), thresholds
        )
        record = EngineRecord(
            engine_id=engine_id,
            backend="onnxruntime",
            precision=precision,
            file=rel,
            sha256=sha256_of(file),
            runtime_version=runtime,
            gpu_arch=None,
            built_at=datetime.now(UTC),
            parity=comparison.parity(),
        )
        if precision == "fp32":
            registry.add_record(bundle, record)
        else:
            registry.add_engine(bundle, file, record)
    log.info(
        "engine built",
        engine=engine_id,
        bundle=bundle.label,
        agreement=comparison.label_agreement,
        max_abs_diff=round(comparison.max_abs_diff, 5),
        accuracy_delta=comparison.accuracy_delta,
    )
    return BuildResult(record, comparison)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 quantisation of MatMul/Gemm weights, one scale per output channel; activations are
    quantised per call. Per-channel scales matter: on the DailyDialog student, per-tensor scales agreed
    with torch on 97.3% of labels (max |Δp| 0.22), per-channel on 99.2% (0.12); see docs/engines.md."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )


def convert_fp16(source: Path, target: Path) -> None:
    """float16 weights and activations, keeping inputs and outputs in their original types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def build_for_this_node(bundle: Bundle, registry: Registry, node: Node | None = None) -> list[BuildResult]:
    """Every engine this node serves: a TensorRT plan in each TensorRT precision on a GPU node,
    ONNX Runtime fp32 and INT8 on a CPU node. ``node`` defaults to :func:`engines.node.detect_node`."""
    from engines.node import detect_node

    node = node or detect_node()
    if node.is_gpu:
        from engines.tensorrt.build import build_tensorrt

        return [build_tensorrt(bundle, registry, default_precision("tensorrt"))]
    # One precision failing verification does not throw away the ones that passed: promotion then
    # picks the fastest verified engine. Only when none passes is it a failure.
    results: list[BuildResult] = []
    failures: list[VerificationFailed] = []
    for precision in ("fp32", "int8"):
        try:
            results.append(build_onnxruntime(bundle, registry, precision))
        except VerificationFailed as exc:
            log.warning("engine failed verification; keeping the others", precision=precision, error=str(exc))
            failures.append(exc)
    if not results:
        raise failures[0]
    return results
