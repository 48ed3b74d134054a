"""``label-report``: are these LLM labels worth training on?

For every task with gold labels on some of the labelled utterances: each prompt's and the ensemble's
coverage (share answered), accuracy, macro-F1 and calibration error (ECE, 15 bins), the confusions
the ensemble makes most, and how much the prompts agree (raw agreement and Cohen's κ per pair, on
the utterances both answered). A prompt that agrees with the others no more than chance (κ near 0)
adds noise, not diversity. Markdown plus PNG plots.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from train.data import DataError, read_rows
from train.evaluate import ece, macro_f1


@dataclass
class Scored:
    n: int
    coverage: float
    accuracy: float
    macro_f1: float
    ece: float


@dataclass
class TaskLabelReport:
    task: str
    labels: list[str]
    gold_n: int
    prompts: dict[str, Scored]
    ensemble: Scored
    confusions: list[tuple[str, str, int]]
    errors: int
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    kappa: dict[str, dict[str, float]] = field(default_factory=dict)
    abstentions: dict[str, int] = field(default_factory=dict)


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    if len(a) == 0:
        return float("nan")
    po = float((a == b).mean())
    pa = np.bincount(a, minlength=n_classes) / len(a)
    pb = np.bincount(b, minlength=n_classes) / len(b)
    pe = float((pa * pb).sum())
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def _score(probs: dict[str, np.ndarray], gold: dict[str, int], total: int) -> Scored:
    ids = [i for i in probs if i in gold]
    if not ids:
        return Scored(0, 0.0, float("nan"), float("nan"), float("nan"))
    p = np.stack([probs[i] for i in ids])
    truth = np.array([gold[i] for i in ids])
    pred = p.argmax(1)
    return Scored(
        len(ids),
        len(ids) / max(total, 1),
        float((pred == truth).mean()),
        macro_f1(pred, truth, p.shape[1]),
        ece(p, truth),
    )


def build(llm: Path, gold_path: Path, labels: dict[str, list[str]] | None = None) -> list[TaskLabelReport]:
    gold: dict[str, dict[str, str]] = defaultdict(dict)
    for _, row in read_rows(gold_path):
        if row.get("id") and row.get("task") and row.get("label"):
            gold[str(row["task"])][str(row["id"])] = str(row["label"])
    records: dict[str, dict[str, dict[str, dict[str, float] | None]]] = defaultdict(lambda: defaultdict(dict))
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    seen_labels: dict[str, set[str]] = defaultdict(set)
    for number, row in read_rows(llm):
        try:
            task, uid, prompt = str(row["task"]), str(row["id"]), str(row["prompt_id"])
        except KeyError as exc:
            raise DataError(f"{llm}, line {number}: missing {exc.args[0]!r}") from None
        scores = row.get("scores") or ({row["label"]: 1.0} if row.get("label") else None)
        if row.get("abstained"):
            scores = None
            reasons[task][str(row["abstained"]).split(":")[0]] += 1
        records[task][prompt][uid] = scores
        seen_labels[task].update(scores or {})
    reports = []
    for task, by_prompt in sorted(records.items()):
        if task not in gold:
            continue
        names = list((labels or {}).get(task) or sorted(seen_labels[task] | set(gold[task].values())))
        index = {n: k for k, n in enumerate(names)}
        truth = {i: index[g] for i, g in gold[task].items() if g in index}
        labelled = set().union(*[set(v) for v in by_prompt.values()])
        total = len(labelled & set(truth))
        probs: dict[str, dict[str, np.ndarray]] = {}
        for prompt, by_id in by_prompt.items():
            probs[prompt] = {}
            for uid, scores in by_id.items():
                if scores:
                    v = np.array([float(scores.get(n, 0.0)) for n in names])
                    if v.sum() > 0:
                        probs[prompt][uid] = v / v.sum()
        ensemble = {}
        for uid in labelled:
            got = [probs[p][uid] for p in probs if uid in probs[p]]
            if got:
                ensemble[uid] = np.mean(got, 0)
        confusions: Counter[tuple[str, str]] = Counter()
        for uid, p in ensemble.items():
            if uid in truth and int(p.argmax()) != truth[uid]:
                confusions[(names[truth[uid]], names[int(p.argmax())])] += 1
        prompts = sorted(probs)
        agreement: dict[str, dict[str, float]] = {a: {} for a in prompts}
        kappa: dict[str, dict[str, float]] = {a: {} for a in prompts}
        for a in prompts:
            for b in prompts:
                both = [u for u in probs[a] if u in probs[b]]
                x = np.array([int(probs[a][u].argmax()) for u in both], dtype=int)
                y = np.array([int(probs[b][u].argmax()) for u in both], dtype=int)
                agreement[a][b] = float((x == y).mean()) if both else float("nan")
                kappa[a][b] = cohen_kappa(x, y, len(names))
        reports.append(
            TaskLabelReport(
                task,
                names,
                total,
                {p: _score(probs[p], truth, total) for p in prompts},
                _score(ensemble, truth, total),
                [(g, p, n) for (g, p), n in confusions.most_common(10)],
                sum(confusions.values()),
                agreement,
                kappa,
                dict(reasons[task]),
            )
        )
    if not reports:
        raise DataError(f"no task of {llm} has gold labels in {gold_path}")
    return reports


def _plots(report: TaskLabelReport, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*report.prompts, "ensemble"]
    scored = [*report.prompts.values(), report.ensemble]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [s.accuracy for s in scored], 0.4, label="accuracy")
    ax.bar(x + 0.2, [s.macro_f1 for s in scored], 0.4, label="macro-F1")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"{report.task}: each prompt and the ensemble against gold")
    ax.legend()
    fig.tight_layout()
    quality = out / f"{report.task}-prompts.png"
    fig.savefig(quality, dpi=110)
    plt.close(fig)
    prompts = list(report.prompts)
    matrix = np.array([[report.kappa[a][b] for b in prompts] for a in prompts])
    fig, ax = plt.subplots(figsize=(1.1 * len(prompts) + 2, 1.1 * len(prompts) + 1.5))
    im = ax.imshow(matrix, vmin=-0.2, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(prompts)), prompts, rotation=30, ha="right")
    ax.set_yticks(range(len(prompts)), prompts)
    for i in range(len(prompts)):
        for j in range(len(prompts)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_title(f"{report.task}: Cohen's κ between prompts")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    kappa = out / f"{report.task}-agreement.png"
    fig.savefig(kappa, dpi=110)
    plt.close(fig)
    return {"prompts": quality.name, "agreement": kappa.name}


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.4f}"


def markdown(reports: list[TaskLabelReport], images: dict[str, dict[str, str]], source: str) -> str:
    lines = ["# LLM label report", "", f"labels: `{source}`", ""]
    for r in reports:
        lines += [
            f"## {r.task} ({r.gold_n} labelled utterances with gold; {len(r.labels)} labels)",
            "",
            "| prompt | answered | coverage | accuracy | macro-F1 | ECE |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in [*r.prompts.items(), ("**ensemble**", r.ensemble)]:
            lines.append(
                f"| {name} | {s.n} | {_fmt(s.coverage)} | {_fmt(s.accuracy)} | "
                f"{_fmt(s.macro_f1)} | {_fmt(s.ece)} |"
            )
        if r.abstentions:
            lines += [
                "",
                "Abstentions by reason: " + ", ".join(f"{k}: {v}" for k, v in sorted(r.abstentions.items())),
            ]
        lines += [
            "",
            f"Confusions of the ensemble (gold → LLM), of {r.errors} errors:",
            "",
            "| gold | LLM | count | share of errors |",
            "|---|---|---|---|",
        ]
        for g, p, n in r.confusions:
            lines.append(f"| {g} | {p} | {n} | {n / max(r.errors, 1):.1%} |")
        prompts = list(r.prompts)
        lines += [
            "",
            "Agreement between prompts (raw agreement / Cohen's κ):",
            "",
            "| | " + " | ".join(prompts) + " |",
            "|---" * (len(prompts) + 1) + "|",
        ]
        for a in prompts:
            lines.append(
                f"| {a} | "
                + " | ".join(f"{r.agreement[a][b]:.2f} / {r.kappa[a][b]:.2f}" for b in prompts)
                + " |"
            )
        lines += [
            "",
            f"![each prompt]({images[r.task]['prompts']})",
            "",
            f"![agreement]({images[r.task]['agreement']})",
            "",
        ]
    return "\n".join(lines)


def write_report(llm: Path, gold: Path, out: Path, labels: dict[str, list[str]] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    reports = build(llm, gold, labels)
    images = {r.task: _plots(r, out) for r in reports}
    (out / "label-report.json").write_text(json.dumps(_no_nan([_jsonable(r) for r in reports]), indent=2))
    path = out / "label-report.md"
    path.write_text(markdown(reports, images, str(llm)))
    return path


def _jsonable(r: TaskLabelReport) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(r)


def _no_nan(value: Any) -> Any:
    """NaN (a prompt with no answer on gold) as null: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
