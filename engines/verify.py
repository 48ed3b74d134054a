"""Parity checks: every engine against the torch reference, on a sample of texts.

An engine passes when its top label agrees with the reference's on at least ``min_agreement`` of
(text, task) pairs and no probability differs by more than ``max_abs_diff``. ``parley engine
verify`` exits non-zero on a failure, and the registry's pointer moves only after a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engines.base import DEFAULT_OPTIONS, Engine, EngineOptions, Probabilities, load_engine
from engines.bundle import Bundle
from engines.errors import EngineError
from engines.manifest import Parity


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_agreement: float = 0.99
    max_abs_diff: float = 0.02


def thresholds_for(precision: str) -> Thresholds:
    """Defaults per precision: fp32 engines must match torch almost exactly; reduced precision may move
    probabilities a little, but top labels must still agree."""
    return {
        "fp32": Thresholds(min_agreement=0.999, max_abs_diff=1e-3),
        "fp16": Thresholds(min_agreement=0.99, max_abs_diff=0.02),
        "int8": Thresholds(min_agreement=0.97, max_abs_diff=0.25),
    }.get(precision, Thresholds())


@dataclass(frozen=True, slots=True)
class Comparison:
    engine: str
    reference: str
    samples: int
    label_agreement: float
    max_abs_diff: float
    accuracy_delta: dict[str, float]

    def passes(self, thresholds: Thresholds) -> bool:
        return (
            self.label_agreement >= thresholds.min_agreement and self.max_abs_diff <= thresholds.max_abs_diff
        )

    def parity(self) -> Parity:
        return Parity(
            reference=self.reference,
            samples=self.samples,
            label_agreement=self.label_agreement,
            max_abs_diff=self.max_abs_diff,
            accuracy_delta=self.accuracy_delta,
        )


class VerificationFailed(EngineError):
    """An engine was built but does not match the torch reference closely enough."""

    def __init__(self, engine_id: str, comparison: Comparison, thresholds: Thresholds) -> None:
        self.comparison = comparison
        super().__init__(
            f"{engine_id} failed verification against {comparison.reference}: label agreement "
            f"{comparison.label_agreement:.4f} (needs ≥ {thresholds.min_agreement}), max |Δp| "
            f"{comparison.max_abs_diff:.4f} (needs ≤ {thresholds.max_abs_diff})"
        )


def verify_candidate(
    bundle: Bundle,
    engine_id: str,
    open_candidate: Callable[[], Engine],
    thresholds: Thresholds,
    *,
    reference_options: EngineOptions = DEFAULT_OPTIONS,
) -> Comparison:
    """Check a freshly built, not yet registered engine against torch on the bundle's sample.

    Every backend's build calls this before it registers anything: the candidate and the torch
    reference label the same texts, and :class:`VerificationFailed` is raised when the candidate
    misses ``thresholds``. The returned comparison becomes the engine record's parity.
    """
    texts, gold = bundle.sample()
    with load_engine(bundle, "torch", reference_options) as reference:
        expected = reference.infer(texts)
        reference_name = reference.name
    with open_candidate() as candidate:
        got = candidate.infer(texts)
    labels = {t.name: list(t.labels) for t in bundle.manifest.tasks}
    comparison = compare_probabilities(engine_id, reference_name, got, expected, gold, labels)
    if not comparison.passes(thresholds):
        raise VerificationFailed(engine_id, comparison, thresholds)
    return comparison


def _run(
    bundle: Bundle, backend: str, options: EngineOptions, texts: Sequence[str]
) -> tuple[str, Probabilities]:
    with load_engine(bundle, backend, options) as engine:
        return engine.name, engine.infer(texts)


def compare_probabilities(
    engine: str,
    reference: str,
    got: Probabilities,
    expected: Probabilities,
    gold: Mapping[str, Sequence[str | None]] | None = None,
    labels: Mapping[str, list[str]] | None = None,
) -> Comparison:
    agree = total = 0
    worst = 0.0
    deltas: dict[str, float] = {}
    for task, ref in expected.items():
        out = got[task]
        agree += int((out.argmax(axis=1) == ref.argmax(axis=1)).sum())
        total += ref.shape[0]
        worst = max(worst, float(np.abs(out - ref).max(initial=0.0)))
        if gold and labels and task in gold:
            index = {label: i for i, label in enumerate(labels[task])}
            rows = [(i, index[g]) for i, g in enumerate(gold[task]) if g is not None and g in index]
            if rows:
                idx, truth = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
                deltas[task] = float(
                    (out[idx].argmax(1) == truth).mean() - (ref[idx].argmax(1) == truth).mean()
                )
    return Comparison(engine, reference, total // max(len(expected), 1), agree / max(total, 1), worst, deltas)


def compare(
    bundle: Bundle,
    backend: str,
    texts: Sequence[str],
    *,
    options: EngineOptions = DEFAULT_OPTIONS,
    reference: str = "torch",
    reference_options: EngineOptions = DEFAULT_OPTIONS,
    gold: Mapping[str, Sequence[str | None]] | None = None,
) -> Comparison:
    """Run ``backend`` and ``reference`` on the same texts and compare their probabilities."""
    ref_name, expected = _run(bundle, reference, reference_options, texts)
    name, got = _run(bundle, backend, options, texts)
    labels = {t.name: list(t.labels) for t in bundle.manifest.tasks}
    return compare_probabilities(name, ref_name, got, expected, gold, labels)
