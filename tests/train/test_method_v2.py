"""Method v2's parts: log-scale gaps, the soft-target form, per-class averaging, prompt agreement,
per-prompt calibration, realistic LLM noise, and paired statistics."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the losses need the train extra (torch)")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from train.calibration import calibrate_prompts, fit_temperature  # noqa: E402
from train.data import Dataset, Utterance, ensemble_of  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.losses import PairwisePreferenceLoss  # noqa: E402
from train.perturb import apply, call_noise, mood, topic  # noqa: E402
from train.stats import paired_difference  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


def bank(
    n_dialogues: int = 12, turns: int = 5, prompts: int = 4, seed: int = 0, sharpen: float = 2.0
) -> Dataset:
    """Dialogues with a gold label per turn and a four-prompt bank of over-confident, noisy scores."""
    rng = np.random.default_rng(seed)
    utterances, gold, by_prompt = {}, {}, {}
    for d in range(n_dialogues):
        for t in range(turns):
            uid = f"d{d}-{t}"
            label = int(rng.integers(0, 3))
            words = ["awful", "okay", "great"][label]
            utterances[uid] = Utterance(uid, f"d{d}", t, f"{words} turn {t} of topic{d % 3}", "train")
            gold[uid] = LABELS[label]
            rows = {}
            for p in range(prompts):
                logits = rng.normal(0, 1, 3)
                logits[label if rng.random() < 0.7 else int(rng.integers(0, 3))] += 3.0
                z = np.exp(logits * sharpen)  # over-confident
                rows[f"p{p}"] = list(z / z.sum())
            by_prompt[uid] = rows
    data = Dataset(utterances, {"sentiment": LABELS}, {"sentiment": gold})
    return data.with_prompts({"sentiment": by_prompt})


# -- data ------------------------------------------------------------------------------------------


def test_the_ensemble_is_the_renormalised_mean_of_the_prompts() -> None:
    prompts = {"t": {"u": {"a": [0.5, 0.3], "b": [0.9, 0.1]}}}  # a's top-k does not sum to 1
    assert ensemble_of(prompts)["t"]["u"] == pytest.approx([0.7 / 0.9, 0.2 / 0.9])


# -- the loss --------------------------------------------------------------------------------------


def test_log_gaps_are_on_the_students_scale_and_clipped() -> None:
    teacher = torch.tensor([[0.5, 0.5], [0.05, 0.95]])  # log gaps 2.303 (class 0) and 0.642 (class 1)
    i, j = torch.tensor([0]), torch.tensor([1])
    at_optimum = torch.log(teacher)  # the student reproduces the teacher's log-scores
    loss = PairwisePreferenceLoss(alpha=1.0, tau=0.0, form="hinge", gap="log")
    assert float(loss(at_optimum, teacher, i, j)) == pytest.approx(0.0, abs=1e-6)
    clipped = PairwisePreferenceLoss(alpha=1.0, tau=0.0, form="hinge", gap="log", clip=1.0)
    # the margins are min(|g|, clip): 1 nat and 0.642; a student gap of 0 costs exactly those
    expected = (1.0 + np.log(0.95 / 0.5)) / 2
    assert float(clipped(torch.zeros(2, 2), teacher, i, j)) == pytest.approx(expected, abs=1e-5)
    # τ in nats: both gaps are dropped at τ = 3
    drop = PairwisePreferenceLoss(alpha=1.0, tau=3.0, form="hinge", gap="log")
    assert float(drop(torch.zeros(2, 2), teacher, i, j)) == 0.0


@settings(max_examples=8, deadline=None)
@given(alpha=st.floats(0.2, 2.0), gap=st.floats(0.3, 3.0))
def test_the_soft_form_is_minimised_where_the_student_gap_is_alpha_times_the_teachers(
    alpha: float, gap: float
) -> None:
    teacher = torch.softmax(torch.tensor([[gap / 2, 0.0], [-gap / 2, 0.0]]), 1)
    i, j = torch.tensor([0]), torch.tensor([1])
    loss = PairwisePreferenceLoss(alpha=alpha, tau=0.0, form="soft", gap="log", clip=10.0)
    teacher_gap = float(torch.log(teacher[0, 0]) - torch.log(teacher[1, 0]))
    best, best_at = None, None
    for d in np.linspace(-6, 6, 241):
        student = torch.tensor([[d / 2, 0.0], [-d / 2, 0.0]])
        student_gap = float(torch.log_softmax(student, 1)[0, 0] - torch.log_softmax(student, 1)[1, 0])
        value = float(loss(student, teacher, i, j))
        if best is None or value < best:
            best, best_at = value, student_gap
    assert best_at == pytest.approx(alpha * teacher_gap, abs=0.05)


def test_the_per_class_mean_gives_a_rare_class_the_weight_of_a_common_one() -> None:
    teacher = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    # pair (0, 2): class 0 (0 preferred) and class 1 (2 preferred) count; pair (0, 1): class 0 (0
    # preferred) and class 2 (1 preferred). Class 0 has two entries, classes 1 and 2 one each.
    i, j = torch.tensor([0, 0]), torch.tensor([2, 1])
    # The student gets the small classes' orders right and class 0's wrong, in both its pairs.
    student = torch.tensor([[0.0, -1.0, -1.0], [5.0, -5.0, 5.0], [5.0, 5.0, -5.0]])
    f = torch.log_softmax(student, 1).numpy()
    hinge = lambda first, second, c: max(0.0, 0.7 - (f[first, c] - f[second, c]))  # noqa: E731
    entries = {0: [hinge(0, 2, 0), hinge(0, 1, 0)], 1: [hinge(2, 0, 1)], 2: [hinge(1, 0, 2)]}
    assert min(entries[0]) > 0.5
    assert entries[1] == [0.0]
    assert entries[2] == [0.0]
    per_entry = float(PairwisePreferenceLoss(1.0, 0.3, "hinge", mean="entries")(student, teacher, i, j))
    per_class = float(PairwisePreferenceLoss(1.0, 0.3, "hinge", mean="classes")(student, teacher, i, j))
    assert per_entry == pytest.approx(sum(sum(v) for v in entries.values()) / 4, abs=1e-5)
    assert per_class == pytest.approx(np.mean([np.mean(v) for v in entries.values()]), abs=1e-5)
    assert per_class < per_entry  # the big class's losses no longer outvote the satisfied small ones


def test_agreement_filters_and_weights_pairs_by_the_prompt_bank() -> None:
    teacher = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    i, j = torch.tensor([0]), torch.tensor([1])
    student = torch.zeros(2, 2)
    # prompts on utterance 0 / 1: two agree with the ensemble's order, one disagrees, one is missing
    prompts = torch.tensor(
        [
            [[0.9, 0.1], [0.7, 0.3], [0.1, 0.9], [float("nan")] * 2],
            [[0.1, 0.9], [0.3, 0.7], [0.9, 0.1], [0.5, 0.5]],
        ]
    )
    plain = PairwisePreferenceLoss(1.0, 0.0, "hinge")(student, teacher, i, j)
    weighted = PairwisePreferenceLoss(1.0, 0.0, "hinge", agreement="weight")(student, teacher, i, j, prompts)
    assert float(weighted) == pytest.approx(float(plain))  # one weight for every entry: same mean
    strict = PairwisePreferenceLoss(1.0, 0.0, "hinge", agreement="filter", min_agreement=0.75)
    assert float(strict(student, teacher, i, j, prompts)) == 0.0  # 2 of 3 answering prompts < 0.75
    loose = PairwisePreferenceLoss(1.0, 0.0, "hinge", agreement="filter", min_agreement=0.6)
    assert float(loose(student, teacher, i, j, prompts)) == pytest.approx(float(plain))
    with pytest.raises(ValueError, match="needs the prompts"):
        strict(student, teacher, i, j)


# -- calibration -----------------------------------------------------------------------------------


def test_fit_temperature_recovers_how_over_confident_a_prompt_is() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 3))
    truth = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    sharpened = np.exp(logits * 3.0)  # the prompt reports p^3 (renormalised): T = 3 undoes it
    assert fit_temperature(sharpened, truth) == pytest.approx(3.0, rel=0.15)


def test_calibration_uses_only_the_budget_and_keeps_each_prompts_ranking() -> None:
    data = bank()
    budget = [u for u in data.utterances if u.startswith(("d0-", "d1-", "d2-", "d3-"))]
    calibrated, temperatures = calibrate_prompts(data, budget)
    assert set(temperatures["sentiment"]) == {"p0", "p1", "p2", "p3"}
    assert all(t > 1 for t in temperatures["sentiment"].values())  # over-confident prompts soften
    for uid, rows in data.prompts["sentiment"].items():
        for p, row in rows.items():
            after = np.asarray(calibrated.prompts["sentiment"][uid][p])
            assert int(np.argmax(after)) == int(np.argmax(row))
            assert after.sum() == pytest.approx(1.0)
            kept = np.asarray(row) >= 1e-4  # below the floor scores are clipped to one value
            order = np.argsort(np.asarray(row)[kept])
            assert (np.diff(after[kept][order]) >= -1e-12).all()
    # gold labels outside the budget do not move the temperatures
    changed = Dataset(
        data.utterances, data.labels, {"sentiment": dict(data.gold["sentiment"])}, prompts=data.prompts
    )
    for uid in data.utterances:
        if uid not in budget:
            changed.gold["sentiment"][uid] = "negative"
    assert calibrate_prompts(changed, budget)[1] == temperatures


# -- realistic noise --------------------------------------------------------------------------------


def _orders_within_dialogues(data: Dataset) -> list[tuple[str, int, bool]]:
    out = []
    for turns in data.dialogues().values():
        for u, v in itertools.combinations(turns, 2):
            for p in data.prompts["sentiment"][u.id]:
                a = np.log(data.prompts["sentiment"][u.id][p])
                b = np.log(data.prompts["sentiment"][v.id][p])
                for c in range(3):
                    # the order of u and v for class c, judged on log-odds against the other classes
                    la = a[c] - np.log(np.exp(np.delete(a, c)).sum())
                    lb = b[c] - np.log(np.exp(np.delete(b, c)).sum())
                    out.append((p, c, bool(la > lb)))
    return out


@settings(max_examples=10, deadline=None)
@given(beta=st.floats(0.1, 3.0))
def test_mood_moves_every_turn_towards_its_dialogues_mood_and_keeps_log_score_gaps(beta: float) -> None:
    data = bank(sharpen=1.0)  # no score below the 1e-4 floor, where logs are clipped
    assert min(min(r) for rows in data.prompts["sentiment"].values() for r in rows.values()) > 1e-4
    moved = mood(data, beta)
    for turns in data.dialogues().values():
        ens = np.log([data.ensemble["sentiment"][u.id] for u in turns])
        mood_vec = ens.mean(0) - ens.mean()
        for u in turns:
            for p, row in data.prompts["sentiment"][u.id].items():
                before, after = np.log(row), np.log(moved.prompts["sentiment"][u.id][p])
                assert sum(moved.prompts["sentiment"][u.id][p]) == pytest.approx(1.0)
                delta = (after - after.mean()) - (before - before.mean())
                assert np.allclose(delta, beta * mood_vec, atol=1e-6)


def test_mood_flips_neutral_turns_of_a_negative_dialogue() -> None:
    utts = {f"u{k}": Utterance(f"u{k}", "d", k, "text", "train") for k in range(4)}
    neg, neutral = [0.8, 0.15, 0.05], [0.3, 0.6, 0.1]
    rows = {"u0": neg, "u1": neg, "u2": neg, "u3": neutral}
    data = Dataset(utts, {"sentiment": LABELS}).with_prompts(
        {"sentiment": {u: {"p": r} for u, r in rows.items()}}
    )
    assert int(np.argmax(data.ensemble["sentiment"]["u3"])) == 1
    assert int(np.argmax(mood(data, 1.0).ensemble["sentiment"]["u3"])) == 0  # "thanks" in a complaint


def test_call_noise_is_shared_within_a_dialogue_and_topic_follows_the_words() -> None:
    data = bank()
    noisy = call_noise(data, 0.5, seed=1)
    for turns in data.dialogues().values():
        offsets = []
        for u in turns:
            after = np.log(noisy.prompts["sentiment"][u.id]["p0"])
            offsets.append(after - after.mean())
        assert not np.allclose(offsets[0], offsets[1])  # different turns, different rows...
    assert call_noise(data, 0.5, seed=1).ensemble == noisy.ensemble  # ...from a seeded, shared draw
    # topic: dialogues with the same words get the same shift
    same_words = Dataset(
        {
            "a0": Utterance("a0", "A", 0, "refund my order", "train"),
            "b0": Utterance("b0", "B", 0, "refund my order", "train"),
            "c0": Utterance("c0", "C", 0, "lovely weather today", "train"),
        },
        {"sentiment": LABELS},
    ).with_prompts({"sentiment": {u: {"p": [0.2, 0.6, 0.2]} for u in ("a0", "b0", "c0")}})
    shifted = topic(same_words, 1.0, seed=0).ensemble["sentiment"]
    assert shifted["a0"] == pytest.approx(shifted["b0"])
    assert shifted["a0"] != pytest.approx(shifted["c0"])


def test_orders_within_a_dialogue_survive_call_noise() -> None:
    data = bank(n_dialogues=4)
    before, after = _orders_within_dialogues(data), _orders_within_dialogues(call_noise(data, 0.3, seed=2))
    agree = np.mean([x[2] == y[2] for x, y in zip(before, after, strict=True)])
    assert agree > 0.9  # temperature and a shared offset keep nearly every order


def test_noise_needs_prompts_and_unknown_kinds_are_refused() -> None:
    bare = Dataset({"u": Utterance("u", "d", 0, "x", "train")}, {"sentiment": LABELS})
    with pytest.raises(TrainError, match="no LLM labels"):
        mood(bare, 1.0)
    with pytest.raises(TrainError, match="unknown keys"):
        apply(bank(), {"moody": 1.0})


# -- paired statistics ---------------------------------------------------------------------------


def _runs(
    accuracy: float, n: int = 400, seed: int = 0
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    rng = random.Random(seed)
    gold = {f"u{k}": rng.randrange(3) for k in range(n)}
    pred = {u: (g if rng.random() < accuracy else (g + 1) % 3) for u, g in gold.items()}
    dialogue_of = {f"u{k}": f"d{k // 8}" for k in range(n)}
    return gold, pred, dialogue_of


def test_identical_runs_are_level_and_a_better_run_is_ahead() -> None:
    gold, weak, dialogue_of = _runs(0.6)
    _, strong, _ = _runs(0.9, seed=1)
    strong = {u: (g if random.Random(u).random() < 0.9 else (g + 1) % 3) for u, g in gold.items()}
    same = paired_difference([weak], [weak], gold, dialogue_of, 3, n_boot=200)
    assert all(d.mean == 0 and d.verdict == "level" for d in same)
    ahead = paired_difference([strong, strong], [weak, weak], gold, dialogue_of, 3, n_boot=200)
    assert all(d.verdict == "ahead" and d.low > 0.15 for d in ahead)
    behind = paired_difference([weak], [strong], gold, dialogue_of, 3, n_boot=200)
    assert all(d.verdict == "behind" for d in behind)
    with pytest.raises(ValueError, match="same, non-zero number of seeds"):
        paired_difference([weak], [weak, weak], gold, dialogue_of, 3)


def test_joint_scope_all_keeps_the_llm_loss_on_dialogues_outside_the_budget(tmp_path) -> None:
    from train.data import split_by_dialogue
    from train.loop import FitConfig, Trainer

    from .test_loop import synthetic, tiny_student

    data = synthetic(20)
    split = split_by_dialogue(data, seed=1)
    human = sorted(split.train)[:2]
    config = FitConfig(
        method="distill",
        pretrain_epochs=0,
        finetune_epochs=1,
        joint_lambda=1.0,
        joint_scope="all",
        max_length=16,
        batch_size=8,
    )
    trainer = Trainer(data, split, human, config, model=tiny_student())
    seen: set[str] = set()
    original = trainer._llm_loss

    def spy(logits, batch, generator):  # type: ignore[no-untyped-def]
        seen.update(u.dialogue_id for u in batch)
        return original(logits, batch, generator)

    trainer._llm_loss = spy  # type: ignore[method-assign]
    trainer.fit(tmp_path, write=False)
    assert seen - set(human)  # LLM-labelled dialogues beyond the budget's
    assert seen <= set(split.train)


def test_a_dialogue_bias_survives_prompt_calibration() -> None:
    from train.perturb import dialogue_bias

    data = bank()
    budget = [u for u in data.utterances if u.startswith(("d0-", "d1-", "d2-"))]
    clean, _ = calibrate_prompts(data, budget)
    biased, _ = calibrate_prompts(dialogue_bias(data, 0.6, seed=0), budget)
    moved = sum(
        int(np.argmax(biased.ensemble["sentiment"][u])) != int(np.argmax(clean.ensemble["sentiment"][u]))
        for u in data.utterances
    )
    assert moved > 0  # recomputing the ensemble from the prompts keeps the bias


def test_repeated_llm_records_are_refused_and_models_are_separate_members(tmp_path) -> None:
    import json

    from train.data import DataError, load_dataset

    (tmp_path / "u.jsonl").write_text(
        json.dumps({"id": "u", "dialogue_id": "d", "turn": 0, "text": "x", "split": "train"}) + "\n"
    )
    record = {
        "id": "u",
        "task": "sentiment",
        "prompt_id": "p1",
        "label": "neutral",
        "scores": {"neutral": 1.0},
    }
    two_models = [dict(record, model="a"), dict(record, model="b", scores={"negative": 1.0})]
    (tmp_path / "llm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in two_models))
    data = load_dataset(tmp_path / "u.jsonl", {"sentiment": LABELS}, llm=tmp_path / "llm.jsonl")
    assert set(data.prompts["sentiment"]["u"]) == {"p1@a", "p1@b"}
    assert data.ensemble["sentiment"]["u"] == pytest.approx([0.5, 0.5, 0.0])
    (tmp_path / "llm.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match="line 2: a second record"):
        load_dataset(tmp_path / "u.jsonl", {"sentiment": LABELS}, llm=tmp_path / "llm.jsonl")
