"""Evaluation metrics on hand-made numbers; what a checkpoint's evaluation scores and writes, on
hand-made predictions. (The evaluate command on a trained tiny student: tests/train/test_loop.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.data import Dataset, Utterance
from train.evaluate import (
    DEFAULT_SPLIT_SEED,
    Evaluation,
    ece,
    fit_temperature,
    macro_f1,
    mean_auc,
    other_tasks,
    per_class,
    scale,
    score_tasks,
    scored_rows,
    split_seed,
    task_report,
    teacher_rows,
    write_report,
)


def test_ece_is_zero_for_a_perfectly_calibrated_predictor() -> None:
    """Confidence 1.0 and always right: ECE 0; confidence 1.0 and half wrong: ECE 0.5."""
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert ece(probs, np.array([0, 1, 0, 1])) == 0.0
    assert ece(probs, np.array([0, 1, 1, 0])) == pytest.approx(0.5)


def test_temperature_scaling_repairs_overconfidence() -> None:
    """Overconfident predictions (99% sure, 70% right) get T > 1 and a lower ECE after scaling."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 600)
    pred = np.where(rng.random(600) < 0.7, truth, (truth + 1) % 3)
    probs = np.full((600, 3), 0.005)
    probs[np.arange(600), pred] = 0.99
    t = fit_temperature(probs, truth)
    assert t > 1.5
    assert ece(scale(probs, t), truth) < ece(probs, truth) / 3


def test_a_prior_on_the_temperature_shrinks_a_small_sample_more_than_a_large_one() -> None:
    """MAP temperature: between 1 and the plain fit, closer to 1 on 30 rows than on 3,000, and the
    plain fit again when the prior is wide."""
    rng = np.random.default_rng(1)

    def overconfident(n: int) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.7, truth, (truth + 1) % 3)
        probs = np.full((n, 3), 0.02)
        probs[np.arange(n), pred] = 0.96
        return probs, truth

    small, large = overconfident(30), overconfident(3000)
    plain_small, plain_large = fit_temperature(*small), fit_temperature(*large)
    map_small, map_large = fit_temperature(*small, prior=0.2), fit_temperature(*large, prior=0.2)
    assert 1.0 < map_small < plain_small
    assert 1.0 < map_large < plain_large
    assert np.log(map_small) / np.log(plain_small) < np.log(map_large) / np.log(plain_large)
    assert fit_temperature(*small, prior=100.0) == pytest.approx(plain_small, rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), st.integers(0, 4)),
        min_size=2,
        max_size=40,
    )
)
def test_mean_auc_counts_every_positive_negative_pair(rows: list[tuple[int, float, int]]) -> None:
    """AUC per class = the share of (positive, negative) pairs the class's score orders right, ties
    counting half (checked pair by pair on rows with ties); classes without both sides are left out."""
    truth = np.array([r[0] for r in rows])
    probs = np.array([[r[1], (r[2] % 5) / 4, 1 - r[1]] for r in rows])
    expected = []
    for c in range(3):
        pos, neg = probs[truth == c, c], probs[truth != c, c]
        if len(pos) and len(neg):
            expected.append(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]))
    result = mean_auc(probs, truth)
    if expected:
        assert result == pytest.approx(np.mean(expected))
    else:
        assert np.isnan(result)


def test_mean_auc_ignores_class_levels() -> None:
    """A constant added to one class's scores changes accuracy, never the AUC: levels are not ranks."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 200)
    probs = rng.random((200, 3)) + 0.5 * np.eye(3)[truth]
    shifted = probs + np.array([0.0, 0.0, 5.0])
    assert mean_auc(shifted, truth) == pytest.approx(mean_auc(probs, truth))
    assert (shifted.argmax(1) == truth).mean() < (probs.argmax(1) == truth).mean()
    assert mean_auc(np.eye(3)[truth], truth) == 1.0


def test_macro_f1_and_per_class_by_hand() -> None:
    """Two classes, known counts: per-class precision, recall and the macro average."""
    truth, pred = np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1])
    pc = per_class(pred, truth, ["a", "b"])
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3.0})
    assert pc["b"]["precision"] == pytest.approx(2 / 3)
    assert macro_f1(pred, truth, 2) == pytest.approx(0.8)


def test_task_report_scores_the_teacher_beside_the_student() -> None:
    """The report holds the confusion matrix and the teacher's accuracy on the same rows."""
    truth = np.array([0, 1, 1, 0])
    student = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    teacher = np.array([[0.6, 0.4], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    report = task_report("sentiment", ["neg", "pos"], student, truth, student, truth, teacher)
    assert report.accuracy == 0.75
    assert report.confusion == [[2, 0], [1, 1]]
    assert report.teacher["accuracy"] == 0.75


def utterances(*ids: str, split: str = "test") -> list[Utterance]:
    return [Utterance(uid, f"d-{uid}", 0, f"text of {uid}", split) for uid in ids]


def test_only_utterances_with_a_gold_label_are_scored() -> None:
    """Rows without gold (or with an empty label) are left out; truth is the label's index."""
    utts = utterances("a", "b", "c", "d")
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.3, 0.7]])
    rows, truth, idx = scored_rows(utts, probs, {"a": "neg", "c": "pos", "d": ""}, ["neg", "pos"])
    assert idx == [0, 2]
    assert truth.tolist() == [0, 1]
    assert rows.tolist() == [[0.9, 0.1], [0.2, 0.8]]


def test_the_teacher_is_scored_only_where_it_covers_every_scored_utterance() -> None:
    """An ensemble missing one scored utterance (or none at all) scores no teacher; otherwise its rows
    come in the scored utterances' order."""
    utts = utterances("a", "b", "c")
    assert teacher_rows(utts, [0, 2], {"a": [0.6, 0.4]}) is None
    assert teacher_rows(utts, [0, 2], {}) is None
    rows = teacher_rows(utts, [2, 0], {"a": [0.6, 0.4], "c": [0.1, 0.9], "b": [0.5, 0.5]})
    assert rows is not None
    assert rows.tolist() == [[0.1, 0.9], [0.6, 0.4]]


def test_each_task_is_scored_on_its_own_gold_rows_with_the_teacher_where_covered() -> None:
    """Two tasks: each report counts that task's gold rows of the test predictions; the task whose
    ensemble covers them has a teacher, the other none."""
    test_utts = utterances("t1", "t2", "t3")
    dev_utts = utterances("d1", "d2", split="train")
    labels = {"sentiment": ["neg", "pos"], "act": ["ask", "tell", "thank"]}
    data = Dataset(
        {u.id: u for u in [*test_utts, *dev_utts]},
        labels,
        gold={
            "sentiment": {"t1": "neg", "t2": "pos", "t3": "pos", "d1": "neg", "d2": "pos"},
            "act": {"t1": "ask", "t3": "thank", "d1": "tell"},
        },
        ensemble={
            "sentiment": {"t1": [0.8, 0.2], "t2": [0.3, 0.7], "t3": [0.6, 0.4]},
            "act": {"t1": [1, 0, 0]},
        },
    )
    test_probs = {
        "sentiment": np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]),
        "act": np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
    }
    dev_probs = {"sentiment": np.array([[0.6, 0.4], [0.4, 0.6]]), "act": np.array([[0.2, 0.6, 0.2]] * 2)}
    sentiment, act = score_tasks(data, labels, (test_utts, test_probs), (dev_utts, dev_probs))
    assert (sentiment.task, sentiment.n, sentiment.accuracy) == ("sentiment", 3, pytest.approx(2 / 3))
    assert sentiment.teacher["accuracy"] == pytest.approx(2 / 3)
    assert (act.task, act.n, act.accuracy) == ("act", 2, 1.0)
    assert act.teacher == {}  # the act ensemble lacks t3
    assert act.confusion == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_tasks_the_checkpoint_lacks_are_named_for_skipping(tmp_path: Path) -> None:
    """Tasks labelled in the gold or LLM file but not among the checkpoint's are the ones to skip."""
    gold, llm = tmp_path / "gold.jsonl", tmp_path / "llm.jsonl"
    gold.write_text(
        "\n".join(json.dumps({"id": "a", "task": t, "label": "x"}) for t in ("sentiment", "intent"))
    )
    llm.write_text(json.dumps({"id": "a", "task": "topic", "prompt_id": "p", "label": "x"}) + "\n")
    labels = {"sentiment": ["neg", "pos"]}
    assert other_tasks(labels, gold, llm) == {"intent", "topic"}
    assert other_tasks(labels, gold, None) == {"intent"}


def test_the_dev_split_seed_is_the_given_one_else_the_checkpoints() -> None:
    """An explicit seed wins, then the seed the checkpoint was trained with, then the default."""
    assert split_seed({"seed": 7}, 3) == 3
    assert split_seed({"seed": 7}) == 7
    assert split_seed({}) == DEFAULT_SPLIT_SEED


def test_the_written_report_holds_metrics_plots_and_the_learning_curve(tmp_path: Path) -> None:
    """report.md (titled, with the learning curve when the checkpoint has one), metrics.json with every
    report, and one confusion-matrix PNG per task."""
    pytest.importorskip("matplotlib", reason="plots need the train extra")
    truth = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    report = task_report("sentiment", ["neg", "pos"], probs, truth, probs, truth)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "learning-curve.png").write_bytes(b"png")
    path = write_report(Evaluation("student/v1", [report], checkpoint), tmp_path / "report")
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text()
    assert text.startswith("# student/v1")
    assert "![confusion matrix of sentiment](confusion-sentiment.png)" in text
    assert "(learning-curve.png)" in text
    assert (tmp_path / "report" / "learning-curve.png").read_bytes() == b"png"
    assert (tmp_path / "report" / "confusion-sentiment.png").stat().st_size > 1000
    (metrics,) = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert (metrics["task"], metrics["accuracy"], metrics["confusion"]) == (
        "sentiment",
        0.75,
        [[2, 0], [1, 1]],
    )
    (checkpoint / "learning-curve.png").unlink()
    assert (
        "Learning curve"
        not in write_report(Evaluation("student/v1", [report], checkpoint), tmp_path / "r2").read_text()
    )
