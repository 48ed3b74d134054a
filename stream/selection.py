"""Which live utterances are worth a label: the first step of the learning loop (docs/loop.md).

    selector = Selector(SelectionPolicy(share=0.1))
    chosen = selector.choose(texts, probs, labels)          # probs of the considered rows only

A share of traffic is *considered*, decided by a hash of the utterance_id (a replayed utterance is
decided alike, and every worker agrees). Each considered utterance gets three scores in [0, 1]:

- **uncertain**: per task, 1 − (top probability − second): the engine could not tell two labels
  apart;
- **rare**: per task, how much rarer than uniform its predicted label has been among the considered
  utterances so far (1 − frequency × number of labels, floored at 0; 0 until ``rarity_warmup``
  predictions of the task were seen): rare classes are what a small student gets wrong;
- **disagreement** (only right after an engine swap, when the worker runs the previous engine on
  the considered rows): the share of tasks whose top label the two engines give differently.

The largest is the utterance's score; at least ``min_score`` is a candidate. Candidates are taken
best first; one whose normalised text (case, punctuation and spacing ignored) was already chosen is
dropped as a near-duplicate, and each (task, predicted label) of the score's task takes at most
``quota_per_class`` per ``quota_window_s``, so a flood of one class does not fill the queue. Pure
Python and NumPy over a batch's probability arrays: the worker calls it once per batch.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engines.base import Probabilities

Reason = Literal["uncertain", "rare", "disagreement"]
Dropped = Literal["below", "duplicate", "quota"]

_HASH_SPACE = 2**64
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    share: float = 0.0
    """Share of utterances considered, in [0, 1]; 0 turns selection off."""
    min_score: float = 0.5
    quota_per_class: int = 100
    """Most chosen per (task, predicted label) in each quota window."""
    quota_window_s: float = 3600.0
    dedupe_max: int = 100_000
    """Normalised texts remembered for near-duplicate detection (the oldest are forgotten)."""
    rarity_warmup: int = 200
    """Predictions of a task seen before its rarity scores count."""
    balance_tasks: bool = False
    """Rank each row by its place among the rows of every task instead of by its largest score, so the
    first choices go to each task's most uncertain (or rarest) rows in turn: one task whose scores run
    higher (more labels, a weaker head) cannot crowd out the others."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {self.share}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if self.quota_per_class < 1 or self.quota_window_s <= 0 or self.dedupe_max < 1:
            raise ValueError("quota_per_class, quota_window_s and dedupe_max must be positive")


@dataclass(frozen=True, slots=True)
class Choice:
    """One chosen utterance: its position in the ``choose`` call's rows and why it was chosen."""

    row: int
    score: float
    reason: Reason
    task: str
    uncertainty: dict[str, float]
    rarity: dict[str, float]
    disagreement: float | None


@dataclass(slots=True)
class Outcome:
    chosen: list[Choice] = field(default_factory=list)
    dropped: Counter[Dropped] = field(default_factory=Counter)


def considered(utterance_id: str, share: float) -> bool:
    """Whether this utterance is in the considered share: the same answer on every worker and replay."""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(utterance_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * _HASH_SPACE


def text_key(text: str) -> bytes:
    """Texts that differ only in case, punctuation or spacing share a key."""
    normal = _NOT_WORD.sub(" ", text.casefold()).strip()
    return hashlib.blake2b(normal.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def reason_of(options: Sequence[tuple[float, Reason, str]]) -> Reason:
    """The reason of the largest of a row's (score, reason, task) options."""
    return max(options, key=lambda o: o[0])[1]


def uncertainty(p: np.ndarray) -> np.ndarray:
    """1 − (top − second) per row of a probability array [n, k]; 0 for a single label."""
    if p.shape[1] < 2:
        return np.zeros(p.shape[0], dtype=np.float64)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)


class Selector:
    """Chooses, batch by batch, what to send for labelling; keeps the counts, quotas and memory of
    chosen texts that make the choice depend on what came before (one per worker)."""

    def __init__(self, policy: SelectionPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._predicted: dict[str, np.ndarray] = {}
        self._chosen_texts: OrderedDict[bytes, str | None] = OrderedDict()
        """Normalised text → the id of the utterance chosen for it (its replay is not a duplicate)."""
        self._quota: Counter[tuple[str, str]] = Counter()
        self._window_start = clock()

    @property
    def enabled(self) -> bool:
        return self.policy.share > 0.0

    def choose(
        self,
        texts: Sequence[str],
        probs: Probabilities,
        labels: dict[str, list[str]],
        previous: Probabilities | None = None,
        ids: Sequence[str] | None = None,
    ) -> Outcome:
        """The utterances to send among ``texts`` (the considered rows; ``probs`` and ``previous``
        hold exactly those rows, ``previous`` NaN where it failed), best first. With ``ids``, an
        utterance chosen before (a replay after a rebalance) is chosen again, not a duplicate."""
        outcome = Outcome()
        n = len(texts)
        if n == 0:
            return outcome
        tasks = [t for t in labels if t in probs]
        unc = {t: uncertainty(probs[t]) for t in tasks}
        top = {t: probs[t].argmax(axis=1) for t in tasks}
        rar = {t: self._rarity(t, top[t], len(labels[t])) for t in tasks}
        dis: np.ndarray | None = None
        differ: dict[str, np.ndarray] = {}
        if previous is not None:
            answered = {t: np.isfinite(previous[t]).all(axis=1) for t in tasks if t in previous}
            differ = {t: (previous[t].argmax(axis=1) != top[t]) & ok for t, ok in answered.items()}
            if differ:
                dis = np.stack(list(differ.values())).mean(axis=0)
        # Per task, each row's place among the batch's rows by its larger task score (0: the first).
        place = {
            t: np.argsort(np.argsort(-np.maximum(unc[t], rar[t]), kind="stable"), kind="stable")
            for t in tasks
        }
        scored: list[tuple[float, float, int, Reason, str]] = []
        for i in range(n):
            options: list[tuple[float, Reason, str]] = [(float(unc[t][i]), "uncertain", t) for t in tasks]
            options += [(float(rar[t][i]), "rare", t) for t in tasks]
            if dis is not None and dis[i] > 0:
                first = next(t for t, d in differ.items() if d[i])
                options.append((float(dis[i]), "disagreement", first))
            if self.policy.balance_tasks and reason_of(options) != "disagreement":
                task = min(tasks, key=lambda t: place[t][i])
                score, reason, _ = max((o for o in options if o[2] == task), key=lambda o: o[0])
                order = float(place[task][i])
            else:
                score, reason, task = max(options, key=lambda o: o[0])
                order = -1.0 if self.policy.balance_tasks else -score
            if score >= self.policy.min_score:
                scored.append((order, score, i, reason, task))
            else:
                outcome.dropped["below"] += 1
        self._roll_window()
        for _, score, i, reason, task in sorted(scored, key=lambda s: (s[0], -s[1])):
            key = text_key(texts[i])
            uid = ids[i] if ids is not None else None
            if key in self._chosen_texts and (uid is None or self._chosen_texts[key] != uid):
                outcome.dropped["duplicate"] += 1
                continue
            klass = (task, labels[task][int(top[task][i])])
            if self._quota[klass] >= self.policy.quota_per_class:
                outcome.dropped["quota"] += 1
                continue
            self._quota[klass] += 1
            self._remember(key, uid)
            outcome.chosen.append(
                Choice(
                    row=i,
                    score=round(score, 6),
                    reason=reason,
                    task=task,
                    uncertainty={t: round(float(unc[t][i]), 6) for t in tasks},
                    rarity={t: round(float(rar[t][i]), 6) for t in tasks},
                    disagreement=None if dis is None else round(float(dis[i]), 6),
                )
            )
        return outcome

    def _rarity(self, task: str, predicted: np.ndarray, n_labels: int) -> np.ndarray:
        """Scores from the counts before this batch; the batch's predictions are counted after."""
        counts = self._predicted.get(task)
        if counts is None or len(counts) != n_labels:  # first batch, or a new engine's label set
            counts = self._predicted[task] = np.zeros(n_labels, dtype=np.int64)
        seen = int(counts.sum())
        if seen < self.policy.rarity_warmup:
            scores = np.zeros(len(predicted), dtype=np.float64)
        else:
            scores = np.clip(1.0 - counts[predicted] / seen * n_labels, 0.0, 1.0)
        np.add.at(counts, predicted, 1)
        return scores

    def _roll_window(self) -> None:
        now = self._clock()
        if now - self._window_start >= self.policy.quota_window_s:
            self._quota.clear()
            self._window_start = now

    def _remember(self, key: bytes, uid: str | None) -> None:
        self._chosen_texts[key] = uid
        if len(self._chosen_texts) > self.policy.dedupe_max:
            self._chosen_texts.popitem(last=False)
