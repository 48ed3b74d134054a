"""The worker's side of the learning loop: chosen utterances onto the ``labelling-queue`` topic.

For each emitted batch, :class:`LabellingTap` takes the labelled rows in the considered share
(:func:`stream.selection.considered`), lets the :class:`~stream.selection.Selector` choose, and
turns each choice into a :class:`~stream.contracts.LabellingCandidate` with the turns before it:
what Redis kept of the conversation before this batch, then the batch's own earlier turns. For
``disagreement_s`` seconds after an engine swap the previous engine (kept by the holder as the
fallback) labels the considered rows too, and utterances the two engines label differently score
high. Off unless ``PARLEY_WORKER_SELECT_SHARE`` is above 0; only the considered share costs
anything (docs/worker.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import structlog

from engines.base import Probabilities
from stream.contracts import LabellingCandidate, ModelRef, PreviousTurn, SelectionScores, Utterance, encode
from stream.engine_holder import EngineHolder, Serving
from stream.inference import EngineBroken, Inference
from stream.metrics import WorkerMetrics
from stream.predictions import predictions_for
from stream.selection import Selector, considered
from stream.state import ConversationStore, turns_before

log = structlog.get_logger(__name__)


class LabellingTap:
    def __init__(
        self,
        selector: Selector,
        *,
        engines: EngineHolder,
        inference: Inference,
        store: ConversationStore | None,
        metrics: WorkerMetrics,
        top_k: int = 3,
        disagreement_s: float = 600.0,
        worker_id: str | None = None,
    ) -> None:
        self.selector = selector
        self.engines = engines
        self.inference = inference
        self.store = store
        self.metrics = metrics
        self.top_k = top_k
        self.disagreement_s = disagreement_s
        self.worker_id = worker_id

    async def candidates(
        self,
        serving: Serving,
        labelled: Sequence[tuple[int, Utterance]],
        probs: Probabilities,
        now: datetime,
    ) -> list[tuple[bytes, bytes]]:
        """(key, value) of the labelling-queue messages for this batch's chosen utterances;
        ``labelled`` pairs each utterance with its row in ``probs``."""
        share = self.selector.policy.share
        picks = [(row, u) for row, u in labelled if considered(u.utterance_id, share)]
        if not picks:
            return []
        rows = [row for row, _ in picks]
        texts = [u.text for _, u in picks]
        mine = {task: p[rows] for task, p in probs.items()}
        previous = await self._previous_probs(serving, texts)
        ids = [u.utterance_id for _, u in picks]
        outcome = self.selector.choose(texts, mine, serving.labels, previous, ids)
        self.metrics.selection_considered.inc(len(picks))
        for why, n in outcome.dropped.items():
            self.metrics.selection_dropped.labels(why=why).inc(n)
        if not outcome.chosen:
            return []
        chosen = [picks[c.row] for c in outcome.chosen]
        contexts = await self._contexts(labelled, {u.utterance_id for _, u in chosen})
        model = ModelRef(name=serving.model, version=serving.version, backend=serving.backend)
        out = []
        for choice, (row, u) in zip(outcome.chosen, chosen, strict=True):
            message = LabellingCandidate(
                conversation_id=u.conversation_id,
                utterance_id=u.utterance_id,
                turn=u.turn,
                speaker=u.speaker,
                text=u.text,
                context=contexts.get(u.utterance_id, []),
                predictions=predictions_for(row, probs, serving.labels, self.top_k),
                scores=SelectionScores(
                    score=choice.score,
                    reason=choice.reason,
                    task=choice.task,
                    uncertainty=choice.uncertainty,
                    rarity=choice.rarity,
                    disagreement=choice.disagreement,
                ),
                model=model,
                selected_at=now,
                worker=self.worker_id,
            )
            out.append((u.conversation_id.encode(), encode(message)))
            self.metrics.selection_chosen.labels(reason=choice.reason).inc()
        return out

    async def _contexts(
        self, labelled: Sequence[tuple[int, Utterance]], chosen: set[str]
    ) -> dict[str, list[PreviousTurn]]:
        """The (at most ``PARLEY_WORKER_STATE_RECENT``) turns before each chosen utterance: its
        conversation's kept history as it was before this batch (the worker reads it before writing
        the batch's state), then the batch's own earlier turns; a replayed utterance gets the turns
        before its own entry."""
        if self.store is None:
            return {}
        conversations = {u.conversation_id for _, u in labelled if u.utterance_id in chosen}
        history = await self.store.history(list(conversations))
        out: dict[str, list[PreviousTurn]] = {}
        for _, u in labelled:
            if u.conversation_id not in conversations:
                continue
            turns = history.setdefault(u.conversation_id, [])
            before = turns_before(turns, u.utterance_id, u.text, self.store.recent)
            if u.utterance_id in chosen:
                out[u.utterance_id] = [
                    PreviousTurn(utterance_id=t.utterance_id or "", text=t.text) for t in before
                ]
        return out

    async def _previous_probs(self, serving: Serving, texts: list[str]) -> Probabilities | None:
        """The previous engine's probabilities for ``texts``, in the window after a swap."""
        previous, swapped_at = self.engines.previous, self.engines.swapped_at
        if previous is None or swapped_at is None or time.monotonic() - swapped_at > self.disagreement_s:
            return None
        if previous.key == serving.key or previous.labels != serving.labels:
            return None  # the same engine, or a new label set: nothing to compare
        if previous.context_turns > 0 or serving.context_turns > 0:
            return None  # the tap has no contexts to give it: without them it would disagree by design
        try:
            probs, _ = await self.inference.run(previous, texts, None)
        except EngineBroken:
            return None
        return probs
