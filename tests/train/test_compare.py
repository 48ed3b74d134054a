"""The comparison grid: every run once, resumable, summarised with the teacher beside the methods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="training needs the train extra")

from train.compare import Grid, run_grid
from train.errors import TrainError

from .test_loop import synthetic, tiny_student


@pytest.mark.slow
def test_grid_runs_once_resumes_and_summarises(tmp_path: Path) -> None:
    """2 methods × 1 budget × 2 seeds: four runs, none repeated on a rerun, a table with mean ± std."""
    data = synthetic(30)
    grid = Grid.from_dict(
        {
            "methods": ["method", "ce_human"],
            "budgets": [0.5],
            "seeds": [1, 2],
            "fit": {
                "pretrain_epochs": 1,
                "finetune_epochs": 2,
                "lr": 3e-3,
                "head_lr": 3e-3,
                "max_length": 16,
                "batch_size": 16,
            },
        }
    )
    ran: list[str] = []
    summary = run_grid(data, grid, tmp_path, model_factory=tiny_student, on_run=ran.append)
    assert sorted(ran) == ["ce_human-b0.5-s1", "ce_human-b0.5-s2", "method-b0.5-s1", "method-b0.5-s2"]
    assert [(r["method"], r["runs"]) for r in summary["rows"]] == [("method", 2), ("ce_human", 2)]
    mean, std = summary["rows"][0]["sentiment/macro_f1"]
    assert 0 <= mean <= 1
    assert std >= 0
    assert "sentiment" in summary["teacher"]
    again: list[str] = []
    run_grid(data, grid, tmp_path, model_factory=tiny_student, on_run=again.append)
    assert again == []  # everything was cached on disk
    assert "± " in (tmp_path / "compare.md").read_text()
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert json.loads((tmp_path / "compare.json").read_text())["rows"]


def test_bad_grids_are_refused() -> None:
    """Unknown methods or fit settings are named in the error."""
    with pytest.raises(TrainError, match="magic"):
        Grid.from_dict({"methods": ["magic"]})
    with pytest.raises(TrainError, match="learning_rate"):
        Grid.from_dict({"fit": {"learning_rate": 1}})


@pytest.mark.slow
def test_the_llm_stage_runs_once_per_seed_across_budgets_and_finetune_only_variants(tmp_path: Path) -> None:
    """Budgets and fine-tuning-only variants share one cached LLM stage; a loss setting does not; a
    run that loads the cached stage ends exactly where one that trained it would."""
    data = synthetic(30)
    fit = {"pretrain_epochs": 1, "finetune_epochs": 1, "lr": 3e-3, "head_lr": 3e-3, "max_length": 16}
    grid = Grid.from_dict(
        {
            "methods": ["method"],
            "budgets": [0.3, 0.6],
            "seeds": [1],
            "fit": fit,
            "variants": {"base": {}, "joint": {"joint_lambda": 0.5}, "hinge": {"form": "hinge"}},
        }
    )
    ran: list[str] = []
    summary = run_grid(data, grid, tmp_path, model_factory=tiny_student, on_run=ran.append)
    assert len(ran) == 6
    assert "method-joint-b0.3-s1" in ran
    assert len(list((tmp_path / "pretrained").glob("*.pt"))) == 2  # base (shared with joint), hinge
    assert [r["method"] for r in summary["rows"]][:2] == ["method (base)", "method (base)"]
    # the same run from scratch, without the cache, gives the same test scores
    fresh = tmp_path / "fresh"
    again = Grid.from_dict({"methods": ["method"], "budgets": [0.6], "seeds": [1], "fit": fit})
    run_grid(data, again, fresh, model_factory=tiny_student)
    cached = json.loads((tmp_path / "runs" / "method-base-b0.6-s1.json").read_text())["test"]
    scratch = json.loads((fresh / "runs" / "method-b0.6-s1.json").read_text())["test"]
    assert cached == pytest.approx(scratch)


def test_variants_are_checked_like_fit_settings() -> None:
    with pytest.raises(TrainError, match="variant 'x': unknown fit settings \\['tua'\\]"):
        Grid.from_dict({"variants": {"x": {"tua": 0.1}}})
