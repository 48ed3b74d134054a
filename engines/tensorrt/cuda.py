"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python (no torch)."""

from __future__ import annotations

from typing import Any

from engines.errors import EngineError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6+
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise EngineError("the TensorRT backend needs cuda-python: pip install 'parley[gpu]'") from None
    return cudart


def check(result: Any) -> Any:
    """cuda-python returns (error, *values): raise on error, return the values."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1].decode()
        raise EngineError(f"CUDA call failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_compute_capability(device: int = 0) -> str:
    cudart = _cudart()
    props = check(cudart.cudaGetDeviceProperties(device))
    return f"{props.major}.{props.minor}"


def malloc(nbytes: int) -> int:
    return int(check(_cudart().cudaMalloc(nbytes)))


def free(pointer: int) -> None:
    check(_cudart().cudaFree(pointer))


def stream_create() -> Any:
    return check(_cudart().cudaStreamCreate())


def stream_destroy(stream: Any) -> None:
    check(_cudart().cudaStreamDestroy(stream))


def stream_sync(stream: Any) -> None:
    check(_cudart().cudaStreamSynchronize(stream))


def copy_to_device(pointer: int, host: Any, stream: Any) -> None:
    cudart = _cudart()
    check(
        cudart.cudaMemcpyAsync(
            pointer, host.ctypes.data, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
        )
    )


def copy_to_host(host: Any, pointer: int, stream: Any) -> None:
    cudart = _cudart()
    check(
        cudart.cudaMemcpyAsync(
            host.ctypes.data, pointer, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
        )
    )
