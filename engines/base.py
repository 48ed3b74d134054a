"""One engine interface for every backend (after Polygraphy's runners).

    engine = load_engine(bundle, "onnxruntime", EngineOptions(precision="int8"))
    with engine:                                  # activate() / deactivate()
        probs = engine.infer(["hello", "where is my order?"])   # {task: float32 [n, n_labels]}

The base class validates the input, tokenises with length bucketing, calls the backend's
``_infer_impl`` once per padded batch, checks what came back, applies softmax and restores the
caller's order. Backends only turn feeds into logits; they import their heavy library (torch,
tensorrt, onnxruntime) inside their own module, which ``load_engine`` imports on demand.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Final, Literal, Self

import numpy as np
import numpy.typing as npt

from engines.bundle import Bundle
from engines.errors import EngineError
from engines.tokenize import Batch, restore

Probabilities = dict[str, npt.NDArray[np.float32]]
Feeds = dict[str, npt.NDArray[np.int64]]

BACKENDS: Final = {
    "onnxruntime": "engines.onnxruntime.backend:OnnxRuntimeEngine",
    "tensorrt": "engines.tensorrt.backend:TensorRTEngine",
    "torch": "engines.torch.backend:TorchEngine",
}


class EngineInputError(EngineError, ValueError):
    """What was passed to ``infer`` is not a list of strings (with matching contexts)."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How to run an engine. Not every backend reads every field."""

    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    max_batch: int = 64
    """Most rows per engine call."""
    max_tokens: int | None = None
    """Most padded tokens (rows × width) per engine call; None: only ``max_batch`` limits a call."""
    bucket: bool = True
    max_padding: float | None = None
    """Most pad tokens per call as a share of its real tokens (0.5: half as many; with ``bucket``
    the rows are length-sorted first, so a cap cuts few calls);
    None: only ``max_batch`` and ``max_tokens`` cut calls. On a CPU a pad token costs what a real
    one does (docs/benchmarks/engine-lanes.md)."""
    threads: int | None = None
    """Intra-op threads (ONNX Runtime, torch); None lets the runtime decide (1 per lane with lanes > 1)."""
    lanes: int = 1
    """Engine calls run at the same time, each from its own thread, for backends whose calls may
    overlap (``Engine.concurrent_calls``), on a CPU; otherwise one call at a time. A batch is cut into at
    least this many calls. On CPU, lanes of one thread each beat one call on every core: single-
    threaded calls have no fork-join per operator (docs/benchmarks/engine-lanes.md)."""
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    engine_id: str | None = None
    """A specific compiled engine of the bundle (engines/<id>.json); None picks by backend and precision."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise EngineInputError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise EngineInputError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.lanes < 1:
            raise EngineInputError(f"lanes must be at least 1, got {self.lanes}")
        if self.max_padding is not None and self.max_padding < 0:
            raise EngineInputError(f"max_padding must be 0 or more, got {self.max_padding}")


DEFAULT_OPTIONS: Final = EngineOptions()


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    probs: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs


class Engine(ABC):
    """A loaded bundle that turns texts into per-task label probabilities."""

    backend: ClassVar[str]
    concurrent_calls: ClassVar[bool] = False
    """True when ``_infer_impl`` may run on several threads at once (``EngineOptions.lanes``)."""

    def __init__(self, bundle: Bundle, options: EngineOptions = DEFAULT_OPTIONS) -> None:
        self.bundle = bundle
        self.options = options
        self.tokenizer = bundle.tokenizer()
        self._tasks = bundle.tasks()
        self.active = False
        self.lanes = options.lanes if self.concurrent_calls and options.device == "cpu" else 1
        """Calls this engine runs at once: ``options.lanes`` on a CPU, 1 on a GPU (small calls would
        only starve it) or where the backend cannot overlap calls."""
        self._lanes: ThreadPoolExecutor | None = None

    @property
    def name(self) -> str:
        """What produced a prediction, e.g. 'onnxruntime-cpu-int8': outputs carry it."""
        return f"{self.backend}-{self.options.device}-{self.options.precision}"

    # -- life cycle ----------------------------------------------------------------------------
    def activate(self) -> None:
        if not self.active:
            self._activate_impl()
            if self.lanes > 1:
                self._lanes = ThreadPoolExecutor(self.lanes, thread_name_prefix="parley-lane")
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            if self._lanes is not None:
                self._lanes.shutdown(wait=True)
                self._lanes = None
            self._deactivate_impl()
            self.active = False

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    # -- inference -----------------------------------------------------------------------------
    def infer(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> Probabilities:
        """Per task, float32 probabilities ``[len(texts), n_labels]`` in the caller's order.

        ``contexts`` (optional) gives each text its previous turn(s), fed as the second segment.
        """
        if not self.active:
            raise EngineError(f"{self.name} engine for {self.bundle.label} is not active: use 'with engine:'")
        self._check_input(texts, contexts)
        if not texts:
            return {name: np.zeros((0, n), dtype=np.float32) for name, n in self._tasks}
        parts: dict[str, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]] = {
            n: [] for n, _ in self._tasks
        }
        # With lanes, every lane gets a call: rows are capped so a batch makes at least that many.
        max_batch = min(self.options.max_batch, -(-len(texts) // self.lanes))
        batches = self.tokenizer.batches(
            texts,
            contexts,
            max_batch=max_batch,
            max_tokens=self.options.max_tokens,
            bucket=self.options.bucket,
            max_padding=self.options.max_padding,
        )
        calls: Iterable[tuple[Batch, dict[str, npt.NDArray[np.float32]]]]
        pool = self._lanes
        if pool is not None:
            cut = list(batches)
            calls = zip(cut, pool.map(self._infer_impl, [b.feeds for b in cut]), strict=True)
        else:
            calls = ((b, self._infer_impl(b.feeds)) for b in batches)
        for batch, logits in calls:
            for name, n_labels in self._tasks:
                got = logits.get(name)
                if got is None or got.shape != (len(batch.indices), n_labels):
                    shape = None if got is None else got.shape
                    raise EngineError(
                        f"{self.name} returned {shape} for task {name!r}, "
                        f"expected {(len(batch.indices), n_labels)}"
                    )
                parts[name].append((batch.indices, softmax(got.astype(np.float32, copy=False))))
        return {name: restore(parts[name], len(texts)) for name, _ in self._tasks}

    @staticmethod
    def _check_input(texts: Sequence[str], contexts: Sequence[str | None] | None) -> None:
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise EngineInputError(f"texts must be a list of strings, not {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise EngineInputError(f"texts[{i}] is {type(text).__name__}, not str")
        if contexts is not None:
            if len(contexts) != len(texts):
                raise EngineInputError(
                    f"{len(contexts)} contexts for {len(texts)} texts: give one per text (or None)"
                )
            for i, context in enumerate(contexts):
                if context is not None and not isinstance(context, str):
                    raise EngineInputError(f"contexts[{i}] is {type(context).__name__}, not str or None")

    # -- what a backend implements --------------------------------------------------------------
    @abstractmethod
    def _activate_impl(self) -> None:
        """Load the model onto its device and allocate what inference needs."""

    @abstractmethod
    def _deactivate_impl(self) -> None:
        """Free what activation allocated."""

    @abstractmethod
    def _infer_impl(self, feeds: Feeds) -> dict[str, npt.NDArray[np.float32]]:
        """Logits per task for one padded batch."""


def engine_class(backend: str) -> type[Engine]:
    """The class of a backend, importing its module (and its heavy library) only now."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; parley has {sorted(BACKENDS)}")
    module_name, cls_name = BACKENDS[backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = {
            "tensorrt": "pip install 'parley[gpu]' on a machine with an NVIDIA GPU",
            "torch": "pip install 'parley[train]'",
            "onnxruntime": "pip install onnxruntime",
        }[backend]
        raise EngineError(f"the {backend} backend cannot be imported ({exc}); {hint}") from None
    cls: type[Engine] = getattr(module, cls_name)
    assert issubclass(cls, Engine)
    return cls


def load_engine(bundle: Bundle, backend: str, options: EngineOptions = DEFAULT_OPTIONS) -> Engine:
    """A (not yet active) engine of ``backend`` for ``bundle``."""
    return engine_class(backend)(bundle, options)
