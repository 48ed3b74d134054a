"""Publish a finished (or partly finished) `parley train compare` grid into docs/benchmarks/.

    python benchmarks/grid_report.py runs/compare-dailydialog benchmarks/grids/dailydialog.yaml \\
        --name training-dailydialog

Summarises the grid's finished run records (runs/<run>.json) as `compare` does, and writes
docs/benchmarks/<name>.md (+ .json, + the plot): the table of mean ± std over seeds, the teacher,
the method's margin over the best baseline per budget and task in points (the paper's bar: +1.5 on
dialogue acts, +2 on sentiment), and how long each run took on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("ce_human", "ce_llm_hard", "distill", "gce")
BAR = {"dialogue_act": 1.5, "sentiment": 2.0}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--title", default=None)
    parser.add_argument("--note", default="", help="A paragraph of interpretation, written under the tables.")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    parser.add_argument(
        "--machine",
        default=None,
        help="Where the runs ran, when not on this machine (e.g. a GPU node); default: this machine.",
    )
    parser.add_argument("--compare-args", default="", help="Extra `parley train compare` options used.")
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(ROOT))
    from train.compare import load_grid, run_name, summarise, summary_table
    from train.data import budget_label, budget_order

    data, grid = load_grid(args.grid)
    summary = summarise(data, grid, args.run_dir)  # also for a grid still running: what has finished
    records = [json.loads(p.read_text()) for p in sorted((args.run_dir / "runs").glob("*.json"))]
    tasks = sorted({k.split("/")[0] for r in records for k in r["test"]})
    rows = summary["rows"]
    lines = [
        f"# {args.title or args.name}",
        "",
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')} from {len(records)} finished runs",
        f"- machine: {args.machine}"
        if args.machine
        else f"- machine: {os.cpu_count()} cores ({platform.machine()}), CPU only; other work shared the "
        "cores (test runs, a second grid), so the seconds are upper bounds",
        f"- command: `parley train compare {args.grid} --out {args.run_dir}"
        f"{' ' + args.compare_args if args.compare_args else ''}` (resumable), then "
        f"`python benchmarks/grid_report.py {args.run_dir} {args.grid} --name {args.name}`",
        f"- grid: `{args.grid}`",
        f"- total training time: {sum(r['seconds'] for r in records) / 60:.1f} min over {len(records)} runs "
        "(runs sharing a cached LLM stage do not pay for it twice)",
        "",
        "## Test scores (mean ± std over seeds)",
        "",
        *summary_table(summary, tasks, seconds=True),
    ]
    margins = []
    by = {(r["method"], r["budget"]): r for r in rows}
    for budget in sorted({r["budget"] for r in rows}, key=budget_order):
        if ("method", budget) not in by:
            continue
        m = by[("method", budget)]
        for task in tasks:
            for metric in ("accuracy", "macro_f1"):
                base = [(b, by[(b, budget)][f"{task}/{metric}"][0]) for b in BASELINES if (b, budget) in by]
                if not base:
                    continue
                best, value = max(base, key=lambda x: x[1])
                teacher = summary["teacher"].get(task, {}).get(metric)
                margins.append(
                    {
                        "budget": budget,
                        "task": task,
                        "metric": metric,
                        "method": m[f"{task}/{metric}"][0],
                        "best_baseline": best,
                        "best_baseline_value": value,
                        "points_over_best_baseline": 100 * (m[f"{task}/{metric}"][0] - value),
                        "points_over_teacher": None
                        if teacher is None
                        else 100 * (m[f"{task}/{metric}"][0] - teacher),
                        "bar": BAR.get(task),
                    }
                )
    if margins:
        lines += [
            "",
            "## The method against the best baseline and the teacher (points)",
            "",
            "| budget | task | metric | method | best baseline | Δ vs best baseline | paper's bar | Δ vs teacher |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in margins:
            teacher = "-" if g["points_over_teacher"] is None else f"{g['points_over_teacher']:+.2f}"
            bar = "-" if g["bar"] is None else f"+{g['bar']:g}"
            lines.append(
                f"| {budget_label(g['budget'])} | {g['task']} | {g['metric']} | {g['method']:.4f} | "
                f"{g['best_baseline']} {g['best_baseline_value']:.4f} | {g['points_over_best_baseline']:+.2f} | "
                f"{bar} | {teacher} |"
            )
    lines += ["", "## Seconds per run", "", "| run | seconds |", "|---|---|"]
    for r in records:
        name = run_name(r["method"], r["budget"], r["seed"], r.get("variant", ""))
        lines.append(f"| {name} | {r['seconds']:.0f} |")
    seconds = [r["seconds"] for r in records]
    if seconds:
        lines += ["", f"median {statistics.median(seconds):.0f} s, max {max(seconds):.0f} s."]
    if args.note:
        lines += ["", "## Reading", "", args.note]
    args.docs.mkdir(parents=True, exist_ok=True)
    plot = args.run_dir / "compare.png"
    if plot.exists():
        shutil.copy(plot, args.docs / f"{args.name}.png")
        lines += ["", f"![macro-F1 by method and budget]({args.name}.png)"]
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.docs / f"{args.name}.json").write_text(
        json.dumps({"summary": summary, "margins": margins, "runs": records}, indent=2)
    )
    print((args.docs / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
