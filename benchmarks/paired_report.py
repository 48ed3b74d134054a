"""Paired differences between the configurations of finished `parley train compare` grids.

    python benchmarks/paired_report.py benchmarks/grids/dailydialog-v2-mood.yaml:runs/compare-dailydialog-v2-mood \\
        benchmarks/grids/dailydialog-v2-clean.yaml:runs/compare-dailydialog-v2-clean \\
        --reference method-v2 --name training-dailydialog-v2-paired

For each grid, the reference configuration (``method-variant``) is compared with every other
configuration on the seeds both finished (same split, human budget and seed: paired), per task, on
accuracy and macro-F1: the mean over seeds of the difference, with a 95% interval from resampling
the test dialogues (train/stats.py). "ahead" means the whole interval is above zero. Writes
docs/benchmarks/<name>.md and .json.
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

ROOT = Path(__file__).resolve().parents[1]


def _config_name(record: dict[str, Any]) -> str:
    return record["method"] + (f"-{record['variant']}" if record.get("variant") else "")


def compare_grid(grid: Path, run_dir: Path, reference: str, n_boot: int) -> dict[str, Any]:
    from train.compare import load_grid
    from train.stats import paired_difference

    data, _ = load_grid(grid)
    dialogue_of = {u.id: u.dialogue_id for u in data.utterances.values()}
    records: dict[str, dict[tuple[str, int], dict[str, Any]]] = defaultdict(dict)
    for path in sorted((run_dir / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if "test_predictions" in record:
            records[_config_name(record)][(str(record["budget"]), int(record["seed"]))] = record
    if reference not in records:
        raise SystemExit(f"{run_dir}: no finished run of {reference!r} with test predictions")
    rows = []
    for other in sorted(set(records) - {reference}):
        keys = sorted(set(records[reference]) & set(records[other]))
        for budget in sorted({b for b, _ in keys}):
            seeds = [k for k in keys if k[0] == budget]
            for task, labels in data.labels.items():
                gold = {u: labels.index(g) for u, g in data.gold.get(task, {}).items() if g in labels}
                diffs = paired_difference(
                    [records[reference][k]["test_predictions"][task] for k in seeds],
                    [records[other][k]["test_predictions"][task] for k in seeds],
                    gold,
                    dialogue_of,
                    len(labels),
                    n_boot=n_boot,
                )
                for d in diffs:
                    rows.append(
                        {
                            "against": other,
                            "budget": budget,
                            "seeds": [s for _, s in seeds],
                            "task": task,
                            "metric": d.metric,
                            "difference": d.mean,
                            "low": d.low,
                            "high": d.high,
                            "per_seed": list(d.per_seed),
                            "verdict": d.verdict,
                        }
                    )
    return {"grid": str(grid), "runs": str(run_dir), "reference": reference, "rows": rows}


def markdown(results: list[dict[str, Any]], command: str, machine: str, n_boot: int) -> str:
    lines = [
        "# Training: paired differences with bootstrap intervals",
        "",
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {machine}",
        f"- command: `{command}`",
        "- what: the reference configuration minus each other one, per seed on the same split, budget",
        f"  and seed, averaged over seeds; 95% interval from {n_boot:,} resamples of the test dialogues",
        "  (train/stats.py). Points (×100). *ahead* / *behind*: the whole interval is above / below 0.",
        "- the interval is over test dialogues only: it does not cover training variation across seeds,",
        "  which the per-seed column shows; with few seeds, a verdict is only as firm as those agree.",
        "",
    ]
    for result in results:
        lines += [f"## {result['reference']} — `{result['grid']}`", ""]
        lines += [
            "| against | budget | seeds | task | metric | difference | 95% interval | per seed | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            per_seed = ", ".join(f"{100 * v:+.1f}" for v in r["per_seed"])
            lines.append(
                f"| {r['against']} | {r['budget']} | {len(r['seeds'])} | {r['task']} | {r['metric']} | "
                f"{100 * r['difference']:+.2f} | [{100 * r['low']:+.2f}, {100 * r['high']:+.2f}] | "
                f"{per_seed} | {r['verdict']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("grids", nargs="+", help="GRID.yaml:RUN_DIR pairs")
    parser.add_argument("--reference", required=True, help="the configuration compared, e.g. method-v2")
    parser.add_argument("--name", required=True)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    parser.add_argument(
        "--machine",
        default=f"{os.cpu_count()} cores ({platform.machine()}), CPU only",
    )
    args = parser.parse_args()
    results = []
    for pair in args.grids:
        grid, _, run_dir = pair.partition(":")
        results.append(compare_grid(Path(grid), Path(run_dir), args.reference, args.n_boot))
    command = "python benchmarks/paired_report.py " + " ".join(args.grids) + f" --reference {args.reference}"
    command += f" --name {args.name}"
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    (args.docs / f"{args.name}.md").write_text(markdown(results, command, args.machine, args.n_boot))
    print(args.docs / f"{args.name}.md")


if __name__ == "__main__":
    main()
