"""The few CUDA runtime calls the TensorRT backend makes, through cuda-python (no torch), each checked.

cuda-python returns ``(error, *values)`` from every runtime call instead of raising. :class:`CudaRuntime`
checks each result and raises :class:`CudaError` naming the call and CUDA's error name, so a failure
surfaces where it happens instead of as garbage three calls later. The runtime module is passed in,
which lets the checks be tested on machines without CUDA against a module of the same shape.

cuda-python 12.6 and later (13.x included) expose the runtime as ``cuda.bindings.runtime``; older 12.x
releases as ``cuda.cudart``, which 13.x removed. Both spellings are tried, newest first.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import EngineError


class CudaUnavailable(EngineError):
    """cuda-python is not installed, so no CUDA call can be made."""


class CudaError(EngineError):
    """A CUDA runtime call returned an error."""

    def __init__(self, call: str, name: str) -> None:
        self.call, self.name = call, name
        super().__init__(f"CUDA call {call} failed: {name}")


# Errors that mean "this machine has no usable NVIDIA GPU" rather than "the GPU setup is broken".
NO_DEVICE_ERRORS = frozenset({"cudaErrorNoDevice"})


def load_cudart() -> Any:
    """The cuda-python runtime module, or :class:`CudaUnavailable` with the install hint."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6, 13.x
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise CudaUnavailable(
                "the TensorRT backend needs cuda-python: pip install 'parley[gpu]' (CUDA 13) "
                "or 'parley[gpu-cu12]' (CUDA 12)"
            ) from None
    return cudart


class CudaRuntime:
    """Checked wrappers over a cuda-python runtime module."""

    def __init__(self, cudart: Any | None = None) -> None:
        self.cudart = cudart if cudart is not None else load_cudart()

    def check(self, call: str, result: Any) -> Any:
        """Raise :class:`CudaError` unless ``result`` is success; return its value(s)."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise CudaError(call, self._error_name(err))
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def _error_name(self, err: Any) -> str:
        try:
            _, name = self.cudart.cudaGetErrorName(err)
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # the name is a courtesy; the code is what matters
            return f"cudaError {int(err)}"

    # -- device --------------------------------------------------------------------------------
    def compute_capability(self, device: int = 0) -> str:
        props = self.check("cudaGetDeviceProperties", self.cudart.cudaGetDeviceProperties(device))
        return f"{props.major}.{props.minor}"

    def device_name(self, device: int = 0) -> str:
        props = self.check("cudaGetDeviceProperties", self.cudart.cudaGetDeviceProperties(device))
        name = props.name
        return (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) bytes of the current device."""
        free, total = self.check("cudaMemGetInfo", self.cudart.cudaMemGetInfo())
        return int(free), int(total)

    # -- memory --------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        return int(self.check("cudaMalloc", self.cudart.cudaMalloc(nbytes)))

    def free(self, pointer: int) -> None:
        self.check("cudaFree", self.cudart.cudaFree(pointer))

    def malloc_host(self, nbytes: int) -> int:
        """Page-locked host memory: copies from it run asynchronously and at full bus speed."""
        return int(self.check("cudaMallocHost", self.cudart.cudaMallocHost(nbytes)))

    def free_host(self, pointer: int) -> None:
        self.check("cudaFreeHost", self.cudart.cudaFreeHost(pointer))

    # -- streams and copies --------------------------------------------------------------------
    def stream_create(self) -> Any:
        return self.check("cudaStreamCreate", self.cudart.cudaStreamCreate())

    def stream_destroy(self, stream: Any) -> None:
        self.check("cudaStreamDestroy", self.cudart.cudaStreamDestroy(stream))

    def stream_sync(self, stream: Any) -> None:
        self.check("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(stream))

    def copy_to_device(self, device: int, host: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(device, host, nbytes, kind, stream))

    def copy_to_host(self, host: int, device: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(host, device, nbytes, kind, stream))


def host_array(pointer: int, nbytes: int) -> npt.NDArray[np.uint8]:
    """A writable numpy view of ``nbytes`` of host memory at ``pointer`` (pinned buffers)."""
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(pointer))


def stream_handle(stream: Any) -> int:
    """The integer handle TensorRT's Python bindings expect for a cuda-python stream object."""
    return int(stream)
