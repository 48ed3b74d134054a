"""Running the engine on a batch so that a bad input fails alone and a broken engine fails loudly.

The batch runs as one engine call in a worker thread (the event loop keeps serving heartbeats and
metrics). If the call raises, each input is retried alone: the ones that still fail are rejected
with ``inference_failed``; rows whose probabilities are not finite are rejected with ``not_finite``.
When *every* input of a batch fails, the inputs are probably not to blame: the engine is run on a
known-good text (:data:`CANARY`), and if that fails too :class:`EngineBroken` is raised, so the
caller can fall back to the previous engine or stop consuming instead of filing all traffic in the
DLQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np
import structlog

from engines.base import Engine, Probabilities
from parley.contracts import RejectCode, Rejection
from stream.engine_holder import Serving
from stream.errors import StreamError

log = structlog.get_logger(__name__)

CANARY: Final = "Hello, I have a question about my order."


class EngineBroken(StreamError):
    """The engine fails a known-good input: no input of the batch is to blame."""


def _finite_rows(probs: Probabilities, n: int) -> np.ndarray:
    ok = np.ones(n, dtype=bool)
    for p in probs.values():
        ok &= np.isfinite(p).all(axis=1)
    return ok


def _nan_rows(serving: Serving, n: int) -> Probabilities:
    return {t: np.full((n, len(labels)), np.nan, dtype=np.float32) for t, labels in serving.labels.items()}


class Inference:
    """One thread for the engine; see the module docstring for what happens on failures."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-infer")

    async def _call(
        self, serving: Serving, texts: Sequence[str], contexts: Sequence[str | None] | None
    ) -> Probabilities:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, serving.engine.infer, list(texts), contexts)

    def retire(self, engine: Engine) -> None:
        """Free ``engine`` on the engine thread, after every call already queued there."""
        self._executor.submit(engine.deactivate)

    async def run(
        self, serving: Serving, texts: Sequence[str], contexts: Sequence[str | None] | None
    ) -> tuple[Probabilities, dict[int, Rejection]]:
        """Probabilities per task for every text (NaN rows where it failed) and a rejection per
        failed row; raises EngineBroken when every row failed and so does the canary."""
        if not texts:
            return {
                t: np.zeros((0, len(labels)), dtype=np.float32) for t, labels in serving.labels.items()
            }, {}
        try:
            probs = await self._call(serving, texts, contexts)
        except Exception as exc:  # the batch failed: find the input(s) that did it, one by one
            log.warning("batch inference failed; retrying one by one", error=str(exc)[:300], size=len(texts))
            probs, failed = await self._one_by_one(serving, texts, contexts)
        else:
            failed = {}
        finite = _finite_rows(probs, len(texts))
        for i in np.flatnonzero(~finite):
            failed.setdefault(
                int(i),
                Rejection(
                    code=RejectCode.NOT_FINITE,
                    field="predictions",
                    message="the engine returned a probability that is not a finite number for this input",
                ),
            )
        if len(failed) == len(texts):
            await self.check_engine(serving)
        return probs, failed

    async def _one_by_one(
        self, serving: Serving, texts: Sequence[str], contexts: Sequence[str | None] | None
    ) -> tuple[Probabilities, dict[int, Rejection]]:
        rows: dict[str, list[np.ndarray]] = {t: [] for t in serving.labels}
        failed: dict[int, Rejection] = {}
        for i, text in enumerate(texts):
            try:
                single = await self._call(serving, [text], [contexts[i]] if contexts else None)
            except Exception as exc:
                failed[i] = Rejection(
                    code=RejectCode.INFERENCE_FAILED,
                    field="text",
                    message=f"the engine failed on this input: {str(exc)[:300]}",
                )
                single = _nan_rows(serving, 1)
            for task in rows:
                rows[task].append(single[task])
        return {t: np.concatenate(parts) for t, parts in rows.items()}, failed

    async def check_engine(self, serving: Serving) -> None:
        """Raise EngineBroken unless the engine labels the canary with finite probabilities."""
        try:
            probs = await self._call(serving, [CANARY], None)
        except Exception as exc:
            raise EngineBroken(f"the engine fails a known-good input: {str(exc)[:300]}") from exc
        if not _finite_rows(probs, 1).all():
            raise EngineBroken("the engine returns non-finite probabilities for a known-good input")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
