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


def test_tensorrt_plan_is_built_verified_and_runs(registered, tensorrt_ready: None) -> None:
    """A fp16 plan for this GPU passes parity with torch and serves every profile's lengths."""
    from engines.tensorrt.build import build_tensorrt

    registry, bundle = registered
    result = build_tensorrt(bundle, registry, "fp16", max_batch=32)
    assert result.record.gpu_arch is not None
    assert result.comparison.label_agreement >= 0.99
    with load_engine(
        bundle, "tensorrt", EngineOptions(device="cuda", precision="fp16", max_batch=32)
    ) as engine:
        out = engine.infer(["hi", "word " * 60, *sample_texts()])
    assert out["sentiment"].shape[0] == 2 + len(sample_texts())


def test_tensorrt_plan_for_another_gpu_is_refused(registered, tensorrt_ready: None) -> None:
    """A plan recorded for another compute capability fails with a clear error, before TensorRT loads it."""
    from engines.tensorrt.backend import TensorRTEngine

    _, bundle = registered
    records = [r for r in bundle.engine_records() if r.backend == "tensorrt"]
    if not records:
        pytest.skip("no TensorRT plan was built in this session")
    alien = records[0].model_copy(update={"gpu_arch": "1.0"})
    engine = TensorRTEngine.from_plan(bundle, bundle.path / alien.file, alien, EngineOptions(device="cuda"))
    with pytest.raises(EngineError, match=r"compute capability 1\.0"):
        engine.activate()
