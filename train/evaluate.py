"""Evaluation: the numbers a team needs to trust a student, and the teacher scored beside it.

Per task: accuracy, macro-F1, per-class precision/recall/F1, expected calibration error (ECE, 15
equal-width bins) before and after temperature scaling (one temperature per task, fitted on the
development split by minimising its negative log-likelihood), and a confusion-matrix PNG. When LLM
ensemble scores exist for the test utterances, the teacher is scored on the same utterances.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(log p / T) on (dev) data, by golden-section search."""
    if len(truth) == 0:
        return 1.0
    logits = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(t: float) -> float:
        p = _softmax(logits / t)
        return float(-np.log(np.clip(p[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())

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
    temperature = fit_temperature(dev_probs, dev_truth)
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
