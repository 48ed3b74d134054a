"""Losses on tiny tensors, with properties (hypothesis) of the intra-dialogue preference loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the losses need the train extra (torch)")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from train.losses import (  # noqa: E402
    GeneralizedCrossEntropyLoss,
    PairwisePreferenceLoss,
    SoftLabelDistillationLoss,
    sample_pairs,
)

floats = st.floats(min_value=-4, max_value=4, allow_nan=False, width=32)


def _teacher(rows: list[list[float]]) -> torch.Tensor:
    return torch.softmax(torch.tensor(rows), dim=1)


def test_pairs_stay_inside_dialogues_and_cost_linear_time() -> None:
    """Every pair joins two different utterances of one dialogue; each utterance gets ≤ k partners."""
    dialogues = torch.tensor([0] * 170 + [1] * 3 + [2])
    i, j = sample_pairs(dialogues, per_utterance=4, generator=torch.Generator().manual_seed(0))
    assert (dialogues[i] == dialogues[j]).all()
    assert (i != j).all()
    assert len(i) == 170 * 4 + 3 * 2  # the lone utterance of dialogue 2 has no partner
    assert torch.bincount(i, minlength=len(dialogues)).max() <= 4


def test_hinge_is_zero_when_the_student_ranks_beyond_the_margin() -> None:
    """Student log-prob gaps larger than α·(teacher gap) give exactly zero hinge loss."""
    teacher = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    student = torch.tensor([[8.0, -8.0], [-8.0, 8.0]])
    loss = PairwisePreferenceLoss(alpha=1.0, tau=0.0, form="hinge")
    assert loss(student, teacher, torch.tensor([0]), torch.tensor([1])).item() == 0.0


@given(
    st.lists(st.lists(floats, min_size=3, max_size=3), min_size=2, max_size=6),
    st.lists(st.lists(floats, min_size=3, max_size=3), min_size=2, max_size=6),
)
def test_loss_does_not_depend_on_pair_direction(
    student_rows: list[list[float]], teacher_rows: list[list[float]]
) -> None:
    """Property: (i, j) and (j, i) are the same preference: the loss is the same either way."""
    n = min(len(student_rows), len(teacher_rows))
    student, teacher = torch.tensor(student_rows[:n]), _teacher(teacher_rows[:n])
    i, j = torch.arange(n - 1), torch.arange(1, n)
    for form in ("softplus", "hinge"):
        loss = PairwisePreferenceLoss(alpha=2.0, tau=0.05, form=form)
        assert torch.allclose(loss(student, teacher, i, j), loss(student, teacher, j, i), atol=1e-6)


@given(st.lists(st.lists(floats, min_size=3, max_size=3), min_size=4, max_size=4), floats)
def test_pairs_with_equal_teacher_scores_contribute_nothing(
    student_rows: list[list[float]], shift: float
) -> None:
    """Property: symmetric pairs (equal teacher scores) cancel: moving their logits changes nothing."""
    teacher = _teacher([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    student = torch.tensor(student_rows)
    loss = PairwisePreferenceLoss(alpha=1.0, tau=0.0)
    # Pairs (0, 1) have equal scores; (2, 3) differ.
    i, j = torch.tensor([0, 2]), torch.tensor([1, 3])
    moved = student.clone()
    moved[0] += shift
    moved[0, 1] -= shift  # changes utterance 0's log-probs, which only meet utterance 1
    assert torch.allclose(loss(student, teacher, i, j), loss(moved, teacher, i, j), atol=1e-5)


@given(st.floats(min_value=0.05, max_value=0.9))
def test_tau_removes_pairs_with_small_gaps(tau: float) -> None:
    """Property: pairs whose teacher gap is at most τ are ignored; with none left the loss is 0."""
    teacher = torch.tensor([[0.5, 0.5], [0.5 + tau / 2, 0.5 - tau / 2]])
    student = torch.tensor([[3.0, -3.0], [-3.0, 3.0]], requires_grad=True)
    loss = PairwisePreferenceLoss(alpha=1.0, tau=tau)(student, teacher, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None
    assert float(student.grad.abs().sum()) == 0.0


def test_gradients_flow_into_the_student_only() -> None:
    """The teacher's scores are constants: after backward only the student has a gradient."""
    student = torch.randn(4, 3, requires_grad=True)
    teacher = _teacher([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [1.0, 1.0, 0]]).requires_grad_(True)
    loss = PairwisePreferenceLoss(alpha=1.5, tau=0.0)(
        student, teacher, torch.tensor([0, 1, 2]), torch.tensor([3, 3, 3])
    )
    loss.backward()
    assert student.grad is not None
    assert float(student.grad.abs().sum()) > 0
    assert teacher.grad is None


def test_softplus_loss_falls_as_the_student_agrees_more() -> None:
    """Raising the preferred utterance's log-probability lowers the softplus loss."""
    teacher = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    loss = PairwisePreferenceLoss(alpha=1.0, tau=0.0)
    values = [
        loss(torch.tensor([[x, 0.0], [0.0, x]]), teacher, torch.tensor([0]), torch.tensor([1])).item()
        for x in (-2.0, 0.0, 2.0, 6.0)
    ]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: PairwisePreferenceLoss()(
                torch.zeros(3), torch.zeros(3), torch.tensor([0]), torch.tensor([1])
            ),
            "dimensions",
            id="1-d-logits",
        ),
        pytest.param(
            lambda: PairwisePreferenceLoss()(
                torch.zeros(3, 2), torch.zeros(3, 3), torch.tensor([0]), torch.tensor([1])
            ),
            "must match",
            id="shape-mismatch",
        ),
        pytest.param(lambda: PairwisePreferenceLoss(tau=1.5), "tau", id="bad-tau"),
        pytest.param(
            lambda: SoftLabelDistillationLoss()(torch.zeros(2, 3), torch.zeros(2, 4)),
            "must match",
            id="kl-mismatch",
        ),
        pytest.param(
            lambda: GeneralizedCrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 1, 2])),
            "targets",
            id="gce-mismatch",
        ),
        pytest.param(lambda: GeneralizedCrossEntropyLoss(q=0), "q must", id="gce-q"),
    ],
)
def test_shape_and_setting_mistakes_are_refused(call, message: str) -> None:
    """Wrong shapes and impossible settings raise with what was wrong."""
    with pytest.raises(ValueError, match=message):
        call()


def test_distillation_is_zero_when_the_student_matches_the_teacher() -> None:
    """KL to the ensemble is 0 exactly when the student's distribution is the teacher's."""
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    loss = SoftLabelDistillationLoss()
    assert loss(logits, torch.softmax(logits, 1)).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(logits, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])).item() > 0.1


def test_gce_is_bounded_and_tends_to_cross_entropy() -> None:
    """GCE lies in [0, 1/q]; for small q it approaches cross-entropy."""
    logits, targets = torch.tensor([[2.0, -1.0], [-3.0, 3.0]]), torch.tensor([1, 0])
    assert 0 <= GeneralizedCrossEntropyLoss(q=0.7)(logits, targets).item() <= 1 / 0.7
    ce = torch.nn.functional.cross_entropy(logits, targets).item()
    assert GeneralizedCrossEntropyLoss(q=1e-4)(logits, targets).item() == pytest.approx(ce, rel=1e-2)
