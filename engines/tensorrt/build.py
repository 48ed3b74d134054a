"""Compiling a bundle's ONNX graph into a TensorRT plan for this GPU.

One code path for TensorRT 10 and 11: the network is always *strongly typed* (the creation flag is
required for that on 10.x and accepted but ignored on 11.x, which removed weak typing and with it
``BuilderFlag.FP16/INT8``). Reduced precision therefore comes from the graph's own types: for fp16
the ONNX graph is converted to float16 first (inputs and outputs keep their types).

Optimisation profiles cover sequence-length buckets (short, medium, long utterances) over the whole
batch range, so each padded batch runs on kernels tuned near its shape. The timing cache is kept
beside the registry (``<registry>/.cache/tensorrt-timing/<target>-trt<version>.cache``), merged and
replaced atomically after each build, so rebuilding after retraining takes seconds, not minutes, and
two builds at once cannot corrupt it.

Precisions: fp16 (the default) and fp32. INT8 is refused: TensorRT 11 removed the INT8 builder flag
and runs INT8 only from explicitly quantised (Q/DQ) graphs, which parley does not produce.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from engines.bundle import Bundle, sha256_of
from engines.errors import EngineError
from engines.manifest import EngineRecord

if TYPE_CHECKING:
    from engines.build import BuildResult
    from engines.registry import Registry
    from engines.verify import Thresholds

log = structlog.get_logger(__name__)

DEFAULT_WORKSPACE_BYTES: Final = 2 << 30
DEFAULT_MAX_BATCH: Final = 128


@dataclass(frozen=True, slots=True)
class Profile:
    """min / opt / max of (batch, sequence) for every input of one optimisation profile."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def as_json(self) -> dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def default_profiles(max_length: int, max_batch: int = DEFAULT_MAX_BATCH) -> list[Profile]:
    """Sequence buckets 1–32, 33–64, 65–max_length (fewer when max_length is small), batch 1–max_batch."""
    edges = [e for e in (32, 64) if e < max_length] + [max_length]
    profiles, low = [], 1
    for high in edges:
        opt_seq = max(low, min(high, (low + high) // 2))
        profiles.append(Profile((1, low), (max(1, max_batch // 2), opt_seq), (max_batch, high)))
        low = high + 1
    return profiles


def timing_cache_name(target: str, tensorrt_version: str) -> str:
    """The timing cache's name beside the registry: one per GPU kind and TensorRT version."""
    return f"tensorrt-timing/{target}-trt{tensorrt_version}.cache"


def compile_plan(
    onnx_path: Path,
    input_names: list[str],
    profiles: list[Profile],
    *,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache: bytes | None = None,
    save_timing_cache: Callable[[Callable[[bytes | None], bytes]], None] | None = None,
    precision: str = "fp16",
) -> bytes:
    """Parse ONNX and build a serialized plan; parser errors are reported one by one.

    ``timing_cache`` seeds the build with earlier measurements. ``save_timing_cache`` is called
    after a successful build with a function that merges this build's timings into whatever is
    stored by then (another build may have saved meanwhile) and serialises the result.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp32":
        # TF32 (on by default) would round fp32 matrix products to 10-bit mantissas: an "fp32" plan
        # must match torch's fp32 within the fp32 verification limits.
        config.clear_flag(trt.BuilderFlag.TF32)
    for p in profiles:
        profile = builder.create_optimization_profile()
        for name in input_names:
            profile.set_shape(name, p.min, p.opt, p.max)
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f"TensorRT refused the optimisation profile {p.as_json()}")
    cache = config.create_timing_cache(timing_cache or b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
        # A cache from another device or TensorRT build is ignored (ignore_mismatch), so a refusal
        # here means an unreadable file: build without it rather than fail the build.
        log.warning("tensorrt timing cache not usable; building without it", onnx=str(onnx_path))
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
            raise EngineError("TensorRT refused an empty timing cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build a plan from {onnx_path} (see the TensorRT log above)")
    if save_timing_cache is not None:
        built = config.get_timing_cache()

        def merged(stored: bytes | None) -> bytes:
            if stored:
                other = config.create_timing_cache(stored)
                if other is None or not built.combine(other, ignore_mismatch=True):
                    log.warning("stored tensorrt timing cache not merged; overwriting it")
            return bytes(built.serialize())

        save_timing_cache(merged)
    return bytes(serialized)


def build_tensorrt(
    bundle: Bundle,
    registry: Registry,
    precision: str = "fp16",
    *,
    thresholds: Thresholds | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> BuildResult:
    """Build, verify against torch, and register a plan for this GPU (fp16 or fp32; int8 is refused)."""
    from engines.build import BuildResult, check_precision, convert_fp16

    precision = check_precision("tensorrt", precision)
    import tensorrt as trt

    from engines.base import EngineOptions
    from engines.node import detect_node
    from engines.tensorrt.backend import TensorRTEngine
    from engines.verify import thresholds_for, verify_candidate

    thresholds = thresholds or thresholds_for(precision)
    node = detect_node("gpu")
    capability, runtime = str(node.compute_capability), str(trt.__version__)
    engine_id = plan_engine_id(precision, node.target, runtime)
    profiles = default_profiles(bundle.manifest.max_length, max_batch)
    cache_name = timing_cache_name(node.target, runtime)
    with tempfile.TemporaryDirectory(prefix="parley-trt-") as tmp:
        source = bundle.onnx_path
        if precision == "fp16":
            source = Path(tmp) / "model.fp16.onnx"
            convert_fp16(bundle.onnx_path, source)
        plan = Path(tmp) / f"{engine_id}.plan"
        plan.write_bytes(
            compile_plan(
                source,
                list(bundle.manifest.inputs),
                profiles,
                workspace_bytes=workspace_bytes,
                timing_cache=registry.read_side_file(cache_name),
                save_timing_cache=lambda update: registry.update_side_file(cache_name, update),
                precision=precision,
            )
        )
        record = EngineRecord(
            engine_id=engine_id,
            backend="tensorrt",
            precision=precision,
            file=f"engines/{engine_id}.plan",
            sha256=sha256_of(plan),
            runtime_version=runtime,
            gpu_arch=capability,
            profiles=[p.as_json() for p in profiles],
            built_at=datetime.now(UTC),
        )
        options = EngineOptions(device="cuda", precision=precision, max_batch=max_batch)
        comparison = verify_candidate(
            bundle,
            engine_id,
            lambda: TensorRTEngine.from_plan(bundle, plan, record, options),
            thresholds,
            reference_options=EngineOptions(device="cuda"),
        )
        record = record.model_copy(update={"parity": comparison.parity()})
        registry.add_engine(bundle, plan, record)
    log.info(
        "tensorrt plan built",
        engine=engine_id,
        gpu=node.gpu_name,
        agreement=comparison.label_agreement,
        max_abs_diff=round(comparison.max_abs_diff, 5),
    )
    return BuildResult(record, comparison)


def plan_engine_id(precision: str, target: str, tensorrt_version: str) -> str:
    """e.g. 'tensorrt-fp16-gpu-sm90-10.13.3.9': precision, GPU kind and TensorRT version."""
    return f"tensorrt-{precision}-{target}-{tensorrt_version}"
