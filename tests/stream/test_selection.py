"""Choosing live utterances for labelling (stream/selection.py): scores, quotas, near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from stream.selection import SelectionPolicy, Selector, considered, text_key, uncertainty

LABELS = {"sentiment": ["negative", "neutral", "positive"], "act": ["inform", "question"]}


def probs(sentiment: list[list[float]], act: list[list[float]]) -> dict[str, np.ndarray]:
    return {"sentiment": np.array(sentiment, dtype=np.float32), "act": np.array(act, dtype=np.float32)}


def test_the_considered_share_is_decided_by_the_id_alike_everywhere() -> None:
    """The same id gets the same answer every time; about `share` of many ids are in; 0 is off."""
    ids = [f"u{i}" for i in range(20_000)]
    chosen = [considered(u, 0.1) for u in ids]
    assert chosen == [considered(u, 0.1) for u in ids]
    assert 0.09 < sum(chosen) / len(ids) < 0.11
    assert not any(considered(u, 0.0) for u in ids[:100])
    assert all(considered(u, 1.0) for u in ids[:100])


def test_uncertainty_is_one_minus_the_margin() -> None:
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(uncertainty(p), [1.0, 0.0, 0.8], atol=1e-9)


def test_texts_differing_in_case_punctuation_and_spacing_share_a_key() -> None:
    assert text_key("Thanks, a lot!") == text_key("  thanks a   LOT ")
    assert text_key("thanks a lot") != text_key("thanks a bit")


def test_uncertain_utterances_are_chosen_best_first_and_confident_ones_are_not() -> None:
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.5, rarity_warmup=10**9))
    p = probs(
        [[0.98, 0.01, 0.01], [0.45, 0.40, 0.15], [0.30, 0.35, 0.35]],
        [[0.99, 0.01], [0.9, 0.1], [0.95, 0.05]],
    )
    outcome = selector.choose(["sure", "torn", "very torn"], p, LABELS)
    assert [c.row for c in outcome.chosen] == [2, 1]
    assert all(c.reason == "uncertain" and c.task == "sentiment" for c in outcome.chosen)
    assert outcome.chosen[0].score == pytest.approx(1.0)
    assert outcome.dropped["below"] == 1


def test_a_near_duplicate_of_a_chosen_text_is_dropped_in_this_batch_and_later_ones() -> None:
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.0, rarity_warmup=10**9))
    p = probs([[0.4, 0.3, 0.3]] * 2, [[0.5, 0.5]] * 2)
    first = selector.choose(["Thank you!", "thank you"], p, LABELS)
    assert len(first.chosen) == 1
    assert first.dropped["duplicate"] == 1
    later = selector.choose(["THANK YOU."], {t: v[:1] for t, v in p.items()}, LABELS)
    assert later.chosen == []
    assert later.dropped["duplicate"] == 1


def test_each_class_takes_at_most_its_quota_per_window() -> None:
    """Three uncertain 'negative' utterances with a quota of two: two go; after the window, more."""
    now = [0.0]
    selector = Selector(
        SelectionPolicy(share=1.0, min_score=0.5, quota_per_class=2, quota_window_s=60, rarity_warmup=10**9),
        clock=lambda: now[0],
    )
    p = probs([[0.4, 0.35, 0.25]] * 3, [[0.99, 0.01]] * 3)
    outcome = selector.choose(["a", "b", "c"], p, LABELS)
    assert len(outcome.chosen) == 2
    assert outcome.dropped["quota"] == 1
    assert selector.choose(["d"], {t: v[:1] for t, v in p.items()}, LABELS).dropped["quota"] == 1
    now[0] = 61.0
    assert len(selector.choose(["e"], {t: v[:1] for t, v in p.items()}, LABELS).chosen) == 1


def test_a_rarely_predicted_class_scores_high_once_enough_predictions_were_seen() -> None:
    """After 20 confident 'neutral' predictions, a confident 'negative' one is rare (score 1), and
    more 'neutral' ones are not; before the warm-up nothing is rare."""
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.9, rarity_warmup=20))
    neutral = probs([[0.01, 0.98, 0.01]] * 20, [[0.99, 0.01]] * 20)
    warmup = selector.choose([f"n{i}" for i in range(20)], neutral, LABELS)
    assert warmup.chosen == []
    mixed = probs([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]], [[0.99, 0.01], [0.99, 0.01]])
    outcome = selector.choose(["furious", "fine"], mixed, LABELS)
    assert [(c.row, c.reason, c.task) for c in outcome.chosen] == [(0, "rare", "sentiment")]
    assert outcome.chosen[0].rarity["sentiment"] == pytest.approx(1.0)


def test_disagreement_with_the_previous_engine_is_a_reason() -> None:
    """Confident rows that the previous engine labelled otherwise score the share of tasks that differ."""
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.5, rarity_warmup=10**9))
    now = probs([[0.98, 0.01, 0.01], [0.98, 0.01, 0.01]], [[0.99, 0.01], [0.99, 0.01]])
    before = probs([[0.01, 0.01, 0.98], [0.98, 0.01, 0.01]], [[0.01, 0.99], [0.99, 0.01]])
    outcome = selector.choose(["changed", "same"], now, LABELS, previous=before)
    assert [(c.row, c.reason, c.disagreement) for c in outcome.chosen] == [(0, "disagreement", 1.0)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("share", 1.5), ("share", -0.1), ("min_score", 2.0), ("quota_per_class", 0), ("quota_window_s", 0)],
)
def test_a_bad_policy_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field if field in ("share", "min_score") else "positive"):
        SelectionPolicy(**{field: value})  # type: ignore[arg-type]


def test_a_replayed_utterance_is_chosen_again_but_another_with_its_text_is_not() -> None:
    """After a rebalance a batch may come back: its chosen utterance is chosen again (its first
    send may never have happened); a different utterance with the same text stays a duplicate."""
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.0, rarity_warmup=10**9))
    p = probs([[0.4, 0.3, 0.3]], [[0.5, 0.5]])
    assert len(selector.choose(["thank you"], p, LABELS, ids=["u1"]).chosen) == 1
    assert len(selector.choose(["thank you"], p, LABELS, ids=["u1"]).chosen) == 1
    assert selector.choose(["Thank you!"], p, LABELS, ids=["u2"]).dropped["duplicate"] == 1


def test_a_new_label_set_restarts_the_rarity_counts() -> None:
    """An engine with more labels for a task (a swap) does not break the counts of the old one."""
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.9, rarity_warmup=2))
    selector.choose(["a", "b"], probs([[0.98, 0.01, 0.01]] * 2, [[0.99, 0.01]] * 2), LABELS)
    wider = {**LABELS, "sentiment": ["negative", "neutral", "positive", "mixed"]}
    p = {"sentiment": np.array([[0.01, 0.01, 0.01, 0.97]], dtype=np.float32), "act": np.array([[0.99, 0.01]])}
    outcome = selector.choose(["c"], p, wider)
    assert outcome.chosen == []  # counts restarted: in warm-up again, nothing is rare yet


def test_a_row_the_previous_engine_failed_is_no_disagreement() -> None:
    selector = Selector(SelectionPolicy(share=1.0, min_score=0.5, rarity_warmup=10**9))
    now = probs([[0.98, 0.01, 0.01]], [[0.99, 0.01]])
    failed = {t: np.full_like(v, np.nan) for t, v in now.items()}
    assert selector.choose(["x"], now, LABELS, previous=failed).chosen == []


def test_balancing_tasks_gives_each_task_its_turn() -> None:
    """Task a's scores all run higher than task b's: by the largest score a takes the first choices,
    with balance_tasks each task's most uncertain row comes first in turn."""
    a = np.array([[0.5, 0.5], [0.52, 0.48], [0.55, 0.45], [0.9, 0.1]])  # uncertain, …, sure
    b = np.array([[0.9, 0.1], [0.95, 0.05], [0.99, 0.01], [0.6, 0.4]])  # sure, …, the least sure
    labels = {"a": ["x", "y"], "b": ["x", "y"]}
    texts = ["one", "two", "three", "four"]
    plain = Selector(SelectionPolicy(share=1.0, min_score=0.0)).choose(texts, {"a": a, "b": b}, labels)
    balanced = Selector(SelectionPolicy(share=1.0, min_score=0.0, balance_tasks=True)).choose(
        texts, {"a": a, "b": b}, labels
    )
    assert [c.row for c in plain.chosen][:2] == [0, 1]
    assert [(c.row, c.task) for c in balanced.chosen][:2] == [(0, "a"), (3, "b")]
    assert balanced.chosen[1].score == pytest.approx(1 - (0.6 - 0.4))
