"""Task files, prompt banks and rendering; answer parsing and the two ways of turning answers into scores."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from train.label.backend import parse_answer, scores_from_counts, scores_from_top_logprobs
from train.label.spec import (
    LabelTask,
    SpecError,
    Turn,
    load_bank,
    ordered_labels,
    read_bank,
    read_task,
    render,
)

DA = ("inform", "question", "directive", "commissive")


def test_the_default_bank_offers_at_least_four_different_prompts_per_shipped_task() -> None:
    bank = read_bank(None)
    turn = Turn("Could you pass the salt?", "A", (("B", "Dinner is ready."), ("A", "Great, thanks.")))
    for name in ("dialogue_act", "sentiment"):
        task = read_task(name)
        prompts = bank.for_task(name)
        assert len(prompts) >= 4
        rendered = {render(task, p, turn) for p in prompts}
        assert len(rendered) == len(prompts), "two prompts render the same text"
        for r in rendered:
            assert "Could you pass the salt?" in r.user
    kinds = {p.id: p for p in bank.prompts}
    assert any(p.context_turns > 0 for p in kinds.values())
    assert any(p.examples > 0 for p in kinds.values())
    assert any(p.label_order != "given" for p in kinds.values())


def test_context_prompts_see_the_previous_turns_and_others_do_not() -> None:
    bank = read_bank(None)
    task = read_task("dialogue_act")
    turn = Turn("Sure.", "B", (("A", "Can you call me tomorrow?"),))
    context = next(p for p in bank.prompts if p.context_turns)
    plain = next(p for p in bank.prompts if p.id == "zero-shot")
    assert "A: Can you call me tomorrow?" in render(task, context, turn).user
    assert "Can you call me tomorrow?" not in render(task, plain, turn).user
    assert "(start of the conversation)" in render(task, context, Turn("Hello", "A")).user


def test_label_orders() -> None:
    task = LabelTask.from_dict({"name": "t", "labels": {"b": "", "a": "", "c": ""}}, "test")
    bank = load_bank(
        {
            "prompts": [
                {"id": order, "user": "{labels} {text}", "label_order": order}
                for order in ("given", "reversed", "alphabetical", "shuffled")
            ]
        },
        "test",
    )
    orders = {p.id: ordered_labels(task, p) for p in bank.prompts}
    assert orders["given"] == ["b", "a", "c"]
    assert orders["reversed"] == ["c", "a", "b"]
    assert orders["alphabetical"] == ["a", "b", "c"]
    assert sorted(orders["shuffled"]) == ["a", "b", "c"]
    assert render(task, bank.prompts[1], Turn("x")).user == "c, a, b x"


def test_literal_braces_and_definitions() -> None:
    task = LabelTask.from_dict({"name": "t", "labels": {"yes": "agrees", "no": ""}}, "test")
    bank = load_bank({"prompts": [{"id": "p", "user": '{{"label": ...}}\n{label_definitions}\n{text}'}]}, "t")
    assert render(task, bank.prompts[0], Turn("hi")).user == '{"label": ...}\n- yes: agrees\n- no\nhi'


@pytest.mark.parametrize(
    ("bank", "message"),
    [
        ({"prompts": [{"id": "p", "user": "{utterance}"}]}, "unknown template field"),
        ({"prompts": [{"id": "p", "user": "no text here {labels}"}]}, "add {text}"),
        ({"prompts": [{"id": "p", "user": "{text}"}, {"id": "p", "user": "{text}"}]}, "appears twice"),
        ({"prompts": [{"id": "p", "user": "{text", "x": 1}]}, "unknown keys"),
        ({"prompts": [{"id": "p", "user": "{text"}]}, "bad template"),
        ({"prompts": [{"id": "p", "user": "{text}", "label_order": "random"}]}, "label_order"),
        ({"prompts": []}, "non-empty"),
        ([], "non-empty"),
    ],
)
def test_bad_banks_fail_at_load_naming_the_prompt(bank: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_bank(bank, "bank.yaml")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"labels": {"a": "", "b": ""}}, "needs a 'name'"),
        ({"name": "t", "labels": {"a": ""}}, "at least two labels"),
        ({"name": "t"}, "needs 'labels'"),
        ({"name": "t", "labels": ["a", "b"], "examples": [{"text": "x", "label": "c"}]}, "not one of"),
    ],
)
def test_bad_tasks(task: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        LabelTask.from_dict(task, "task.yaml")


def test_task_files_by_path_and_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "intent.yaml"
    path.write_text("name: intent\nlabels:\n  - {name: refund, description: wants money back}\n  - other\n")
    task = read_task(str(path))
    assert task.labels == ("refund", "other")
    assert task.definitions["refund"] == "wants money back"
    with pytest.raises(SpecError, match="shipped: \\['dialogue_act', 'sentiment'\\]"):
        read_task("emotion")


@pytest.mark.parametrize(
    ("text", "label", "reason"),
    [
        ("question", "question", None),
        ("  Question.\n", "question", None),
        ("Label: directive", "directive", None),
        ("The answer is: inform", "inform", None),
        ("I think this is a question about dinner.", "question", None),
        ("banana", None, "label outside the set"),
        ("", None, "empty answer"),
        ("question or inform", None, "ambiguous"),
        ("I cannot really tell you anything about this utterance at all", None, "unparseable"),
    ],
)
def test_parse_answer(text: str, label: str | None, reason: str | None) -> None:
    got, why = parse_answer(text, DA)
    assert got == label
    assert (why or "").startswith(reason or "")


def test_scores_from_first_token_alternatives() -> None:
    top = [("quest", -0.1), ("inform", -2.0), (" ", -3.0), ("banana", -1.0), ("in", -4.0)]
    scores = scores_from_top_logprobs(top, DA)
    assert scores is not None
    assert set(scores) == set(DA)
    assert sum(scores.values()) == pytest.approx(1.0)
    assert max(scores, key=scores.__getitem__) == "question"
    assert scores["commissive"] == 0.0
    assert scores_from_top_logprobs([("banana", -0.1)], DA) is None


def test_a_token_that_begins_several_labels_shares_its_mass() -> None:
    scores = scores_from_top_logprobs([("co", 0.0)], ("commissive", "complaint", "other"))
    assert scores == {"commissive": 0.5, "complaint": 0.5, "other": 0.0}


@given(st.lists(st.sampled_from([*DA, "banana", "", "question?"]), min_size=1, max_size=12))
def test_sampled_answers_give_a_distribution_or_an_abstention(answers: list[str]) -> None:
    scores, reason = scores_from_counts(answers, DA)
    if scores is None:
        assert reason
        assert all(parse_answer(a, DA)[0] is None for a in answers)
    else:
        assert set(scores) == set(DA)
        assert sum(scores.values()) == pytest.approx(1.0)


def test_yaml_booleans_as_labels_and_a_task_name_as_a_string() -> None:
    import yaml

    with pytest.raises(SpecError, match="quote them"):
        LabelTask.from_dict(yaml.safe_load("name: agree\nlabels: {yes: agrees, no: disagrees}"), "t.yaml")
    with pytest.raises(SpecError, match="quote them"):
        LabelTask.from_dict(yaml.safe_load("name: agree\nlabels: [yes, no]"), "t.yaml")
    assert LabelTask.from_dict(yaml.safe_load("name: agree\nlabels: {'yes': a, 'no': b}"), "t").labels == (
        "yes",
        "no",
    )
    bank = load_bank({"prompts": [{"id": "p", "user": "{text}", "tasks": "sentiment"}]}, "b")
    assert bank.prompts[0].tasks == ("sentiment",)
    with pytest.raises(SpecError, match="list of task names"):
        load_bank({"prompts": [{"id": "p", "user": "{text}", "tasks": {"a": 1}}]}, "b")
