"""Local LLM labelling on this machine: throughput of SmolLM2-135M-Instruct (CPU) through the default
prompt bank, and the quality of its labels against gold on a ../shared/data sample.

    python benchmarks/label_local.py --data ../shared/data/dailydialog --dialogues 10

Takes the first N dialogues of the ``test`` split (whole dialogues, so the context prompt has its
previous turns), labels them with each prompt of the default bank in turn (a fresh answer cache per
prompt, so nothing is free), times each prompt, then scores every prompt and the ensemble against
the gold labels with the same code as ``parley train label-report``. The sample and the labels stay
under --work (never in the repository); the tables go to docs/benchmarks/labelling-local.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/dailydialog")
    parser.add_argument("--task", default="dialogue_act", help="a task shipped in train/label/tasks")
    parser.add_argument("--dialogues", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/bench-label")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks")
    args = parser.parse_args()

    import torch

    from train.data import load_utterances
    from train.label.cache import AnswerCache
    from train.label.causal_lm import load_causal_lm
    from train.label.local import LocalBackend
    from train.label.report import build, write_report
    from train.label.run import label
    from train.label.spec import PromptBank, read_bank, read_task

    task = read_task(args.task)
    utterances = load_utterances(args.data / "utterances.jsonl")
    dialogues = sorted({u.dialogue_id for u in utterances.values() if u.split == "test"})[: args.dialogues]
    sample = {k: u for k, u in utterances.items() if u.dialogue_id in set(dialogues)}
    args.work.mkdir(parents=True, exist_ok=True)
    gold = args.work / "gold.jsonl"
    with gold.open("w") as f:
        for line in (args.data / "gold.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row["id"] in sample and row["task"] == task.name:
                f.write(line + "\n")

    started = time.perf_counter()
    loaded = load_causal_lm(None)
    load_s = time.perf_counter() - started
    bank = read_bank(None)
    labels = {task.name: list(task.labels)}
    card = json.loads((args.data / "card.json").read_text())
    modes = {}
    for calibrate in (False, True):
        mode = "calibrated" if calibrate else "raw"
        timings = []
        merged = args.work / mode / "all" / "llm_labels.jsonl"
        merged.parent.mkdir(parents=True, exist_ok=True)
        with merged.open("w") as out:
            for prompt in bank.for_task(task.name):
                folder = args.work / mode / prompt.id
                shutil.rmtree(folder, ignore_errors=True)
                backend = LocalBackend(loaded=loaded, batch_size=args.batch_size, calibrate=calibrate)
                t0 = time.perf_counter()
                summary = asyncio.run(
                    label(
                        sample,
                        [task],
                        PromptBank((prompt,)),
                        backend,
                        AnswerCache(folder / "cache.sqlite"),
                        folder,
                        batch_size=32,
                        progress=False,
                    )
                )
                seconds = time.perf_counter() - t0
                timings.append(
                    {
                        "prompt": prompt.id,
                        "requests": summary.backend_calls,
                        "seconds": seconds,
                        "requests_per_s": summary.backend_calls / seconds,
                        "mean_prompt_tokens": summary.prompt_tokens / max(summary.backend_calls, 1),
                    }
                )
                print(mode, json.dumps(timings[-1]), flush=True)
                out.write((folder / "llm_labels.jsonl").read_text())
        write_report(merged, gold, args.work / mode / "report", labels)
        [report] = build(merged, gold, labels)
        total = sum(t["seconds"] for t in timings)
        modes[mode] = {
            "prompts": timings,
            "bank_seconds": total,
            "bank_utterances_per_s": len(sample) / total,
            "quality": {
                name: vars(s) for name, s in [*report.prompts.items(), ("ensemble", report.ensemble)]
            },
            "kappa": report.kappa,
            "confusions": report.confusions,
        }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), CPU only, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/label_local.py " + " ".join(sys.argv[1:]),
        "revision": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "model": loaded[2],
        "model_load_s": load_s,
        "utterances": len(sample),
        "dialogues": len(dialogues),
        "task": task.name,
        "modes": modes,
        "simulated_teacher_on_test": card["tasks"][task.name]["teacher_on_test"],
        "majority_share": card["tasks"][task.name]["majority_share"],
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "labelling-local.json").write_text(json.dumps(result, indent=2))
    (args.docs / "labelling-local.md").write_text(markdown(result))
    print((args.docs / "labelling-local.md").read_text())


def markdown(r: dict) -> str:
    raw, cal = r["modes"]["raw"], r["modes"]["calibrated"]
    lines = [
        "# Local LLM labelling: SmolLM2-135M-Instruct on CPU",
        "",
        f"- date: {r['date']}, revision {r['revision']}",
        f"- machine: {r['machine']}; the training grids were paused (SIGSTOP) while this ran",
        f"- command: `{r['command']}`",
        f"- model: {r['model']} (loaded in {r['model_load_s']:.1f} s), likelihood scoring of each label; "
        '*calibrated* divides by each label\'s likelihood for the content-free utterance "N/A" under the '
        "same prompt (`--calibrate`)",
        f"- sample: {r['utterances']} utterances, the first {r['dialogues']} dialogues of DailyDialog's test "
        f"split; task `{r['task']}`; the default five-prompt bank",
        "",
        "## Throughput (requests/s; one request = one utterance under one prompt)",
        "",
        "| prompt | mean prompt tokens | raw: seconds | raw: requests/s | calibrated: seconds | calibrated: requests/s |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in zip(raw["prompts"], cal["prompts"], strict=True):
        lines.append(
            f"| {a['prompt']} | {a['mean_prompt_tokens']:.0f} | {a['seconds']:.1f} | {a['requests_per_s']:.2f} | "
            f"{b['seconds']:.1f} | {b['requests_per_s']:.2f} |"
        )
    lines += [
        "",
        f"The whole bank: **{raw['bank_utterances_per_s']:.2f} utterances/s** raw, "
        f"{cal['bank_utterances_per_s']:.2f} calibrated ({raw['bank_seconds']:.0f} s and "
        f"{cal['bank_seconds']:.0f} s for {r['utterances']} utterances).",
        "",
        "## Quality against gold",
        "",
        "| prompt | raw: accuracy | raw: macro-F1 | raw: ECE | calibrated: accuracy | calibrated: macro-F1 | calibrated: ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in raw["quality"]:
        a, b = raw["quality"][name], cal["quality"][name]
        lines.append(
            f"| {name} | {a['accuracy']:.4f} | {a['macro_f1']:.4f} | {a['ece']:.4f} | "
            f"{b['accuracy']:.4f} | {b['macro_f1']:.4f} | {b['ece']:.4f} |"
        )
    sim = r["simulated_teacher_on_test"]["ensemble"]
    lines += [
        "",
        f"Majority class share: {r['majority_share']:.4f}. For scale, the *simulated* prompt bank of "
        f"../shared/data scores {sim['accuracy']:.4f} accuracy / {sim['macro_f1']:.4f} macro-F1 on the whole "
        "test split.",
        "",
        "Most frequent confusions of the ensemble (gold → SmolLM2), raw: "
        + ", ".join(f"{g} → {p} ({n})" for g, p, n in raw["confusions"][:4])
        + "; calibrated: "
        + ", ".join(f"{g} → {p} ({n})" for g, p, n in cal["confusions"][:4]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
