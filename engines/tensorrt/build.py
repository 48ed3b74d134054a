"""Compiling a bundle's ONNX graph into a TensorRT plan for this GPU.

One code path for TensorRT 10 and 11: the network is always *strongly typed* (the creation flag is
required for that on 10.x and accepted but ignored on 11.x, which removed weak typing and with it
``BuilderFlag.FP16/INT8``). Reduced precision therefore comes from the graph's own types: for fp16
the ONNX graph is converted to float16 first (inputs and outputs keep their types).

Optimisation profiles cover sequence-length buckets (short, medium, long utterances) over the whole
batch range, so each padded batch runs on kernels tuned near its shape. The timing cache is kept
beside the registry and reused, so rebuilding after retraining takes seconds, not minutes.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

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


def tensorrt_available() -> bool:
    """True when the tensorrt wheel is installed and a CUDA GPU is visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        from engines.tensorrt.cuda import device_compute_capability

        device_compute_capability()
    except Exception:
        return False
    return True


def gpu_target(compute_capability: str) -> str:
    """The pointer target of this GPU kind, e.g. '9.0' → 'gpu-sm90'."""
    return "gpu-sm" + compute_capability.replace(".", "")


def compile_plan(
    onnx_path: Path,
    input_names: list[str],
    profiles: list[Profile],
    *,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse ONNX and build a serialized plan; parser errors are reported one by one."""
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
    for p in profiles:
        profile = builder.create_optimization_profile()
        for name in input_names:
            profile.set_shape(name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build a plan from {onnx_path} (see the TensorRT log above)")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_tensorrt(
    bundle: Bundle,
    registry: Registry,
    precision: Literal["fp32", "fp16"] = "fp16",
    *,
    thresholds: Thresholds | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache: Path | None = None,
) -> BuildResult:
    """Build, verify against torch, and register a plan for this GPU."""
    import tensorrt as trt

    from engines.base import EngineOptions, load_engine
    from engines.build import BuildResult, VerificationFailed, convert_fp16
    from engines.tensorrt.cuda import device_compute_capability
    from engines.verify import compare_probabilities, thresholds_for

    thresholds = thresholds or thresholds_for(precision)
    capability = device_compute_capability()
    runtime = str(trt.__version__)
    engine_id = f"tensorrt-{precision}-{gpu_target(capability)}-{runtime}"
    profiles = default_profiles(bundle.manifest.max_length, max_batch)
    cache = (
        timing_cache or registry.cache_dir / "timing" / f"tensorrt-{gpu_target(capability)}-{runtime}.cache"
    )
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
                timing_cache=cache,
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
        texts, gold = bundle.sample()
        from engines.tensorrt.backend import TensorRTEngine

        with load_engine(bundle, "torch", EngineOptions(device="cuda")) as reference:
            expected = reference.infer(texts)
        with TensorRTEngine.from_plan(
            bundle, plan, record, EngineOptions(device="cuda", max_batch=max_batch)
        ) as trt_engine:
            got = trt_engine.infer(texts)
        labels = {t.name: list(t.labels) for t in bundle.manifest.tasks}
        comparison = compare_probabilities(engine_id, reference.name, got, expected, gold, labels)
        if not comparison.passes(thresholds):
            raise VerificationFailed(engine_id, comparison, thresholds)
        record = record.model_copy(update={"parity": comparison.parity()})
        registry.add_engine(bundle, plan, record)
    log.info(
        "tensorrt plan built",
        engine=engine_id,
        agreement=comparison.label_agreement,
        max_abs_diff=round(comparison.max_abs_diff, 5),
    )
    return BuildResult(record, comparison)
