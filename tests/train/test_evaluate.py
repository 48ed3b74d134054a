"""Evaluation metrics on hand-made numbers, and the evaluate command on a trained tiny student."""

from __future__ import annotations

import numpy as np
import pytest

from train.evaluate import ece, fit_temperature, macro_f1, per_class, scale, task_report


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
