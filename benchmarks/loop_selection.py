"""What the learning loop's selection buys: test macro-F1 against human labels spent, the worker's
selection (stream/selection.py) against random selection at the same budget.

    python benchmarks/loop_selection.py --data ../shared/data/dailydialog --out runs/loop-dailydialog
    python benchmarks/loop_selection.py --data ../shared/data/dailydialog --out runs/loop-dailydialog --report

A simulation on a labelled corpus, through the loop's own code: per seed, a student is trained on a
small seed set of training dialogues (human and LLM labels). The rest of the training dialogues
arrive as live traffic in rounds. Each round the current student labels the round's utterances and
the strategy picks K of them for LLM labels (the corpus's simulated prompt bank) and k of those for
human labels (the corpus's gold): ``loop`` ranks by the Selector's scores (uncertainty, rarity;
best first, near-duplicates dropped), ``random`` draws uniformly. The picks go into a pool
(train.pool) with the turns before them, and the student is retrained from the seed data plus the
pool by train.retrain.merge_pool and the Trainer, as ``parley train loop`` does, then scored on the
corpus's test dialogues. Round 0 (the seed student) is shared by both strategies.

Resumable: every (strategy, seed, round) writes OUT/results/<name>.json and keeps its checkpoint
until the next round has used it; a rerun skips what is done. --report writes docs/benchmarks/loop.md,
.json and .png from whatever has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("dialogue_act", "sentiment")
STRATEGIES = ("loop", "random")


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="A corpus folder of ../shared/data.")
    p.add_argument("--out", type=Path, required=True, help="Work and result folder (resumable).")
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    p.add_argument("--seed-dialogues", type=int, default=20, help="Training dialogues of the seed set.")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--round-dialogues", type=int, default=100, help="Dialogues of traffic per round.")
    p.add_argument("--llm-per-round", type=int, default=150, help="K: utterances sent to the LLM per round.")
    p.add_argument("--human-per-round", type=int, default=40, help="k: of those, labelled by people.")
    p.add_argument("--pretrain-epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument(
        "--review",
        choices=["picked", "priority"],
        default="picked",
        help="Which of the loop's K picks people label: the first k the Selector ranked (picked), or the "
        "first k of `parley train pool export` (priority: engine/LLM disagreement, LLM-rare labels). "
        "Random selection always reviews k of its random picks.",
    )
    p.add_argument(
        "--balance-tasks",
        action="store_true",
        help="The Selector ranks rows by their place in every task's order (SelectionPolicy.balance_tasks).",
    )
    p.add_argument("--report", action="store_true", help="Only write the report from finished runs.")
    p.add_argument("--name", default="loop", help="docs/benchmarks/<name>.md/.json/.png")
    return p.parse_args()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Corpus:
    def __init__(self, folder: Path) -> None:
        self.labels = {t: json.loads((folder / "labels.json").read_text())[t] for t in TASKS}
        self.utterances = read_jsonl(folder / "utterances.jsonl")
        self.by_id = {u["id"]: u for u in self.utterances}
        self.gold: dict[str, list[dict[str, Any]]] = {}
        for g in read_jsonl(folder / "gold.jsonl"):
            if g["task"] in TASKS:
                self.gold.setdefault(g["id"], []).append(g)
        self.llm: dict[str, list[dict[str, Any]]] = {}
        for r in read_jsonl(folder / "llm_labels.jsonl"):
            if r["task"] in TASKS:
                self.llm.setdefault(r["id"], []).append(r)
        self.dialogues: dict[str, list[dict[str, Any]]] = {}
        for u in self.utterances:
            self.dialogues.setdefault(u["dialogue_id"], []).append(u)
        for turns in self.dialogues.values():
            turns.sort(key=lambda u: u["turn"])
        self.train = sorted(d for d, us in self.dialogues.items() if us[0]["split"] == "train")
        self.test = sorted(d for d, us in self.dialogues.items() if us[0]["split"] == "test")


def plan(corpus: Corpus, seed: int, args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    order = list(corpus.train)
    random.Random(seed).shuffle(order)
    seed_set = order[: args.seed_dialogues]
    rest = order[args.seed_dialogues :]
    rounds = [rest[r * args.round_dialogues : (r + 1) * args.round_dialogues] for r in range(args.rounds)]
    if any(len(r) < args.round_dialogues for r in rounds):
        sys.exit(f"not enough training dialogues for {args.rounds} rounds of {args.round_dialogues}")
    return seed_set, rounds


def earlier_files(corpus: Corpus, seed_set: list[str], folder: Path) -> dict[str, Path]:
    """The seed dialogues (train, human and LLM labels) and the test dialogues (test, human labels)."""
    rows = [u for d in [*seed_set, *corpus.test] for u in corpus.dialogues[d]]
    gold = [g for u in rows for g in corpus.gold.get(u["id"], [])]
    llm = [r for d in seed_set for u in corpus.dialogues[d] for r in corpus.llm.get(u["id"], [])]
    (folder / "labels.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(corpus.labels))
    return {
        "utterances": write_jsonl(folder / "utterances.jsonl", rows),
        "gold": write_jsonl(folder / "gold.jsonl", gold),
        "llm": write_jsonl(folder / "llm_labels.jsonl", llm),
        "labels": folder / "labels.json",
    }


def train_round(
    files: dict[str, Path], corpus: Corpus, pool_dir: Path, work: Path, seed: int, args: argparse.Namespace
) -> tuple[dict[str, float], Path, dict[str, int]]:
    from train.loop import FitConfig, Trainer
    from train.pool import Pool
    from train.retrain import EarlierData, labelled_count, merge_pool

    pool = Pool(str(pool_dir))
    pool.ensure_tasks(corpus.labels)
    merged = merge_pool(
        EarlierData(files["utterances"], files["gold"], files["llm"]),
        corpus.labels,
        pool.read(),
        work / "data",
        1.0,
        seed,
    )
    config = FitConfig(
        model_name="loop-bench",
        version=work.name,
        seed=seed,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        max_length=args.max_length,
    )
    trainer = Trainer(merged.data, merged.split, merged.human_dialogues, config)
    result = trainer.fit(work / "checkpoint")
    metrics = trainer.evaluate(merged.split.test)
    counts = {
        "pool_candidates": merged.pool_candidates,
        "pool_reviewed": merged.pool_reviewed,
        "human_labels": labelled_count(merged.data, merged.human_dialogues),
    }
    return metrics, result.checkpoint, counts


def predict(checkpoint: Path, corpus: Corpus, dialogues: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The student's probabilities for every utterance of ``dialogues``: (ids, {task: [n, k]})."""
    from engines.checkpoint import read_checkpoint
    from train.data import Dataset, Split, Utterance
    from train.loop import FitConfig, Trainer

    manifest, model = read_checkpoint(checkpoint)
    utts = {
        u["id"]: Utterance(u["id"], u["dialogue_id"], u["turn"], u["text"], "train", u.get("speaker"))
        for d in dialogues
        for u in corpus.dialogues[d]
    }
    data = Dataset(utts, dict(corpus.labels))
    trainer = Trainer(
        data,
        Split(dialogues, dialogues[:1], []),
        [],
        FitConfig(method="ce_human", max_length=manifest.max_length, encoder=str(checkpoint / "tokenizer")),
        model=model,
    )
    rows, probs = trainer.predict(dialogues)
    return [u.id for u in rows], probs


def pick(
    strategy: str,
    corpus: Corpus,
    dialogues: list[str],
    checkpoint: Path,
    selector: Any,
    rng: random.Random,
    k_llm: int,
    served: dict[str, dict[str, str]],
) -> list[str]:
    """K utterances of the round's traffic; ``served`` gets the student's labels of the round (what
    the worker would have put in each candidate's predictions)."""
    if strategy == "random":
        ids = [u["id"] for d in dialogues for u in corpus.dialogues[d]]
        return rng.sample(ids, k_llm)
    ids, probs = predict(checkpoint, corpus, dialogues)
    for row, uid in enumerate(ids):
        served[uid] = {t: corpus.labels[t][int(probs[t][row].argmax())] for t in TASKS}
    texts = [corpus.by_id[i]["text"] for i in ids]
    outcome = selector.choose(texts, probs, corpus.labels, ids=ids)
    return [ids[c.row] for c in outcome.chosen[:k_llm]]


def ensemble(records: list[dict[str, Any]], labels: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per task, the prompts' mean scores renormalised and the top label (as the labeller writes it)."""
    out = {}
    for task, names in labels.items():
        rows = [r.get("scores") or {} for r in records if r["task"] == task and not r.get("abstained")]
        if not rows:
            continue
        mean = {n: sum(r.get(n, 0.0) for r in rows) / len(rows) for n in names}
        total = sum(mean.values()) or 1.0
        scores = {n: v / total for n, v in mean.items()}
        out[task] = {"label": max(scores, key=scores.__getitem__), "scores": scores, "prompts": len(rows)}
    return out


def add_to_pool(
    pool_dir: Path,
    corpus: Corpus,
    chosen: list[str],
    k_human: int,
    round_no: int,
    served: dict[str, dict[str, str]],
    review: str,
) -> None:
    """The round's picks into the pool, then k of them reviewed: the first k picked (``picked``), or
    the k that `parley train pool export --limit k` puts first (``priority``)."""
    from train.pool import Pool, PoolItem, review_rows

    pool = Pool(str(pool_dir))
    items = []
    for uid in chosen:
        u = corpus.by_id[uid]
        turns = corpus.dialogues[u["dialogue_id"]]
        before = [t for t in turns if t["turn"] < u["turn"]][-5:]
        candidate = {
            "conversation_id": u["dialogue_id"],
            "utterance_id": uid,
            "turn": u["turn"],
            "text": u["text"],
            "context": [{"utterance_id": t["id"], "text": t["text"]} for t in before],
        }
        if uid in served:
            candidate["predictions"] = {t: {"label": label} for t, label in served[uid].items()}
        records = corpus.llm.get(uid, [])
        items.append(PoolItem(candidate, records, ensemble(records, corpus.labels), f"sim/{round_no}"))
    (pool_dir / "queue").mkdir(parents=True, exist_ok=True)
    pool.write_segment(f"round-{round_no:02d}", items)
    pool.ensure_tasks(corpus.labels)
    if review == "priority":
        reviewed = [r["id"] for r in review_rows(pool.read(), limit=k_human)]
    else:
        reviewed = chosen[:k_human]
    reviews = [
        {"id": uid, "task": g["task"], "label": g["label"]}
        for uid in reviewed
        for g in corpus.gold.get(uid, [])
    ]
    if reviews:
        pool.add_reviews(reviews)


def simulate(args: argparse.Namespace) -> None:
    from stream.selection import SelectionPolicy, Selector

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpus = Corpus(args.data)
    results = args.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        seed_set, rounds = plan(corpus, seed, args)
        base = args.out / "work" / f"s{seed}"
        files = earlier_files(corpus, seed_set, base / "earlier")
        start = results / f"seed-s{seed}-r0.json"
        seed_ckpt = base / "r0" / "checkpoint"
        if not start.exists() or not seed_ckpt.exists():
            empty = base / "r0" / "pool"
            shutil.rmtree(empty, ignore_errors=True)
            t0 = time.perf_counter()
            metrics, _, counts = train_round(files, corpus, empty, base / "r0", seed, args)
            record(start, "seed", seed, 0, metrics, counts, time.perf_counter() - t0)
        for strategy in STRATEGIES:
            selector = Selector(
                SelectionPolicy(
                    share=1.0, min_score=0.0, quota_per_class=10**9, balance_tasks=args.balance_tasks
                )
            )
            pool_dir = base / strategy / "pool"
            previous = seed_ckpt
            for r, dialogues in enumerate(rounds, start=1):
                out = results / f"{strategy}-s{seed}-r{r}.json"
                work = base / strategy / f"r{r}"
                chosen_file, state = work / "chosen.json", work / "selector.pkl"
                if state.exists():  # the selector as this round's pick left it (rarity counts, texts sent)
                    selector = pickle.loads(state.read_bytes())
                if out.exists():
                    previous = work / "checkpoint"
                    continue
                print(f"{strategy} seed {seed} round {r}", flush=True)
                t0 = time.perf_counter()
                if chosen_file.exists():
                    chosen = json.loads(chosen_file.read_text())
                else:
                    work.mkdir(parents=True, exist_ok=True)
                    rng = random.Random(seed * 1000 + r)
                    served: dict[str, dict[str, str]] = {}
                    chosen = pick(
                        strategy, corpus, dialogues, previous, selector, rng, args.llm_per_round, served
                    )
                    review = args.review if strategy == "loop" else "picked"
                    add_to_pool(pool_dir, corpus, chosen, args.human_per_round, r, served, review)
                    state.write_bytes(pickle.dumps(selector))
                    chosen_file.write_text(json.dumps(chosen))
                metrics, checkpoint, counts = train_round(files, corpus, pool_dir, work, seed, args)
                record(out, strategy, seed, r, metrics, counts, time.perf_counter() - t0, chosen, corpus)
                if previous != seed_ckpt:  # only the newest checkpoint is needed to go on
                    shutil.rmtree(previous, ignore_errors=True)
                previous = checkpoint


def record(
    path: Path,
    strategy: str,
    seed: int,
    round_no: int,
    metrics: dict[str, float],
    counts: dict[str, int],
    seconds: float,
    chosen: list[str] | None = None,
    corpus: Corpus | None = None,
) -> None:
    classes: dict[str, dict[str, int]] = {}
    if chosen and corpus:
        for uid in chosen:
            for g in corpus.gold.get(uid, []):
                classes.setdefault(g["task"], {}).setdefault(g["label"], 0)
                classes[g["task"]][g["label"]] += 1
    path.write_text(
        json.dumps(
            {
                "strategy": strategy,
                "seed": seed,
                "round": round_no,
                "test": {k: v for k, v in metrics.items()},
                **counts,
                "chosen_gold_classes": classes,
                "seconds": round(seconds, 1),
            },
            indent=2,
        )
    )


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted((args.out / "results").glob("*.json"))]
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        for strategy in STRATEGIES if r["strategy"] == "seed" else (r["strategy"],):
            by.setdefault((strategy, r["round"]), []).append(r)
    table = []
    for (strategy, round_no), runs in sorted(by.items()):
        entry: dict[str, Any] = {"strategy": strategy, "round": round_no, "seeds": len(runs)}
        entry["human_labels"] = statistics.mean(r["human_labels"] for r in runs)
        for task in TASKS:
            f1 = [r["test"][f"{task}/macro_f1"] for r in runs]
            entry[task] = (statistics.mean(f1), statistics.stdev(f1) if len(f1) > 1 else 0.0)
        mean = [statistics.mean(r["test"][f"{t}/macro_f1"] for t in TASKS) for r in runs]
        entry["mean"] = (statistics.mean(mean), statistics.stdev(mean) if len(mean) > 1 else 0.0)
        table.append(entry)
    docs = ROOT / "docs" / "benchmarks"
    lines = [
        "# The learning loop: selection against random, at the same label budget",
        "",
        f"`python benchmarks/loop_selection.py --data {args.data} --out {args.out}` "
        f"(seeds {args.seeds}; {args.seed_dialogues} seed dialogues; {args.rounds} rounds of "
        f"{args.round_dialogues} dialogues; K = {args.llm_per_round} LLM-labelled and k = {args.human_per_round} "
        f"human-labelled utterances per round; pretrain {args.pretrain_epochs} / fine-tune "
        f"{args.finetune_epochs} epochs, max length {args.max_length}; the loop's reviews: {args.review}"
        f"{'; tasks balanced' if args.balance_tasks else ''}), "
        f"on {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        "Test macro-F1 (mean ± std over seeds) against the human labels the training saw (the seed "
        "set's plus k per round). Round 0 is the seed student, shared by both strategies.",
        "",
        "| strategy | round | seeds | human labels | dialogue_act macro-F1 | sentiment macro-F1 | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['strategy']} | {e['round']} | {e['seeds']} | {e['human_labels']:.0f} | "
            + " | ".join(f"{e[k][0]:.4f} ± {e[k][1]:.4f}" for k in (*TASKS, "mean"))
            + " |"
        )
    (docs / f"{args.name}.json").write_text(json.dumps({"table": table, "runs": rows}, indent=2))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, (*TASKS, "mean"), strict=True):
        for strategy in STRATEGIES:
            pts = sorted((e["human_labels"], *e[key]) for e in table if e["strategy"] == strategy)
            if pts:
                x, y, s = zip(*pts, strict=True)
                ax.errorbar(x, y, yerr=s, marker="o", capsize=3, label=strategy)
        ax.set_title(f"{key} macro-F1" if key != "mean" else "mean of the tasks")
        ax.set_xlabel("human labels")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(docs / f"{args.name}.png", dpi=120)
    lines += ["", f"![macro-F1 against human labels]({args.name}.png)", ""]
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    a = arguments()
    if not a.report:
        simulate(a)
    report(a)
