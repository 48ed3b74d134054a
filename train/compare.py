"""``parley train compare``: a grid of methods × human budgets × seeds, resumable, summarised.

    data: {utterances: …, gold: …, llm: …, labels: …}
    tasks: [dialogue_act, sentiment]          # optional: all tasks in labels.json
    methods: [method, ce_human, ce_llm_hard, distill, gce]
    budgets: [0.05, 0.2, 20/class]           # fractions of training dialogues, or N/class
    seeds: [1, 2, 3]
    fit: {pretrain_epochs: 1, finetune_epochs: 5, max_length: 64}   # any FitConfig field
    variants: {tau0: {tau: 0.0}, hinge: {form: hinge}}  # optional: named fit overrides (ablations)
    sample: {train: 40, test: 10}             # optional: a seeded sample of dialogues per split
    perturb: {dialogue_bias: 0.3}             # optional: perturbed LLM labels (train/perturb.py)

Each run's metrics are written to ``<out>/runs/<method>[-<variant>]-b<budget>-s<seed>.json`` as soon
as it ends; a rerun skips every run whose file exists, so an interrupted grid resumes where it
stopped. The LLM-label stage does not depend on the human budget, so it is cached under
``<out>/pretrained/`` and shared by the budgets of one (method, variant, seed). The summary (mean ±
standard deviation over seeds, the teacher on the same test utterances) goes to ``compare.md``,
``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from train.data import (
    Budget,
    Dataset,
    budget_label,
    budget_order,
    load_dataset,
    parse_budget,
    restrict,
    select_human,
    split_by_dialogue,
)
from train.errors import TrainError
from train.evaluate import macro_f1
from train.loop import METHODS, FitConfig, Trainer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Grid:
    methods: list[str]
    budgets: list[Budget]
    seeds: list[int]
    fit: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"": {}})

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Grid:
        unknown_methods = set(spec.get("methods", [])) - set(METHODS)
        if unknown_methods:
            raise TrainError(f"unknown methods {sorted(unknown_methods)}; use {list(METHODS)}")
        allowed = {f.name for f in fields(FitConfig)} - {"method", "seed"}
        variants = dict(spec.get("variants") or {"": {}})
        for name, overrides in [("fit", spec.get("fit", {}))] + [
            (f"variant {k!r}", v or {}) for k, v in variants.items()
        ]:
            if not isinstance(overrides, dict):
                raise TrainError(f"{name} must be a mapping of fit settings")
            unknown = set(overrides) - allowed
            if unknown:
                raise TrainError(
                    f"{name}: unknown fit settings {sorted(unknown)}; allowed: {sorted(allowed)}"
                )
        grid = cls(
            list(spec.get("methods", METHODS)),
            [parse_budget(b) for b in spec.get("budgets", [0.2])],
            [int(s) for s in spec.get("seeds", [13])],
            dict(spec.get("fit", {})),
            {str(k): dict(v or {}) for k, v in variants.items()},
        )
        if not grid.methods or not grid.budgets or not grid.seeds:
            raise TrainError("the grid needs at least one method, one budget and one seed")
        return grid

    def runs(self) -> list[tuple[str, str, Budget, int]]:
        return [
            (v, m, b, s)
            for v in self.variants
            for m in self.methods
            for b in self.budgets
            for s in self.seeds
        ]

    def config(self, variant: str, method: str, seed: int) -> FitConfig:
        return FitConfig(method=method, seed=seed, **{**self.fit, **self.variants[variant]})  # type: ignore[arg-type]


def run_name(method: str, budget: Budget, seed: int, variant: str = "") -> str:
    b = budget_label(budget).replace("/class", "pc")
    return f"{method}{'-' + variant if variant else ''}-b{b}-s{seed}"


# Settings that only touch fine-tuning: runs differing only in these share the LLM stage.
_FINETUNE_ONLY = frozenset(
    {"finetune_epochs", "joint_lambda", "joint_scope", "head_calibration", "version", "model_name"}
)


def _scores_digest(scores: dict[str, list[float]]) -> str:
    """The ensemble's content, not just its size: a perturbed ensemble must not reuse a clean cache."""
    ids = sorted(scores)
    h = hashlib.sha256("\n".join(ids).encode())
    h.update(np.asarray([scores[i] for i in ids], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def pretrain_key(config: FitConfig, data: Dataset) -> str:
    """A name for the LLM-label stage of ``config`` on ``data``, equal across human budgets."""
    defaults = asdict(FitConfig(method=config.method, seed=config.seed))
    # only settings off their defaults: a new setting (with a default) keeps existing keys valid
    settings = {k: v for k, v in asdict(config).items() if k not in _FINETUNE_ONLY and v != defaults[k]}
    if config.pretrain_epochs > 1:  # stages cached before pretrain_select existed picked by macro-F1
        settings["pretrain_select"] = config.pretrain_select
    digest = hashlib.sha256(
        json.dumps(
            {
                "settings": settings,
                "utterances": sorted(data.utterances),
                "tasks": data.labels,
                "llm": {t: _scores_digest(e) for t, e in data.ensemble.items()},
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return f"{config.method}-s{config.seed}-{digest}"


def run_grid(
    data: Dataset,
    grid: Grid,
    out: Path,
    model_factory: Callable[[], Any] | None = None,
    on_run: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run what is missing, then summarise every run found under ``out/runs``.

    ``only``: shell patterns of run names; just the matching runs are run, pattern by pattern in
    the order given (so the most telling runs come first)."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    planned = grid.runs()
    if only:
        names = {r: run_name(r[1], r[2], r[3], r[0]) for r in planned}
        ordered = [r for pattern in only for r in planned if fnmatch.fnmatchcase(names[r], pattern)]
        if not ordered:
            raise TrainError(f"--only {list(only)} matches none of the grid's runs: {sorted(names.values())}")
        planned = list(dict.fromkeys(ordered))
    for variant, method, budget, seed in planned:
        path = runs_dir / f"{run_name(method, budget, seed, variant)}.json"
        if path.exists():
            continue
        if on_run:
            on_run(path.stem)
        split = split_by_dialogue(data, seed=seed)
        config = grid.config(variant, method, seed)
        trainer = Trainer(
            data,
            split,
            select_human(data, split.train, budget, seed),
            config,
            model=model_factory() if model_factory else None,
        )
        result = trainer.fit(
            out / "checkpoints" / path.stem,
            write=False,
            # The trainer's data: per-prompt calibration on the budget changes the LLM stage's labels.
            pretrained=out / "pretrained" / f"{pretrain_key(config, trainer.data)}.pt",
        )
        test_utts, test_probs = trainer.predict(split.test)
        dev_utts, dev_probs = trainer.predict(split.dev)
        calibration = _calibration(data, (dev_utts, dev_probs), (test_utts, test_probs))
        # The probabilities themselves, so calibrators can be compared after the fact without
        # retraining (benchmarks/calibration_report.py); written before the record, which marks the end.
        parts = {"dev": (dev_utts, dev_probs), "test": (test_utts, test_probs)}
        write_probabilities(out / "probs" / f"{path.stem}.npz", parts)
        record = {
            "method": method,
            "variant": variant,
            "overrides": grid.variants[variant],
            "budget": budget,
            "seed": seed,
            "seconds": result.seconds,
            "test": trainer.evaluate(split.test),
            "dev": result.metrics,
            "history": result.history,
            # Per-utterance test predictions, for paired comparisons between runs (train/stats.py).
            "test_predictions": {
                t: {u.id: int(p.argmax()) for u, p in zip(test_utts, probs, strict=True)}
                for t, probs in test_probs.items()
            },
            "temperatures": trainer.temperatures,
            "head_offsets": trainer.head_offsets,
            "calibration": calibration,
        }
        path.write_text(json.dumps(record, indent=2))  # written whole, last: a run exists once it ended
        log.info("run done", run=path.stem, seconds=round(result.seconds, 1), test=record["test"])
    return summarise(data, grid, out)


def _gold_rows(
    utts: list[Any], probs: np.ndarray, gold: dict[str, str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    keep = [(k, labels.index(gold[u.id])) for k, u in enumerate(utts) if gold.get(u.id) in labels]
    idx = np.array([k for k, _ in keep], dtype=np.int64)
    return probs[idx], np.array([y for _, y in keep], dtype=np.int64)


Predictions = tuple[list[Any], dict[str, np.ndarray]]


def _calibration(data: Dataset, dev: Predictions, test: Predictions) -> dict[str, dict[str, float]]:
    """Per task: the student's test ECE, and its test ECE after a temperature fitted on dev: by plain
    NLL (``temperature``, ``ece_scaled``, as runs have always recorded) and with the evaluation's
    prior on log T (``temperature_map``, ``ece_scaled_map``)."""
    from train.evaluate import TEMPERATURE_PRIOR, ece, fit_temperature, scale

    out = {}
    for task, labels in data.labels.items():
        gold = data.gold.get(task, {})
        dev_p, dev_y = _gold_rows(dev[0], dev[1][task], gold, labels)
        test_p, test_y = _gold_rows(test[0], test[1][task], gold, labels)
        if len(test_y) == 0:
            continue
        temperature = fit_temperature(dev_p, dev_y)
        shrunk = fit_temperature(dev_p, dev_y, prior=TEMPERATURE_PRIOR)
        out[task] = {
            "ece": ece(test_p, test_y),
            "temperature": temperature,
            "ece_scaled": ece(scale(test_p, temperature), test_y),
            "temperature_map": shrunk,
            "ece_scaled_map": ece(scale(test_p, shrunk), test_y),
        }
    return out


def write_probabilities(path: Path, parts: dict[str, Predictions]) -> None:
    """``<part>/ids`` and ``<part>/<task>`` (float32 [N, C]) per part, as one compressed .npz."""
    arrays: dict[str, np.ndarray] = {}
    for part, (utts, probs) in parts.items():
        arrays[f"{part}/ids"] = np.array([u.id for u in utts], dtype=str)
        for task, p in probs.items():
            arrays[f"{part}/{task}"] = p.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)  # type: ignore[arg-type]
    partial.replace(path)


def read_probabilities(path: Path) -> dict[str, tuple[list[str], dict[str, np.ndarray]]]:
    """What ``write_probabilities`` wrote: part → (utterance ids, task → probabilities)."""
    with np.load(path) as z:
        parts: dict[str, tuple[list[str], dict[str, np.ndarray]]] = {}
        for key in z.files:
            part, name = key.split("/", 1)
            ids, probs = parts.setdefault(part, ([], {}))
            if name == "ids":
                ids.extend(z[key].tolist())
            else:
                probs[name] = z[key]
    return parts


def _teacher(data: Dataset, seed: int) -> dict[str, dict[str, float]]:
    """The LLM ensemble scored on the test utterances that have both gold and ensemble labels."""
    split = split_by_dialogue(data, seed=seed)
    test = set(split.test)
    out = {}
    for task, names in data.labels.items():
        gold, ens = data.gold.get(task, {}), data.ensemble.get(task, {})
        ids = [
            u.id for u in data.utterances.values() if u.dialogue_id in test and u.id in gold and u.id in ens
        ]
        if ids:
            truth = np.array([names.index(gold[i]) for i in ids])
            pred = np.array([int(np.argmax(ens[i])) for i in ids])
            out[task] = {
                "accuracy": float((pred == truth).mean()),
                "macro_f1": macro_f1(pred, truth, len(names)),
            }
    return out


def summarise(data: Dataset, grid: Grid, out: Path) -> dict[str, Any]:
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    rows = []
    for variant, method, budget in [
        (v, m, b) for v in grid.variants for m in grid.methods for b in grid.budgets
    ]:
        mine = [
            r
            for r in records
            if r["method"] == method
            and r.get("variant", "") == variant
            and r["budget"] == budget
            and r["seed"] in grid.seeds
        ]
        if mine:
            row: dict[str, Any] = {
                "method": f"{method} ({variant})" if variant else method,
                "budget": budget,
                "runs": len(mine),
                "seconds": float(np.mean([r["seconds"] for r in mine])),
            }
            for task in data.labels:
                for metric in ("accuracy", "macro_f1"):
                    values = [r["test"][f"{task}/{metric}"] for r in mine]
                    row[f"{task}/{metric}"] = (float(np.mean(values)), float(np.std(values)))
            rows.append(row)
    summary = {"rows": rows, "teacher": _teacher(data, grid.seeds[0])}
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    (out / "compare.md").write_text(_markdown(summary, list(data.labels)))
    _plot(summary, list(data.labels), out / "compare.png")
    return summary


def summary_table(summary: dict[str, Any], tasks: list[str], seconds: bool = False) -> list[str]:
    """Markdown rows: mean ± std per (method, budget), then the teacher; optionally seconds per run."""
    extra = " mean s/run |" if seconds else ""
    lines = [
        "| method | human budget | runs | "
        + " | ".join(f"{t} accuracy | {t} macro-F1" for t in tasks)
        + " |"
        + extra,
        "|" + "---|" * (3 + 2 * len(tasks) + int(seconds)),
    ]
    for r in summary["rows"]:
        cells = " | ".join(
            f"{r[f'{t}/accuracy'][0]:.4f} ± {r[f'{t}/accuracy'][1]:.4f} | "
            f"{r[f'{t}/macro_f1'][0]:.4f} ± {r[f'{t}/macro_f1'][1]:.4f}"
            for t in tasks
        )
        time = f" {r['seconds']:.0f} |" if seconds else ""
        lines.append(f"| {r['method']} | {budget_label(r['budget'])} | {r['runs']} | {cells} |{time}")
    teacher = summary["teacher"]
    if teacher:
        cells = " | ".join(
            f"{teacher[t]['accuracy']:.4f} | {teacher[t]['macro_f1']:.4f}" if t in teacher else "- | -"
            for t in tasks
        )
        lines.append(f"| LLM ensemble (teacher) | - | - | {cells} |" + (" - |" if seconds else ""))
    return lines


def _markdown(summary: dict[str, Any], tasks: list[str]) -> str:
    lines = ["# Method comparison (test split, mean ± std over seeds)", "", *summary_table(summary, tasks)]
    return "\n".join(lines) + "\n\n![macro-F1 by method and budget](compare.png)\n"


def _plot(summary: dict[str, Any], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in summary["rows"]}, key=budget_order)
    methods = list(dict.fromkeys(r["method"] for r in summary["rows"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, task in zip(axes[0], tasks, strict=True):
        for k, method in enumerate(methods):
            values = [
                next(
                    (
                        r[f"{task}/macro_f1"]
                        for r in summary["rows"]
                        if r["method"] == method and r["budget"] == b
                    ),
                    (math.nan, 0.0),
                )
                for b in budgets
            ]
            ax.bar(
                [i + k * width for i in range(len(budgets))],
                [v[0] for v in values],
                width,
                yerr=[v[1] for v in values],
                label=method,
                capsize=2,
            )
        if task in summary["teacher"]:
            ax.axhline(
                summary["teacher"][task]["macro_f1"], color="black", linestyle="--", label="LLM teacher"
            )
        ax.set_xticks(
            [i + width * (len(methods) - 1) / 2 for i in range(len(budgets))],
            [budget_label(b) for b in budgets],
        )
        ax.set_xlabel("human-label budget (share of training dialogues, or labels per class)")
        ax.set_ylabel("test macro-F1")
        ax.set_title(task)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_grid(spec_path: Path) -> tuple[Dataset, Grid]:
    import yaml

    spec = yaml.safe_load(spec_path.read_text())
    if not isinstance(spec, dict) or "data" not in spec:
        raise TrainError(
            f"{spec_path} must be a mapping with a 'data' section (utterances, gold, llm, labels)"
        )
    base = spec_path.parent
    d = spec["data"]
    labels = json.loads((base / d["labels"]).read_text())
    chosen = {t: labels[t] for t in spec.get("tasks", labels)}
    data = load_dataset(
        base / d["utterances"],
        chosen,
        base / d["gold"],
        base / d["llm"] if d.get("llm") else None,
        skip_tasks=frozenset(labels) - frozenset(chosen),
    )
    if spec.get("sample"):
        data = restrict(data, {str(k): int(v) for k, v in spec["sample"].items()})
    if spec.get("perturb"):
        from train.perturb import apply

        data = apply(data, dict(spec["perturb"]))
    return data, Grid.from_dict(spec)
