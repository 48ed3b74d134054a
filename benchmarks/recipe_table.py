"""The table that chooses the default recipe: every configuration against the best baseline, at every
noise level and task of every corpus, from finished `parley train compare` grids.

    python benchmarks/recipe_table.py \\
        dailydialog:0:runs/compare-dailydialog-v2-clean dailydialog:2:runs/compare-dailydialog-v2-mood2 \\
        swda:0:runs/compare-swda-v2-clean swda:2:runs/compare-swda-v2-mood2 --name training-recipe

Each argument is ``corpus:β:run_dir``. A column is one (corpus, β, task); a cell the mean test
macro-F1 over the seeds that every baseline of that grid finished (a configuration short of one of
them is left out of the column, so a column compares like with like), and below each configuration's row its margin over the column's best baseline (the best
of the plain LLM-using baselines: distill, ce_llm_hard, gce). A configuration's **worst margin** is
its smallest over the columns: the recipe goal asks it to be ≥ +2 points everywhere, and the
default is the configuration whose worst margin is largest. Writes docs/benchmarks/<name>.md and
.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("distill", "ce_llm_hard", "gce")


def _records(run_dir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """configuration → seed → test metrics of the finished runs of one grid."""
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for path in sorted((run_dir / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if "test" in record:
            config = record["method"] + (f"-{record['variant']}" if record.get("variant") else "")
            out[config][int(record["seed"])] = record["test"]
    return out


def build(points: list[tuple[str, float, Path]], configs: list[str] | None) -> dict[str, Any]:
    columns: list[dict[str, Any]] = []
    for corpus, beta, run_dir in points:
        records = _records(run_dir)
        present = [c for c in (configs or sorted(records)) if c in records]
        anchors = [c for c in present if c in BASELINES] or present
        seeds = sorted(set.intersection(*(set(records[c]) for c in anchors))) if anchors else []
        if not seeds:
            raise SystemExit(f"{run_dir}: no seed that every baseline of {anchors} finished")
        # a configuration short of the baselines' seeds is left out of this column, not averaged apart
        chosen = [c for c in present if set(seeds) <= set(records[c])]
        tasks = sorted({k.split("/")[0] for c in chosen for s in seeds for k in records[c][s]})
        for task in tasks:
            key = f"{task}/macro_f1"
            means = {
                c: statistics.fmean(records[c][s][key] for s in seeds)
                for c in chosen
                if all(key in records[c][s] for s in seeds)
            }
            baselines = {c: v for c, v in means.items() if c in BASELINES}
            best = max(baselines, key=baselines.__getitem__) if baselines else None
            columns.append(
                {
                    "corpus": corpus,
                    "beta": beta,
                    "task": task,
                    "seeds": seeds,
                    "means": means,
                    "best_baseline": best,
                    "margins": {c: v - means[best] for c, v in means.items()} if best else {},
                }
            )
    names = sorted({c for col in columns for c in col["means"]})
    worst = {
        c: min(col["margins"][c] for col in columns if c in col["margins"])
        for c in names
        if any(c in col["margins"] for col in columns)
    }
    covered = {c: sum(c in col["margins"] for col in columns) for c in worst}
    # every column first: a configuration missing some is ranked after those that ran them all
    ranking = sorted((c for c in worst if c not in BASELINES), key=lambda c: (-covered[c], -worst[c]))
    return {"columns": columns, "worst_margin": worst, "ranking": ranking}


def markdown(table: dict[str, Any], command: str, machine: str) -> str:
    columns = table["columns"]
    head = [f"{c['corpus']} β={c['beta']:g} {c['task']} ({len(c['seeds'])} seeds)" for c in columns]
    lines = [
        "# Training: choosing the default recipe",
        "",
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {machine}",
        f"- command: `{command}`",
        "- what: mean test macro-F1 over the seeds every baseline of a grid finished; beside it, in",
        "  points, the margin over that column's best plain baseline (marked ◆). *worst margin*: the",
        "  smallest over the columns. Rows: best worst margin first, then the baselines.",
        "",
        "| configuration | " + " | ".join(head) + " | worst margin |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    order = table["ranking"] + sorted(c for c in table["worst_margin"] if c in BASELINES)
    for config in order:
        cells = []
        for col in columns:
            if config not in col["means"]:
                cells.append("")
                continue
            mark = " ◆" if config == col["best_baseline"] else ""
            margin = col["margins"].get(config)
            extra = f" ({100 * margin:+.1f})" if margin is not None and config != col["best_baseline"] else ""
            cells.append(f"{col['means'][config]:.3f}{mark}{extra}")
        covered = sum(config in col["margins"] for col in columns)
        partial = f" ({covered} of {len(columns)} columns)" if covered < len(columns) else ""
        lines.append(
            f"| {config} | " + " | ".join(cells) + f" | {100 * table['worst_margin'][config]:+.1f}{partial} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("points", nargs="+", help="corpus:β:run_dir of each grid")
    parser.add_argument("--configs", default="", help="Configurations to compare (comma-separated; all).")
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores ({platform.machine()}), CPU only")
    args = parser.parse_args()
    points = []
    for item in args.points:
        corpus, beta, run_dir = [*item.split(":", 2), "", ""][:3]
        if not run_dir or not Path(run_dir, "runs").is_dir():
            parser.error(f"{item!r}: expected corpus:β:run_dir with finished runs under run_dir/runs")
        points.append((corpus, float(beta), Path(run_dir)))
    configs = [c for c in args.configs.split(",") if c] or None
    table = build(points, configs)
    command = "python benchmarks/recipe_table.py " + " ".join(args.points)
    command += (f" --configs {args.configs}" if configs else "") + f" --name {args.name}"
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(table, indent=2) + "\n")
    text = markdown(table, command, args.machine)
    (args.docs / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
