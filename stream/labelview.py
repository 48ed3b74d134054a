"""A readable view of labelled utterances: ``parley stream tail --conversations FILE [--gold FILE]``.

The output topic carries ids, labels and state but not the text, so the view joins each labelled
utterance with the file its utterances were sent from, and shows a two-line block per utterance
that fits the terminal's width (lines are shortened, never wrapped)::

    demo-billing-0003 #1  customer  Why did my price go up without anyone telling me?
       billing_question 0.91 ✓ · negative 0.62 ✓ · question 0.88 ✓ │ mood -0.41 · turn 2

With gold labels (the shared layout: one {"id", "task", "label"} per line) each label is marked ✓
when it agrees with the gold label and ✗ with the gold label beside it when it does not, and the
closing summary gives each task's accuracy over what was read, beside the majority-class baseline.
The summary also gives the throughput and latency the worker's outputs show (``processed_at`` and
``latency_ms``: from the input's Kafka timestamp to the label) and how to read the topic again.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text

from stream.contracts import Utterance, UtteranceLabels

__all__ = ["LabelView"]

_CONVERSATION_STYLES = ("cyan", "magenta", "yellow", "blue", "green", "bright_cyan", "bright_magenta")
_SENTIMENT_STYLES = {"negative": "red", "positive": "green"}
_SEP = " · "
_STATE_SEP = " │ "


@dataclass(frozen=True, slots=True)
class _Detail:
    turns: bool = True
    long_scores: bool = True
    gold_names: bool = True
    state: bool = True
    scores: bool = True


# What a labels line shows, from everything to the least that still says something; the first that
# fits the width is used.
_DETAIL = (
    _Detail(),
    _Detail(turns=False),
    _Detail(turns=False, long_scores=False),
    _Detail(turns=False, long_scores=False, gold_names=False),
    _Detail(turns=False, long_scores=False, gold_names=False, state=False),
    _Detail(turns=False, long_scores=False, gold_names=False, state=False, scores=False),
)


@dataclass
class _Tally:
    seen: int = 0
    conversations: set[str] = field(default_factory=set)
    utterances: set[str] = field(default_factory=set)
    correct: Counter[str] = field(default_factory=Counter)
    scored: Counter[str] = field(default_factory=Counter)
    gold_counts: dict[str, Counter[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None
    models: set[str] = field(default_factory=set)


class LabelView:
    """Renders labelled utterances as width-bounded blocks and keeps the tallies for the summary."""

    def __init__(
        self,
        width: int,
        utterances: Mapping[str, Utterance] | None = None,
        gold: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.width = max(width, 20)
        self.utterances = utterances or {}
        self.gold = gold or {}
        self.tally = _Tally()

    # -- the blocks ---------------------------------------------------------------------------------
    def header(self) -> list[Text]:
        marks = ", ✓ (= gold) or ✗ gold label" if self.gold else ""
        lines = [
            Text("conversation #turn speaker  text", style="bold"),
            Text(f"  intent · sentiment · dialogue act: label score{marks}", style="dim"),
            Text("  │ conversation state from Redis: rolling sentiment (mood), turns so far", style="dim"),
        ]
        return [self._fit(line) for line in lines]

    def block(self, labels: UtteranceLabels) -> list[Text]:
        """The two lines of one labelled utterance; counts it for the summary."""
        self._count(labels)
        return [self._fit(self._first_line(labels)), self._second_line(labels)]

    def _first_line(self, labels: UtteranceLabels) -> Text:
        said = self.utterances.get(labels.utterance_id)
        conversation = labels.conversation_id
        style = _CONVERSATION_STYLES[zlib.crc32(conversation.encode()) % len(_CONVERSATION_STYLES)]
        line = Text(_clip(conversation, 28), style=style)
        turn = labels.turn if labels.turn is not None else (said.turn if said else None)
        line.append(f" #{turn:<2}" if turn is not None else " #? ")
        if said is None:
            line.append(f" {labels.utterance_id}", style="dim")
            return line
        line.append(f" {_clip(_one_line(said.speaker or ''), 9):<9}", style="bold")
        line.append(" " + _one_line(said.text))
        return line

    def _second_line(self, labels: UtteranceLabels) -> Text:
        """Fit by leaving out detail, least useful first, before anything is cut."""
        for detail in _DETAIL:
            line = self._labels_line(labels, detail)
            if line.cell_len <= self.width:
                return line
        return self._fit(line)

    def _labels_line(self, labels: UtteranceLabels, detail: _Detail) -> Text:
        gold = self.gold.get(labels.utterance_id, {})
        line = Text("  ")
        for i, (task, p) in enumerate(labels.predictions.items()):
            if i:
                line.append(_SEP, style="dim")
            style = _SENTIMENT_STYLES.get(p.label, "bold") if task == "sentiment" else "bold"
            line.append(p.label, style=style)
            if detail.scores:
                line.append(
                    f" {p.score:.2f}" if detail.long_scores else f" {p.score:.2f}".replace(" 0.", " .")
                )
            if task in gold:
                if gold[task] == p.label:
                    line.append(" ✓", style="green")
                else:
                    line.append(" ✗", style="red")
                    if detail.gold_names:
                        line.append(f" {gold[task]}", style="red")
        state = labels.state
        if detail.state and state.available:
            parts = []
            if state.rolling_sentiment is not None:
                parts.append(f"mood {round(state.rolling_sentiment, 2) or 0.0:+.2f}")  # no "-0.00"
            if detail.turns and state.turn_count is not None:
                parts.append(f"{state.turn_count} turn{'' if state.turn_count == 1 else 's'}")
            if parts:
                line.append(_STATE_SEP, style="dim")
                line.append(_SEP.join(parts), style=_mood_style(state.rolling_sentiment))
        return line

    def _fit(self, line: Text) -> Text:
        line.truncate(self.width, overflow="ellipsis")
        return line

    # -- the summary --------------------------------------------------------------------------------
    def _count(self, labels: UtteranceLabels) -> None:
        t = self.tally
        if labels.utterance_id in t.utterances:
            return  # delivery is at-least-once: a duplicate output is shown, not counted twice
        t.utterances.add(labels.utterance_id)
        t.seen += 1
        t.conversations.add(labels.conversation_id)
        t.latencies_ms.append(labels.latency_ms)
        t.first = min(t.first or labels.processed_at, labels.processed_at)
        t.last = max(t.last or labels.processed_at, labels.processed_at)
        t.models.add(f"{labels.model.name} {labels.model.version} on {labels.model.backend}")
        for task, label in self.gold.get(labels.utterance_id, {}).items():
            if task in labels.predictions:
                t.scored[task] += 1
                t.correct[task] += labels.predictions[task].label == label
                t.gold_counts.setdefault(task, Counter())[label] += 1

    def summary(self, topic: str, default_topic: str) -> list[Text]:
        """The closing lines: what was read, accuracy per task, throughput, latency, the topic."""
        t = self.tally
        lines = [Text("── summary " + "─" * max(0, min(self.width, 80) - 11), style="dim")]
        if not t.seen:
            lines.append(Text(f"No labelled utterances were read from {topic}."))
            return [self._fit(line) for line in lines]
        n = len(t.conversations)
        lines.append(
            Text(f"Labelled: {t.seen} utterances of {n} conversation{'' if n == 1 else 's'}", "bold")
        )
        lines.append(Text(f"Model: {', '.join(sorted(t.models))}"))
        if t.scored:
            lines.append(Text("Accuracy against the gold labels, majority class beside it:"))
            name_width = max(len(task) for task in t.scored)
            for task in t.scored:
                n, right = t.scored[task], t.correct[task]
                common, count = t.gold_counts[task].most_common(1)[0]
                lines.append(
                    Text(
                        f"  {task:<{name_width}}  {right / n:.2f} ({right}/{n})"
                        f"   majority {count / n:.2f} ({common})"
                    )
                )
        span = (t.last - t.first).total_seconds() if t.first and t.last else 0.0
        rate = f"{t.seen / span:.1f}/s" if span > 0 else "at once"
        lines.append(Text(f"Throughput: {t.seen} in {span:.1f} s, {rate}: the pace they were sent at"))
        lines.append(Text("  (what the worker can do: docs/benchmarks/worker-e2e.md)", style="dim"))
        p50, p95, top = _percentiles(t.latencies_ms, (0.5, 0.95, 1.0))
        lines.append(
            Text(f"Latency, Kafka input → label: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {top:.0f} ms")
        )
        lines.append(Text(f"Output topic: {topic}"))
        again = "parley stream tail --from-beginning" + (
            "" if topic == default_topic else f" --topic {topic}"
        )
        lines.append(Text(f"Read it again: {again} (--raw: JSON)"))
        return [self._fit(line) for line in lines]


def _one_line(text: str) -> str:
    """Whitespace runs (newlines, tabs) as one space, other control characters dropped."""
    return " ".join("".join(c for c in text if c.isspace() or unicodedata.category(c) != "Cc").split())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _mood_style(mood: float | None) -> str:
    if mood is None or abs(mood) < 0.2:
        return "dim"
    return "green" if mood > 0 else "red"


def _percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] for q in qs]
