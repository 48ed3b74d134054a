"""What every labelling backend does, and how a free-text answer becomes a label.

A backend receives requests (a rendered prompt and the task's labels) and returns one ``Answer`` per
request: ``scores`` over exactly the task's labels (summing to 1), or an abstention with its reason.
A request the backend could not get answered at all (the endpoint kept failing) is an Answer with
``failed`` set: it is counted, not cached, and asked again by the next run. A backend raises
``BackendUnavailable`` when going on is pointless (endpoint down, key rejected, model unknown).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from train.errors import TrainError
from train.label.spec import Rendered


class BackendUnavailable(TrainError):
    """The backend cannot serve this run at all; the message says why and what to check."""


@dataclass(frozen=True)
class LabelRequest:
    key: str
    """Cache key: backend, model, rendered prompt and labels."""
    prompt: Rendered
    labels: tuple[str, ...]
    calibration: Rendered | None = None
    """The same prompt for a content-free utterance ("N/A"), for backends that calibrate."""


@dataclass
class Answer:
    scores: dict[str, float] | None = None
    abstained: str | None = None
    """Why no label came out (an unparseable answer, a label outside the set)."""
    failed: str | None = None
    """Why the backend got no answer (retries exhausted, time-outs): not cached, asked again later."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""

    @property
    def label(self) -> str | None:
        return max(self.scores, key=self.scores.__getitem__) if self.scores else None

    def to_json(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "abstained": self.abstained,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "text": self.text[:200],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Answer:
        return cls(
            d.get("scores"),
            d.get("abstained"),
            None,
            d.get("prompt_tokens", 0),
            d.get("completion_tokens", 0),
            d.get("text", ""),
        )


class Backend(Protocol):
    kind: str
    """"local" or "openai": part of the cache key."""
    model: str

    async def check(self) -> None:
        """Fail fast (BackendUnavailable) when the backend cannot work at all."""

    async def score(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        """One answer per request, in order."""

    async def close(self) -> None: ...

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Estimated price of these tokens, or None where there is no price."""


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower()).strip(" \"'`.,:;!*()[]")


_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:label|answer|option|category|dialogue act|sentiment)\s*(?:is)?\s*[:=-]?\s*", re.I
)


_PUNCT = re.compile(r"[^A-Za-z0-9_^%\s-]")


def parse_answer(text: str, labels: Sequence[str]) -> tuple[str | None, str | None]:
    """(label, None) when ``text`` names exactly one of ``labels``; otherwise (None, reason)."""
    if not text or not text.strip():
        return None, "empty answer"
    by_norm = {_norm(label): label for label in labels}
    first_line = next((line for line in text.strip().splitlines() if line.strip()), "")
    candidate = _norm(_PREFIX.sub("", first_line))
    if candidate in by_norm:
        return by_norm[candidate], None
    words = " " + _norm(_PUNCT.sub(" ", text)) + " "
    found = {label for n, label in by_norm.items() if n and f" {n} " in words}
    if len(found) == 1:
        return found.pop(), None
    if len(found) > 1:
        return None, f"ambiguous: names {sorted(found)}"
    if candidate and len(candidate.split()) <= 3:
        return None, f"label outside the set: {candidate[:40]!r}"
    return None, f"unparseable: {text.strip()[:60]!r}"


def scores_from_counts(
    answers: Sequence[str], labels: Sequence[str]
) -> tuple[dict[str, float] | None, str | None]:
    """Scores as the share of parseable sampled answers naming each label."""
    counts = dict.fromkeys(labels, 0)
    reasons = []
    for text in answers:
        label, reason = parse_answer(text, labels)
        if label is None:
            reasons.append(reason or "unparseable")
        else:
            counts[label] += 1
    total = sum(counts.values())
    if not total:
        return None, reasons[0] if reasons else "no answer"
    return {k: v / total for k, v in counts.items()}, None


def scores_from_top_logprobs(
    top: Sequence[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float] | None:
    """Scores from the first answer token's alternatives (token, logprob): each token's probability
    goes to the labels it begins (shared equally when it begins several); None when no alternative
    begins a label. The result is renormalised over the labels."""
    import math

    mass = dict.fromkeys(labels, 0.0)
    norms = {label: _norm(label) for label in labels}
    for token, logprob in top:
        t = _norm(token)
        if not t:
            continue
        matching = [label for label, n in norms.items() if n.startswith(t)]
        for label in matching:
            mass[label] += math.exp(logprob) / len(matching)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {k: v / total for k, v in mass.items()}
