"""The dialogue-level bias perturbation: every turn of a dialogue pulled towards one class, within-dialogue
differences only scaled — so the pairwise loss's rankings survive and the hard labels do not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from train.compare import pretrain_key
from train.errors import TrainError
from train.perturb import apply, dialogue_bias

from .test_loop import synthetic


@given(strength=st.floats(0.0, 0.95), seed=st.integers(0, 5))
def test_differences_within_a_dialogue_only_shrink(strength: float, seed: int) -> None:
    data = synthetic(12)
    biased = dialogue_bias(data, strength, seed)
    before, after = data.ensemble["sentiment"], biased.ensemble["sentiment"]
    for turns in data.dialogues().values():
        shifts = []
        for u in turns:
            a, b = np.array(after[u.id]), np.array(before[u.id])
            assert a.sum() == pytest.approx(1.0)
            shifts.append(a - (1 - strength) * b)
        # one shift per dialogue: strength on one class, nothing elsewhere
        assert all(np.allclose(s, shifts[0]) for s in shifts)
        assert shifts[0].sum() == pytest.approx(strength)
        for u, v in itertools.combinations(turns, 2):
            gap_before = np.array(before[u.id]) - np.array(before[v.id])
            gap_after = np.array(after[u.id]) - np.array(after[v.id])
            assert np.allclose(gap_after, (1 - strength) * gap_before)


def test_the_bias_moves_hard_labels_and_differs_across_dialogues() -> None:
    data = synthetic(40)
    biased = dialogue_bias(data, 0.5, seed=0)
    classes = set()
    for turns in biased.dialogues().values():
        shift = np.array(biased.ensemble["sentiment"][turns[0].id]) - 0.5 * np.array(
            data.ensemble["sentiment"][turns[0].id]
        )
        classes.add(int(shift.argmax()))
    assert classes == {0, 1, 2}
    flipped = sum(
        np.argmax(biased.ensemble["sentiment"][i]) != np.argmax(p)
        for i, p in data.ensemble["sentiment"].items()
    )
    assert flipped > 0  # 0.7 / 0.15 / 0.15 scores: the top label flips where c_d is another class
    assert dialogue_bias(data, 0.5, seed=0).ensemble == biased.ensemble  # seeded, deterministic


def test_bad_perturbations_are_refused_and_a_perturbed_ensemble_has_its_own_cache_key() -> None:
    from train.loop import FitConfig

    data = synthetic(12)
    with pytest.raises(TrainError, match=r"in \[0, 1\)"):
        dialogue_bias(data, 1.0)
    with pytest.raises(TrainError, match="unknown keys"):
        apply(data, {"label_flip": 0.2})
    config = FitConfig(method="method")
    assert pretrain_key(config, apply(data, {"dialogue_bias": 0.3})) != pretrain_key(config, data)
    assert pretrain_key(config, apply(data, {"dialogue_bias": 0.0})) == pretrain_key(config, data)
