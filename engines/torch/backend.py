"""The torch eager backend: the student as trained, the reference every other engine is checked against.

Runs on CPU, or on CUDA when torch sees a GPU (device="cuda"); fp16 autocast on CUDA when asked.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch

from engines.base import DEFAULT_OPTIONS, Engine, EngineOptions, Feeds
from engines.bundle import Bundle
from engines.errors import EngineError
from engines.torch.model import StudentModel, load_weights


class TorchEngine(Engine):
    backend: ClassVar[str] = "torch"

    def __init__(self, bundle: Bundle, options: EngineOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(bundle, options)
        if options.device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device=cuda asked for the torch backend, but torch sees no CUDA GPU")
        if options.precision == "int8":
            raise EngineError("the torch backend runs fp32 (and fp16 on CUDA), not int8")
        if options.precision == "fp16" and options.device != "cuda":
            raise EngineError("fp16 with the torch backend needs device=cuda")
        self._model: StudentModel | None = None
        self._device = torch.device(options.device)

    def _activate_impl(self) -> None:
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self._model = load_weights(self.bundle.path, self._tasks).to(self._device)

    def _deactivate_impl(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _infer_impl(self, feeds: Feeds) -> dict[str, npt.NDArray[np.float32]]:
        assert self._model is not None
        tensors = {k: torch.from_numpy(v).to(self._device) for k, v in feeds.items()}
        with torch.autocast(self._device.type, dtype=torch.float16, enabled=self.options.precision == "fp16"):
            logits = self._model(**tensors)
        return {name: t.float().cpu().numpy() for name, t in logits.items()}
