"""The engine interface: input validation in the base, tokenisation, bucketing, life cycle."""

from __future__ import annotations

import pytest

from engines.base import EngineInputError, EngineOptions, engine_class, load_engine
from engines.errors import EngineError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(registered):
    _, bundle = registered
    with load_engine(bundle, "onnxruntime", EngineOptions(max_batch=4)) as active:
        yield active


@pytest.mark.parametrize(
    ("texts", "contexts", "message"),
    [
        pytest.param("just one string", None, "list of strings", id="bare-string"),
        pytest.param(["ok", 3], None, r"texts\[1\] is int", id="not-a-string"),
        pytest.param(["a", "b"], ["only one"], "2 texts", id="contexts-mismatch"),
        pytest.param(["a"], [b"bytes"], r"contexts\[0\] is bytes", id="context-bytes"),
    ],
)
def test_bad_input_is_refused_before_inference(engine, texts, contexts, message: str) -> None:
    """Wrong types are refused by the base class with what was wrong, for every backend alike."""
    with pytest.raises(EngineInputError, match=message):
        engine.infer(texts, contexts)


def test_empty_input_gives_empty_outputs(engine) -> None:
    """No texts: one empty array per task, with the task's label count as width."""
    out = engine.infer([])
    assert {k: v.shape for k, v in out.items()} == {
        "intent": (0, 11),
        "sentiment": (0, 3),
        "dialogue_act": (0, 4),
    }


def test_inactive_engine_refuses_to_infer(registered) -> None:
    """An engine used outside 'with' (not activated) says so instead of crashing."""
    _, bundle = registered
    with pytest.raises(EngineError, match="not active"):
        load_engine(bundle, "onnxruntime").infer(["hi"])


def test_context_changes_the_input(engine) -> None:
    """A previous turn given as context is fed as a second segment and changes the prediction."""
    alone = engine.infer(["okay"])
    with_context = engine.infer(["okay"], ["This is the third time I'm calling about the broken heater."])
    assert abs(float(alone["sentiment"][0, 0]) - float(with_context["sentiment"][0, 0])) > 1e-6


def test_long_text_is_truncated_to_max_length(engine) -> None:
    """Texts longer than the manifest's max_length are truncated, not refused."""
    assert engine.tokenizer.lengths(["word " * 500]) == [64]
    assert engine.infer(["word " * 500])["sentiment"].shape == (1, 3)


def test_bucketing_groups_similar_lengths_and_pads_tightly(engine) -> None:
    """Batches are cut from length-sorted texts and each is padded only to its own longest text."""
    texts = ["a b c d e f g h i j k l m n o p", "hi", "hello there", "yo", "x " * 30, "ok", "one two three"]
    batches = list(engine.tokenizer.batches(texts, max_batch=3, bucket=True))
    widths = [b.shape[1] for b in batches]
    assert widths == sorted(widths)
    assert sorted(i for b in batches for i in b.indices.tolist()) == list(range(len(texts)))
    unbucketed = list(engine.tokenizer.batches(texts, max_batch=3, bucket=False))
    assert sum(b.shape[0] * b.shape[1] for b in batches) < sum(b.shape[0] * b.shape[1] for b in unbucketed)


def test_unknown_backend_lists_the_known_ones() -> None:
    """Asking for a backend parley does not have names the ones it has."""
    with pytest.raises(EngineError, match="onnxruntime"):
        engine_class("openvino")


def test_engine_name_says_backend_device_and_precision(engine) -> None:
    """Outputs name what produced them: backend, device and precision."""
    assert engine.name == "onnxruntime-cpu-fp32"


def test_a_token_budget_bounds_every_call_and_keeps_every_row(engine) -> None:
    """With max_tokens, each batch holds at most that many padded tokens (a longer single row
    still gets a batch of its own), no row is lost or repeated, and the probabilities are the
    ones row-count batching gives."""
    import numpy as np

    texts = [
        "hi",
        "ok then",
        "word " * 40,
        "a b c d e f",
        "yes",
        "x " * 12,
        "thanks a lot for that",
        "no",
    ] * 5
    batches = list(engine.tokenizer.batches(texts, max_batch=64, max_tokens=48))
    for b in batches:
        rows, width = b.shape
        assert rows * width <= 48 or rows == 1
    assert sorted(i for b in batches for i in b.indices.tolist()) == list(range(len(texts)))
    budgeted = load_engine(engine.bundle, "onnxruntime", EngineOptions(max_batch=64, max_tokens=48))
    with budgeted:
        got = budgeted.infer(texts)
    expected = engine.infer(texts)
    for task in expected:
        np.testing.assert_allclose(got[task], expected[task], atol=1e-5)


def test_a_token_budget_must_be_positive() -> None:
    """max_tokens of 0 is refused with the value named."""
    with pytest.raises(EngineInputError, match="max_tokens must be at least 1, got 0"):
        EngineOptions(max_tokens=0)


def test_lanes_run_calls_side_by_side_and_give_the_same_probabilities(engine, monkeypatch) -> None:
    """With lanes, a batch is cut into at least that many calls, they run on the lane threads (two
    at once, here), every row comes back in the caller's order, and the probabilities are those of
    one call at a time."""
    import threading

    import numpy as np

    texts = ["hi", "ok then", "word " * 30, "a b c d e f", "yes", "x " * 12, "thanks a lot", "no"] * 3
    expected = engine.infer(texts)
    laned = load_engine(engine.bundle, "onnxruntime", EngineOptions(max_batch=64, lanes=2))
    assert laned.lanes == 2
    seen: list[tuple[str, int]] = []
    both_running = threading.Barrier(2, timeout=10)
    original = laned._infer_impl

    def recording(feeds):  # type: ignore[no-untyped-def]
        seen.append((threading.current_thread().name, feeds["input_ids"].shape[0]))
        if len(seen) <= 2:
            both_running.wait()  # the first two calls are in flight together, or this times out
        return original(feeds)

    monkeypatch.setattr(laned, "_infer_impl", recording)
    with laned:
        got = laned.infer(texts)
    assert len(seen) >= 2
    assert sum(rows for _, rows in seen) == len(texts)
    assert all(name.startswith("parley-lane") for name, _ in seen)
    for task in expected:
        np.testing.assert_allclose(got[task], expected[task], atol=1e-5)
    assert laned._lanes is None  # the lane threads went with deactivate


def test_lanes_are_one_for_a_backend_whose_calls_cannot_overlap(registered) -> None:
    """A backend without concurrent calls (TensorRT: one execution context) runs one call at a
    time whatever lanes says; lanes below one are refused."""
    _, bundle = registered
    cls = engine_class("onnxruntime")

    class OneAtATime(cls):  # type: ignore[misc,valid-type]
        concurrent_calls = False

    assert OneAtATime(bundle, EngineOptions(lanes=4)).lanes == 1
    with pytest.raises(EngineInputError, match="lanes must be at least 1, got 0"):
        EngineOptions(lanes=0)


def test_usable_cpus_follow_the_cgroup_quota(tmp_path) -> None:
    """A container's CPU limit (cgroup v2 cpu.max) caps the lanes, rounded up; no limit, or no
    cgroup file, leaves the process's CPU affinity."""
    import os

    from engines.node import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{150000 * affinity} 100000\n")
    assert usable_cpus(tmp_path) == affinity
