"""label-report on records whose right answers the test knows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from train.data import DataError
from train.label.report import build, cohen_kappa

LABELS = ["inform", "question", "directive"]


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fixture(tmp_path: Path) -> tuple[Path, Path]:
    gold = ["inform", "question", "directive", "inform", "question", "inform"]
    # prompt "right" is always right; "lazy" always says inform; "odd" abstains on u5
    records = []
    for k, g in enumerate(gold):
        records.append(
            {
                "id": f"u{k}",
                "task": "da",
                "prompt_id": "right",
                "label": g,
                "scores": {g: 0.9, "inform" if g != "inform" else "question": 0.1},
            }
        )
        records.append(
            {"id": f"u{k}", "task": "da", "prompt_id": "lazy", "label": "inform", "scores": {"inform": 1.0}}
        )
        if k == 5:
            records.append(
                {
                    "id": f"u{k}",
                    "task": "da",
                    "prompt_id": "odd",
                    "label": None,
                    "scores": {},
                    "abstained": "label outside the set: 'maybe'",
                }
            )
        else:
            records.append({"id": f"u{k}", "task": "da", "prompt_id": "odd", "label": g, "scores": {g: 1.0}})
    llm = write(tmp_path / "llm.jsonl", records)
    golds = write(
        tmp_path / "gold.jsonl",
        [{"id": f"u{k}", "task": "da", "label": g} for k, g in enumerate(gold)]
        + [{"id": "x", "task": "other", "label": "a"}],
    )
    return llm, golds


def test_each_prompt_and_the_ensemble_against_gold(tmp_path: Path) -> None:
    llm, gold = fixture(tmp_path)
    [report] = build(llm, gold, {"da": LABELS})
    assert report.gold_n == 6
    assert report.prompts["right"].accuracy == 1.0
    assert report.prompts["lazy"].accuracy == pytest.approx(3 / 6)
    assert report.prompts["lazy"].macro_f1 == pytest.approx((2 * 3 / (2 * 3 + 3)) / 3)  # F1 of inform, 0, 0
    assert report.prompts["odd"].coverage == pytest.approx(5 / 6)
    assert report.prompts["right"].ece == pytest.approx(0.1)  # always 0.9 confident, always right
    # ensemble of right (0.9/0.1), lazy (inform) and odd (one-hot right): wrong only where lazy outvotes
    assert report.ensemble.accuracy == 1.0
    assert report.abstentions == {"label outside the set": 1}
    assert report.kappa["right"]["odd"] == pytest.approx(1.0)
    assert report.agreement["right"]["lazy"] == pytest.approx(3 / 6)
    assert report.kappa["right"]["lazy"] == pytest.approx(0.0)


def test_confusions_name_the_pairs_the_llm_gets_wrong(tmp_path: Path) -> None:
    rows = [
        {"id": f"u{k}", "task": "da", "prompt_id": "p", "label": "inform", "scores": {"inform": 1.0}}
        for k in range(4)
    ]
    llm = write(tmp_path / "l.jsonl", rows)
    gold = write(
        tmp_path / "g.jsonl",
        [
            {"id": "u0", "task": "da", "label": "question"},
            {"id": "u1", "task": "da", "label": "question"},
            {"id": "u2", "task": "da", "label": "directive"},
            {"id": "u3", "task": "da", "label": "inform"},
        ],
    )
    [report] = build(llm, gold, {"da": LABELS})
    assert report.confusions == [("question", "inform", 2), ("directive", "inform", 1)]
    assert report.errors == 3


def test_the_command_writes_markdown_and_plots(tmp_path: Path) -> None:
    from parley.cli import cli

    llm, gold = fixture(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"da": LABELS}))
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "label-report",
            "--llm",
            str(llm),
            "--gold",
            str(gold),
            "--labels",
            str(tmp_path / "labels.json"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "label-report.md").read_text()
    assert "| **ensemble** | 6 | 1.0000 | 1.0000 |" in text
    for png in ("da-prompts.png", "da-agreement.png"):
        assert (tmp_path / "r" / png).stat().st_size > 1000
    assert json.loads((tmp_path / "r" / "label-report.json").read_text())[0]["task"] == "da"


def test_no_gold_for_any_task_is_an_error(tmp_path: Path) -> None:
    llm = write(
        tmp_path / "l.jsonl",
        [{"id": "u0", "task": "da", "prompt_id": "p", "label": "inform", "scores": {"inform": 1.0}}],
    )
    gold = write(tmp_path / "g.jsonl", [{"id": "u0", "task": "sentiment", "label": "neutral"}])
    with pytest.raises(DataError, match=r"no task of .* has gold labels"):
        build(llm, gold)


def test_kappa() -> None:
    import numpy as np

    a = np.array([0, 1, 2, 0])
    assert cohen_kappa(a, a, 3) == pytest.approx(1.0)
    assert cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2) == pytest.approx(0.0)
