"""Every method's test macro-F1 against the strength of mood contagion (β), from finished grids.

    python benchmarks/mood_sweep.py \\
        0:runs/compare-dailydialog-v2-clean 0.5:runs/compare-dailydialog-v2-mood05 \\
        1:runs/compare-dailydialog-v2-mood 2:runs/compare-dailydialog-v2-mood2 \\
        --name training-dailydialog-mood-sweep

Each argument is ``β:run_dir`` of a `parley train compare` grid that differs from the others only in
``perturb: {mood: β}`` (β = 0: clean labels). Per configuration (method and variant), per task: the
mean and standard deviation over the seeds that finished, at each β. Writes
docs/benchmarks/<name>.md, .json and .png (one panel per task). A configuration is only drawn at the
β values where it ran.
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


def collect(points: list[tuple[float, Path]], configs: set[str] | None) -> dict[str, Any]:
    """{config: {task: [[β, mean, std, seeds], ...]}} over the grids' finished run records."""
    scores: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for beta, run_dir in points:
        for path in sorted((run_dir / "runs").glob("*.json")):
            record = json.loads(path.read_text())
            if "test" not in record:
                continue
            config = record["method"] + (f"-{record['variant']}" if record.get("variant") else "")
            if configs is not None and config not in configs:
                continue
            for key, value in record["test"].items():
                task, _, metric = key.partition("/")
                if metric == "macro_f1":
                    scores[config][task].setdefault(beta, []).append(float(value))
    return {
        config: {
            task: [
                [beta, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)]
                for beta, v in sorted(by_beta.items())
            ]
            for task, by_beta in tasks.items()
        }
        for config, tasks in sorted(scores.items())
    }


def tasks_of(curves: dict[str, Any]) -> list[str]:
    return sorted({task for tasks in curves.values() for task in tasks})


def plot(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks_drawn = tasks_of(curves)
    fig, axes = plt.subplots(1, len(tasks_drawn), figsize=(5.5 * len(tasks_drawn), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks_drawn, strict=True):
        for config, tasks in curves.items():
            points = tasks.get(task, [])
            if points:
                xs, ys, es = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=config)
        ax.set_title(f"{task}: test macro-F1")
        ax.set_xlabel("mood contagion β")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any]) -> str:
    betas = sorted({p[0] for tasks in report["curves"].values() for pts in tasks.values() for p in pts})
    lines = [
        f"# {report['name']}",
        "",
        f"- written: {report['date']} from {report['runs']} finished runs",
        f"- machine: {report['machine']}",
        f"- command: `{report['command']}`",
        "- grids: " + ", ".join(f"β = {b:g}: `{d}`" for b, d in report["points"]),
        "",
        f"![macro-F1 against β]({report['name']}.png)",
        "",
    ]
    for task in tasks_of(report["curves"]):
        lines += [
            f"## {task}: test macro-F1, mean ± std over seeds (seeds in brackets)",
            "",
            "| configuration | " + " | ".join(f"β = {b:g}" for b in betas) + " |",
            "|---|" + "---|" * len(betas),
        ]
        for config, tasks in report["curves"].items():
            at = {p[0]: p for p in tasks.get(task, [])}
            cells = [f"{at[b][1]:.3f} ± {at[b][2]:.3f} ({at[b][3]})" if b in at else "" for b in betas]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("points", nargs="+", help="β:run_dir of each grid")
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--configs",
        default="method-v2,method,distill,ce_llm_hard",
        help="Configurations to draw (comma-separated).",
    )
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    args = parser.parse_args()
    points = []
    for item in args.points:
        beta, _, run_dir = item.partition(":")
        if not run_dir or not Path(run_dir, "runs").is_dir():
            parser.error(f"{item!r}: expected β:run_dir with finished runs under run_dir/runs")
        points.append((float(beta), Path(run_dir)))
    curves = collect(points, set(args.configs.split(",")) if args.configs else None)
    if not curves:
        parser.error(f"no finished run of {args.configs} in {', '.join(args.points)}")
    report = {
        "name": args.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores ({platform.machine()}), CPU only",
        "command": "python benchmarks/mood_sweep.py " + " ".join(args.points) + f" --name {args.name}",
        "points": [(b, str(d)) for b, d in points],
        "runs": sum(p[3] for tasks in curves.values() for p in tasks.get(tasks_of(curves)[0], [])),
        "curves": curves,
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.docs / f"{args.name}.md").write_text(render(report))
    plot(curves, args.docs / f"{args.name}.png")
    print(render(report))


if __name__ == "__main__":
    main()
