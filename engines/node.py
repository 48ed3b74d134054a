"""What kind of node this is: which engines it builds and which pointer target it serves.

A GPU node builds TensorRT plans and serves the target of its GPU kind (``gpu-sm90`` on an H100 or
H200); a CPU node builds ONNX Runtime engines and serves ``cpu``. The kind is a setting
(``PARLEY_ENGINE_DEVICE``: ``auto``, ``cpu`` or ``gpu``); the Helm chart sets it per watcher, so a
node never has to guess. With ``auto``:

- TensorRT not installed: a CPU node.
- TensorRT installed and a GPU answers: a GPU node.
- TensorRT installed, CUDA says there is no GPU at all (``cudaErrorNoDevice``): a CPU node, with a
  warning (the GPU image on a CPU machine).
- TensorRT installed and anything else fails (cuda-python missing, a driver too old, TensorRT's own
  libraries not loading): :class:`NodeSetupError`. Quietly calling such a node ``cpu`` would build
  and promote CPU engines on a GPU node and hide the broken install; set ``PARLEY_ENGINE_DEVICE=cpu``
  to mean it.

``gpu`` fails unless TensorRT and CUDA both work; ``cpu`` never touches CUDA.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from engines.errors import EngineError

log = structlog.get_logger(__name__)

NodeDevice = Literal["auto", "cpu", "gpu"]


class NodeSetupError(EngineError):
    """TensorRT is installed (or a GPU node was asked for) but the GPU stack does not work."""


@dataclass(frozen=True, slots=True)
class Node:
    target: str
    """The pointer target this node serves: 'cpu' or 'gpu-sm<major><minor>'."""
    backend: str
    """The backend whose engines it builds: 'onnxruntime' or 'tensorrt'."""
    compute_capability: str | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None

    @property
    def is_gpu(self) -> bool:
        return self.backend == "tensorrt"


CPU_NODE: Final = Node(target="cpu", backend="onnxruntime")


def gpu_target(compute_capability: str) -> str:
    """The pointer target of a GPU kind, e.g. '9.0' → 'gpu-sm90'."""
    return "gpu-sm" + compute_capability.replace(".", "")


def detect_node(device: NodeDevice = "auto", *, cudart: Any | None = None) -> Node:
    """This node's kind, by the rules in the module docstring. ``cudart`` replaces cuda-python's
    runtime module (tests)."""
    if device == "cpu":
        return CPU_NODE
    if importlib.util.find_spec("tensorrt") is None:
        if device == "gpu":
            raise NodeSetupError(
                "PARLEY_ENGINE_DEVICE=gpu but TensorRT is not installed: pip install 'parley[gpu]' "
                "(CUDA 13) or 'parley[gpu-cu12]' (CUDA 12)"
            )
        return CPU_NODE
    from engines.tensorrt.cuda import NO_DEVICE_ERRORS, CudaError, CudaRuntime

    try:
        import tensorrt as trt

        version = str(trt.__version__)
    except Exception as exc:  # any failure to load TensorRT is reported as such
        raise NodeSetupError(
            f"TensorRT is installed but does not load ({type(exc).__name__}: {exc}); fix the GPU "
            "install, or set PARLEY_ENGINE_DEVICE=cpu to build CPU engines on this node on purpose"
        ) from exc
    try:
        cuda = CudaRuntime(cudart)
        capability = cuda.compute_capability()
        name = cuda.device_name()
    except CudaError as exc:
        if device == "auto" and exc.name in NO_DEVICE_ERRORS:
            log.warning(
                "tensorrt is installed but this machine has no NVIDIA GPU: serving as a cpu node",
                tensorrt=version,
                cuda_error=exc.name,
            )
            return CPU_NODE
        raise NodeSetupError(
            f"TensorRT {version} is installed but CUDA does not work: {exc}; fix the driver or the "
            "CUDA libraries (docs/engines.md lists the matching versions), or set "
            "PARLEY_ENGINE_DEVICE=cpu to build CPU engines on this node on purpose"
        ) from exc
    except EngineError as exc:  # cuda-python missing
        raise NodeSetupError(f"TensorRT {version} is installed but {exc}") from exc
    except Exception as exc:  # e.g. cuda-python cannot load the driver library at all
        raise NodeSetupError(
            f"TensorRT {version} is installed but CUDA cannot be reached ({type(exc).__name__}: "
            f"{exc}); on a machine without an NVIDIA driver set PARLEY_ENGINE_DEVICE=cpu"
        ) from exc
    return Node(
        target=gpu_target(capability),
        backend="tensorrt",
        compute_capability=capability,
        tensorrt_version=version,
        gpu_name=name,
    )


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's CPU
    limit), rounded up. The default number of engine lanes."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(cpus, 1)
