"""Evaluation: the numbers a team needs to trust a student, and the teacher scored beside it.

Per task: accuracy, macro-F1, per-class precision/recall/F1, expected calibration error (ECE, 15
equal-width bins) before and after temperature scaling (one temperature per task, fitted on the
development split by minimising its negative log-likelihood under a normal prior on log T of
σ = ``TEMPERATURE_PRIOR``), and a confusion-matrix PNG. When LLM
ensemble scores exist for the test utterances, the teacher is scored on the same utterances.

    evaluation = evaluate_checkpoint(ckpt, utterances, gold, llm)   # what `parley train evaluate` does
    write_report(evaluation, out)                                  # report.md, metrics.json, PNGs

What is scored: the checkpoint's tasks only (the corpus may label more), on the utterances of the
test dialogues that have a gold label; the temperature is fitted on the development dialogues of the
checkpoint's own split (its training seed unless another is given); the teacher is scored only when
the ensemble covers every scored utterance, so the two are compared on the same rows.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import JsonValue

from train.data import Dataset, Utterance, load_dataset, read_rows, split_by_dialogue

# The seed of the development split when neither the caller nor the checkpoint names one.
DEFAULT_SPLIT_SEED = 13

ECE_BINS = 15


@dataclass
class TaskReport:
    task: str
    labels: list[str]
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    ece: float
    ece_scaled: float
    temperature: float
    confusion: list[list[int]]
    teacher: dict[str, float] = field(default_factory=dict)


def per_class(pred: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for c, name in enumerate(labels):
        tp = int(((pred == c) & (truth == c)).sum())
        fp = int(((pred == c) & (truth != c)).sum())
        fn = int(((pred != c) & (truth == c)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": float((truth == c).sum())}
    return out


def macro_f1(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    present = sorted(set(truth.tolist()) | set(pred.tolist()))
    scores = []
    for c in present:
        tp = int(((pred == c) & (truth == c)).sum())
        fp = int(((pred == c) & (truth != c)).sum())
        fn = int(((pred != c) & (truth == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def mean_auc(probs: np.ndarray, truth: np.ndarray) -> float:
    """The mean over classes of the one-vs-rest ROC AUC of each class's score (ties count half):
    how well the scores rank a class's utterances above the others, whatever the class levels.
    Classes with no positive or no negative row are left out; NaN when none is left."""
    scores = []
    for c in range(probs.shape[1]):
        positive = truth == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(probs[:, c])
        scores.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(scores)) if scores else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (Mann-Whitney's convention)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    if len(unique) < len(values):
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        ranks = (sums / counts)[inverse]
    return ranks


def ece(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy − confidence| per confidence bin, weighted by bin size."""
    if len(truth) == 0:
        return float("nan")
    confidence = probs.max(1)
    correct = probs.argmax(1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    e = np.exp(shifted)
    probs: np.ndarray = e / e.sum(1, keepdims=True)
    return probs


TEMPERATURE_PRIOR = 0.1
"""σ of the prior on log T in the student's temperature scaling. Measured on 40 DailyDialog grid runs
(30 development dialogues each; docs/benchmarks/training-calibration.md): the MAP fit lowers mean test
ECE against the plain NLL fit on both tasks (dialogue acts 0.035 → 0.032, sentiment 0.025 → 0.023)."""


def fit_temperature(probs: np.ndarray, truth: np.ndarray, prior: float | None = None) -> float:
    """The temperature T minimising the NLL of softmax(log p / T) on (dev) data, by golden-section search.

    ``prior``: the standard deviation σ of a normal prior on log T around 0 (T = 1), making the fit
    a MAP estimate: mean NLL + (log T)² / (2σ²n). A small development set (a few rare-class rows)
    then moves T only as far as its evidence carries; a large one is barely affected."""
    if len(truth) == 0:
        return 1.0
    logits = np.log(np.clip(probs, 1e-12, 1.0))
    penalty = 0.0 if prior is None else 1.0 / (2.0 * prior**2 * len(truth))

    def nll(t: float) -> float:
        p = _softmax(logits / t)
        data = float(-np.log(np.clip(p[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())
        return data + penalty * math.log(t) ** 2

    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(60):
        if nll(math.exp(a)) < nll(math.exp(b)):
            hi, b = b, a
            a = hi - ratio * (hi - lo)
        else:
            lo, a = a, b
            b = lo + ratio * (hi - lo)
    return math.exp((lo + hi) / 2)


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    return _softmax(np.log(np.clip(probs, 1e-12, 1.0)) / temperature)


def task_report(
    task: str,
    labels: list[str],
    test_probs: np.ndarray,
    test_truth: np.ndarray,
    dev_probs: np.ndarray,
    dev_truth: np.ndarray,
    teacher_probs: np.ndarray | None = None,
) -> TaskReport:
    pred = test_probs.argmax(1)
    temperature = fit_temperature(dev_probs, dev_truth, prior=TEMPERATURE_PRIOR)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(test_truth, pred, strict=True):
        confusion[t, p] += 1
    teacher = {}
    if teacher_probs is not None and len(teacher_probs):
        teacher_pred = teacher_probs.argmax(1)
        teacher = {
            "accuracy": float((teacher_pred == test_truth).mean()),
            "macro_f1": macro_f1(teacher_pred, test_truth, len(labels)),
            "ece": ece(teacher_probs, test_truth),
        }
    return TaskReport(
        task=task,
        labels=labels,
        n=len(test_truth),
        accuracy=float((pred == test_truth).mean()),
        macro_f1=macro_f1(pred, test_truth, len(labels)),
        per_class=per_class(pred, test_truth, labels),
        ece=ece(test_probs, test_truth),
        ece_scaled=ece(scale(test_probs, temperature), test_truth),
        temperature=temperature,
        confusion=confusion.tolist(),
        teacher=teacher,
    )


Predicted = tuple[Sequence[Utterance], Mapping[str, np.ndarray]]
"""Utterances and, per task, one row of class probabilities for each (``Trainer.predict``)."""


@dataclass
class Evaluation:
    """A checkpoint's reports, one per task, and what the written report needs besides."""

    title: str
    reports: list[TaskReport]
    checkpoint: Path


def scored_rows(
    utterances: Sequence[Utterance], probs: np.ndarray, gold: Mapping[str, str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The probabilities and gold class indices of the utterances that have a gold label, and their
    positions in ``utterances``."""
    idx = [i for i, u in enumerate(utterances) if gold.get(u.id)]
    return probs[idx], np.array([labels.index(gold[utterances[i].id]) for i in idx], dtype=int), idx


def teacher_rows(
    utterances: Sequence[Utterance], idx: list[int], ensemble: Mapping[str, list[float]]
) -> np.ndarray | None:
    """The ensemble's probabilities for the scored utterances, or None unless it has every one of
    them (a teacher scored on fewer rows would not be comparable)."""
    if not ensemble or not all(utterances[i].id in ensemble for i in idx):
        return None
    return np.array([ensemble[utterances[i].id] for i in idx])


def score_tasks(
    data: Dataset, labels: Mapping[str, list[str]], test: Predicted, dev: Predicted
) -> list[TaskReport]:
    """One report per task of ``labels``: the student on the test predictions, its temperature fitted
    on the dev predictions, the teacher beside it where the ensemble allows."""
    (test_utts, test_probs), (dev_utts, dev_probs) = test, dev
    reports = []
    for task, names in labels.items():
        gold = data.gold.get(task, {})
        tp, tt, tidx = scored_rows(test_utts, test_probs[task], gold, names)
        dp, dt, _ = scored_rows(dev_utts, dev_probs[task], gold, names)
        teacher = teacher_rows(test_utts, tidx, data.ensemble.get(task, {}))
        reports.append(task_report(task, names, tp, tt, dp, dt, teacher))
    return reports


def other_tasks(labels: Mapping[str, list[str]], gold: Path, llm: Path | None) -> frozenset[str]:
    """Tasks the gold and LLM files label that the checkpoint does not: they are not loaded."""
    named = {str(r.get("task")) for path in (gold, llm) if path for _, r in read_rows(path)}
    return frozenset(named - set(labels))


def split_seed(training_config: Mapping[str, JsonValue], seed: int | None = None) -> int:
    """The seed of the development split: the given one, else the one the checkpoint was trained with
    (its manifest's training config), else the default."""
    if seed is not None:
        return seed
    return int(training_config.get("seed", DEFAULT_SPLIT_SEED))  # type: ignore[arg-type]


def evaluate_checkpoint(
    checkpoint: Path, utterances: Path, gold: Path, llm: Path | None = None, seed: int | None = None
) -> Evaluation:
    """Score a checkpoint's tasks on the test dialogues of the data (with the teacher when ``llm``
    is given); needs the train extra."""
    from engines.checkpoint import read_checkpoint
    from train.loop import FitConfig, Trainer

    manifest, model = read_checkpoint(checkpoint)
    labels = {t.name: list(t.labels) for t in manifest.tasks}
    data = load_dataset(utterances, labels, gold, llm, skip_tasks=other_tasks(labels, gold, llm))
    split = split_by_dialogue(data, seed=split_seed(manifest.training.config, seed))
    trainer = Trainer(
        data,
        split,
        [],
        FitConfig(
            method="ce_human",
            max_length=manifest.max_length,
            encoder=str(checkpoint / "tokenizer"),
            context_turns=int(manifest.training.config.get("context_turns") or 0),  # type: ignore[arg-type]
        ),
        model=model,
    )
    test, dev = trainer.predict(split.test), trainer.predict(split.dev)
    return Evaluation(
        title=f"{manifest.model}/{manifest.version}",
        reports=score_tasks(data, labels, test, dev),
        checkpoint=checkpoint,
    )


def write_report(evaluation: Evaluation, out: Path) -> Path:
    """Write report.md (with the checkpoint's learning curve when it has one), metrics.json and a
    confusion-matrix PNG per task into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    images = {r.task: confusion_png(r, out / f"confusion-{r.task}.png").name for r in evaluation.reports}
    (out / "metrics.json").write_text(json.dumps([asdict(r) for r in evaluation.reports], indent=2))
    text = markdown(evaluation.reports, evaluation.title, images)
    curve = evaluation.checkpoint / "learning-curve.png"
    if curve.is_file():
        shutil.copy(curve, out / "learning-curve.png")
        text += "\n## Learning curve\n\n![training loss and dev macro-F1 per epoch](learning-curve.png)\n"
    path = out / "report.md"
    path.write_text(text)
    return path


def confusion_png(report: TaskReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report.confusion)
    size = max(4.0, 0.5 * len(report.labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(report.labels)), report.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(report.labels)), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{report.task}\naccuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}", fontsize=10
    )
    if len(report.labels) <= 12:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(
                j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(reports: list[TaskReport], title: str, images: dict[str, str]) -> str:
    lines = [
        f"# {title}",
        "",
        "| task | n | accuracy | macro-F1 | ECE | ECE after T | T | teacher accuracy | teacher macro-F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        t_acc = f"{r.teacher['accuracy']:.4f}" if r.teacher else "-"
        t_f1 = f"{r.teacher['macro_f1']:.4f}" if r.teacher else "-"
        lines.append(
            f"| {r.task} | {r.n} | {r.accuracy:.4f} | {r.macro_f1:.4f} | {r.ece:.4f} | "
            f"{r.ece_scaled:.4f} | {r.temperature:.2f} | {t_acc} | {t_f1} |"
        )
    for r in reports:
        lines += [
            "",
            f"## {r.task}",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for name, m in r.per_class.items():
            lines.append(
                f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {int(m['support'])} |"
            )
        if r.task in images:
            lines += ["", f"![confusion matrix of {r.task}]({images[r.task]})"]
    return "\n".join(lines) + "\n"
