"""Test ECE of finished `parley train compare` runs under several calibrators, after the fact.

    python benchmarks/calibration_report.py \\
        benchmarks/grids/dailydialog-v2-clean.yaml:runs/compare-dailydialog-v2-clean \\
        --prior 0.1 --prior 0.2 --name training-calibration

Each run writes its development and test probabilities to ``<run_dir>/probs/<run>.npz``
(train/compare.py); this script fits each calibrator on the development dialogues' gold labels and
measures the test ECE (15 equal-width bins, train/evaluate.py):

- ``raw``: the student as trained;
- ``dev T``: one temperature per task minimising the development NLL (what every run records);
- ``dev T, prior σ``: the same fit with a normal prior on log T (a MAP estimate that a small
  development set can only move as far as its evidence carries);
- ``oracle T``: fitted on the test rows themselves, the floor any temperature can reach.

Per configuration and task: the mean over runs, the worst run, and how many runs reach ECE ≤ 0.03.
Writes docs/benchmarks/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.03


def _rows(
    ids: list[str], probs: np.ndarray, gold: dict[str, str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    keep = [(k, labels.index(gold[u])) for k, u in enumerate(ids) if gold.get(u) in labels]
    return probs[[k for k, _ in keep]], np.array([y for _, y in keep], dtype=np.int64)


def score_runs(grid: Path, run_dir: Path, priors: list[float]) -> list[dict[str, Any]]:
    """One row per (run, task): the test ECE of every calibrator and the temperatures they chose."""
    from train.compare import load_grid, read_probabilities
    from train.evaluate import ece, fit_temperature, scale

    data, _ = load_grid(grid)
    rows = []
    kept = {p.stem for p in (run_dir / "probs").glob("*.npz")}
    without = sorted(p.stem for p in (run_dir / "runs").glob("*.json") if p.stem not in kept)
    if without:  # runs from before probabilities were kept: say so, the table does not cover them
        print(
            f"{run_dir}: {len(without)} finished run(s) without probabilities left out: {', '.join(without)}"
        )
    for path in sorted((run_dir / "probs").glob("*.npz")):
        record_path = run_dir / "runs" / f"{path.stem}.json"
        if not record_path.exists():
            continue  # the run did not finish
        record = json.loads(record_path.read_text())
        config = record["method"] + (f"-{record['variant']}" if record.get("variant") else "")
        parts = read_probabilities(path)
        for task, labels in data.labels.items():
            gold = data.gold.get(task, {})
            dev_p, dev_y = _rows(parts["dev"][0], parts["dev"][1][task], gold, labels)
            test_p, test_y = _rows(parts["test"][0], parts["test"][1][task], gold, labels)
            if len(test_y) == 0 or len(dev_y) == 0:
                continue
            temperatures = {"raw": 1.0, "dev T": fit_temperature(dev_p, dev_y)}
            for sigma in priors:
                temperatures[f"dev T, prior {sigma:g}"] = fit_temperature(dev_p, dev_y, prior=sigma)
            temperatures["oracle T"] = fit_temperature(test_p, test_y)
            rows.append(
                {
                    "run": path.stem,
                    "config": config,
                    "seed": record["seed"],
                    "task": task,
                    "dev_rows": len(dev_y),
                    "test_rows": len(test_y),
                    "temperature": temperatures,
                    "ece": {name: ece(scale(test_p, t), test_y) for name, t in temperatures.items()},
                }
            )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["config"], r["task"])].append(r)
        groups[("all", r["task"])].append(r)
    out = []
    for (config, task), members in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        calibrators = list(members[0]["ece"])
        out.append(
            {
                "config": config,
                "task": task,
                "runs": len(members),
                "mean": {c: float(np.mean([m["ece"][c] for m in members])) for c in calibrators},
                "worst": {c: float(np.max([m["ece"][c] for m in members])) for c in calibrators},
                "at_goal": {c: sum(m["ece"][c] <= GOAL for m in members) for c in calibrators},
            }
        )
    return out


def markdown(summary: list[dict[str, Any]], command: str, machine: str, dev_rows: str) -> str:
    calibrators = list(summary[0]["mean"]) if summary else []
    lines = [
        "# Training: calibration after the fact",
        "",
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {machine}",
        f"- command: `{command}`",
        "- what: test ECE (15 equal-width bins) of each run's student under each calibrator, fitted on",
        f"  the development dialogues' gold labels ({dev_rows} rows per run and task); *oracle T* is fitted",
        "  on the test rows themselves, the floor any single temperature can reach.",
        f"- each cell: mean over runs / worst run / runs with ECE ≤ {GOAL}.",
        "",
        "| configuration | task | runs | " + " | ".join(calibrators) + " |",
        "|---|---|---|" + "---|" * len(calibrators),
    ]
    for s in summary:
        cells = [f"{s['mean'][c]:.3f} / {s['worst'][c]:.3f} / {s['at_goal'][c]}" for c in calibrators]
        name = "**every run**" if s["config"] == "all" else s["config"]
        lines.append(f"| {name} | {s['task']} | {s['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("grids", nargs="+", help="GRID.yaml:RUN_DIR pairs")
    parser.add_argument("--prior", type=float, action="append", default=[], help="σ of the prior on log T")
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores ({platform.machine()}), CPU only")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for pair in args.grids:
        grid, _, run_dir = pair.partition(":")
        rows += score_runs(Path(grid), Path(run_dir), args.prior)
    if not rows:
        raise SystemExit("no finished run with probabilities (<run_dir>/probs/*.npz) found")
    summary = summarise(rows)
    dev = sorted({r["dev_rows"] for r in rows})
    command = "python benchmarks/calibration_report.py " + " ".join(args.grids)
    command += "".join(f" --prior {p:g}" for p in args.prior) + f" --name {args.name}"
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=2))
    (args.docs / f"{args.name}.md").write_text(
        markdown(summary, command, args.machine, f"{dev[0]}–{dev[-1]}" if len(dev) > 1 else str(dev[0]))
    )
    print(args.docs / f"{args.name}.md")


if __name__ == "__main__":
    main()
