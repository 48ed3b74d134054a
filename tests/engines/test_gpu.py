"""CUDA and TensorRT paths. Marked gpu: skipped, with the reason, where no NVIDIA GPU is visible.

On a GPU machine without TensorRT (the device machine's image has torch with CUDA but no TensorRT),
the torch CUDA backend and ONNX Runtime's CUDA provider (when onnxruntime-gpu is installed) are still
checked; the TensorRT tests skip with their own reason.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from engines.base import EngineOptions, load_engine
from engines.errors import EngineError

from .conftest import sample_texts

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_torch_cuda_matches_torch_cpu(registered) -> None:
    """The torch reference on CUDA agrees with CPU: fp32 within 1e-4, fp16 autocast within 2e-2."""
    _, bundle = registered
    texts = sample_texts()
    with load_engine(bundle, "torch") as cpu:
        expected = cpu.infer(texts)
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 2e-2)):
        with load_engine(bundle, "torch", EngineOptions(device="cuda", precision=precision)) as gpu:
            got = gpu.infer(texts)
        for task in expected:
            assert np.abs(got[task] - expected[task]).max() < tolerance, (precision, task)
            assert (got[task].argmax(1) == expected[task].argmax(1)).mean() >= 0.99


def test_onnxruntime_cuda_matches_torch(registered) -> None:
    """ONNX Runtime's CUDA provider agrees with torch (needs onnxruntime-gpu)."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    _, bundle = registered
    texts = sample_texts()
    with (
        load_engine(bundle, "torch") as ref,
        load_engine(bundle, "onnxruntime", EngineOptions(device="cuda")) as ort,
    ):
        expected, got = ref.infer(texts), ort.infer(texts)
    for task in expected:
        assert np.abs(got[task] - expected[task]).max() < 1e-3


@pytest.fixture
def tensorrt_ready() -> None:
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed here (pip install 'parley[gpu]')")
    if importlib.util.find_spec("cuda") is None:
        pytest.skip("cuda-python is not installed here (pip install 'parley[gpu]')")


def _texts_for_every_profile(bundle) -> list[str]:
    """Texts whose token counts land in each sequence bucket, the longest at max_length."""
    longest = "word " * (bundle.manifest.max_length * 2)
    return ["hi", "word " * 20, "word " * 50, "word " * 90, longest, *sample_texts()]


@pytest.fixture
def trt_plan(registered, tensorrt_ready: None):
    from engines.tensorrt.build import build_tensorrt

    registry, bundle = registered
    result = build_tensorrt(bundle, registry, "fp16", max_batch=32)
    return bundle, result


def test_tensorrt_plan_is_built_verified_and_matches_torch_in_every_profile(trt_plan) -> None:
    """A fp16 plan for this GPU passes parity with torch, and the reloaded plan agrees with torch on
    texts in every profile's sequence range, the longest included."""
    bundle, result = trt_plan
    assert result.record.gpu_arch is not None
    assert result.comparison.label_agreement >= 0.99
    texts = _texts_for_every_profile(bundle)
    with load_engine(bundle, "torch", EngineOptions(device="cuda")) as reference:
        expected = reference.infer(texts)
    options = EngineOptions(device="cuda", precision="fp16", max_batch=32)
    with load_engine(bundle, "tensorrt", options) as engine:
        got = engine.infer(texts)
        lengths = engine.tokenizer.lengths(texts)
    for task in expected:
        assert got[task].shape == expected[task].shape
        assert np.abs(got[task] - expected[task]).max() < 2e-2, task
        assert (got[task].argmax(1) == expected[task].argmax(1)).mean() >= 0.99, task
    # Every profile was exercised: 1–32, 33–64 and 65–max_length tokens, max_length itself included.
    assert min(lengths) <= 32 < max(lengths)
    assert any(32 < n <= 64 for n in lengths)
    assert max(lengths) == bundle.manifest.max_length


def test_tensorrt_plan_for_another_gpu_or_version_is_refused(trt_plan) -> None:
    """A plan recorded for another compute capability or TensorRT version fails with a clear error,
    before TensorRT loads it."""
    from engines.tensorrt.backend import TensorRTEngine

    bundle, result = trt_plan
    plan = bundle.path / result.record.file
    for change, message in (
        ({"gpu_arch": "1.0"}, r"compute capability 1\.0"),
        (
            {"runtime_version": "0.0.0"},
            r"TensorRT 0\.0\.0",
        ),
    ):
        alien = result.record.model_copy(update=change)
        engine = TensorRTEngine.from_plan(bundle, plan, alien, EngineOptions(device="cuda"))
        with pytest.raises(EngineError, match=message):
            engine.activate()


def test_tensorrt_corrupt_plan_is_an_error_not_a_crash(trt_plan, tmp_path) -> None:
    from engines.tensorrt.backend import TensorRTEngine

    bundle, result = trt_plan
    corrupt = tmp_path / "corrupt.plan"
    corrupt.write_bytes(b"not a plan" * 100)
    engine = TensorRTEngine.from_plan(bundle, corrupt, result.record, EngineOptions(device="cuda"))
    with pytest.raises(EngineError, match="could not deserialize"):
        engine.activate()


def test_tensorrt_deactivate_returns_device_memory(trt_plan) -> None:
    """Activation cycles do not grow device memory use: everything allocated is freed."""
    from engines.tensorrt.cuda import CudaRuntime

    bundle, _ = trt_plan
    cuda = CudaRuntime()
    options = EngineOptions(device="cuda", precision="fp16", max_batch=32)
    free_after = []
    for _ in range(3):
        with load_engine(bundle, "tensorrt", options) as engine:
            engine.infer(sample_texts())
        free_after.append(cuda.mem_get_info()[0])
    assert free_after[-1] >= free_after[0] - (8 << 20), free_after
