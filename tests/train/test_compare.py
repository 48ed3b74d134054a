"""The comparison grid: every run once, resumable, summarised with the teacher beside the methods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="training needs the train extra")

from train.compare import Grid, read_probabilities, run_grid
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


def test_only_runs_the_named_runs_in_the_order_given_and_records_predictions(tmp_path: Path) -> None:
    data = synthetic(30)
    grid = Grid.from_dict(
        {
            "methods": ["method", "ce_human"],
            "budgets": [0.5],
            "seeds": [1, 2],
            "fit": {"pretrain_epochs": 1, "finetune_epochs": 1, "max_length": 16, "batch_size": 16},
        }
    )
    ran: list[str] = []
    run_grid(
        data,
        grid,
        tmp_path,
        model_factory=tiny_student,
        on_run=ran.append,
        only=["ce_human-*-s2", "method-*"],
    )
    assert ran == ["ce_human-b0.5-s2", "method-b0.5-s1", "method-b0.5-s2"]
    record = json.loads((tmp_path / "runs" / "method-b0.5-s1.json").read_text())
    test_ids = {u.id for u in data.utterances.values() if u.split == "test"}
    assert set(record["test_predictions"]["sentiment"]) == test_ids
    assert set(record["test_predictions"]["sentiment"].values()) <= {0, 1, 2}
    calibration = record["calibration"]["sentiment"]
    assert 0 <= calibration["ece"] <= 1
    assert 0 <= calibration["ece_scaled"] <= 1
    assert calibration["temperature"] > 0
    assert calibration["temperature_map"] > 0
    assert 0 <= calibration["ece_scaled_map"] <= 1
    # the probabilities behind the record, for calibration after the fact
    parts = read_probabilities(tmp_path / "probs" / "method-b0.5-s1.npz")
    ids, probs = parts["test"]
    assert set(ids) == test_ids
    assert probs["sentiment"].shape == (len(ids), 3)
    assert np.allclose(probs["sentiment"].sum(1), 1, atol=1e-4)
    predicted = dict(zip(ids, probs["sentiment"].argmax(1).tolist(), strict=True))
    assert predicted == record["test_predictions"]["sentiment"]
    assert len(parts["dev"][0]) > 0
    with pytest.raises(TrainError, match="matches none"):
        run_grid(data, grid, tmp_path, model_factory=tiny_student, only=["gce-*"])


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


def _write_grid(data, tmp_path: Path, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    """The dataset as files in the ../shared/data layout, and a one-run grid over them."""
    labels = data.labels["sentiment"]
    rows = [
        {"id": u.id, "dialogue_id": u.dialogue_id, "turn": u.turn, "text": u.text, "split": u.split}
        for u in data.utterances.values()
    ]
    gold = [{"id": i, "task": "sentiment", "label": g} for i, g in data.gold["sentiment"].items()]
    llm = [
        {
            "id": i,
            "task": "sentiment",
            "prompt_id": "p1",
            "label": labels[max(range(3), key=lambda k: p[k])],
            "scores": dict(zip(labels, p, strict=True)),
        }
        for i, p in data.ensemble["sentiment"].items()
    ]
    for name, records in (("u.jsonl", rows), ("g.jsonl", gold), ("l.jsonl", llm)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "labels.json").write_text(json.dumps({"sentiment": labels}))
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "data: {utterances: u.jsonl, gold: g.jsonl, llm: l.jsonl, labels: labels.json}\n"
        "methods: [method]\nbudgets: [0.5]\nseeds: [1]\nfit: {max_length: 16}\n" + extra
    )
    return spec


def test_a_grid_file_applies_its_perturbation(tmp_path: Path) -> None:
    """`perturb:` in the grid file reaches the loaded ensemble (and so the cache key)."""
    from train.compare import load_grid

    data = synthetic(12)
    clean, _ = load_grid(_write_grid(data, tmp_path))
    biased, _ = load_grid(_write_grid(data, tmp_path, "perturb: {dialogue_bias: 0.5}\n"))
    assert set(clean.ensemble["sentiment"]) == set(biased.ensemble["sentiment"])
    assert clean.ensemble != biased.ensemble
    with pytest.raises(TrainError, match="unknown keys"):
        load_grid(_write_grid(data, tmp_path, "perturb: {dialogue_shuffle: 1}\n"))


def test_compare_on_cuda_without_a_gpu_says_so(tmp_path: Path) -> None:
    """`compare --device cuda` on a machine without CUDA stops with the reason, before any run."""
    import torch
    from click.testing import CliRunner

    from parley.cli import cli

    if torch.cuda.is_available():
        pytest.skip("checks the error on a machine without CUDA")
    spec = _write_grid(synthetic(12), tmp_path)
    result = CliRunner().invoke(
        cli,
        ["train", "compare", str(spec), "--out", str(tmp_path / "out"), "--device", "cuda"],
        env={"PARLEY_TRAIN_LOG_FORMAT": "json"},
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, TrainError)  # parley's main() prints it as "error: …", exit 1
    assert "no CUDA GPU" in str(result.exception)
    assert not list((tmp_path / "out" / "runs").glob("*.json"))


def test_budgets_may_be_fractions_or_counts_per_class() -> None:
    """A grid's budgets mix fractions and N/class; run names and summary order follow."""
    from train.compare import run_name
    from train.data import DataError, budget_order

    grid = Grid.from_dict({"methods": ["ce_human"], "budgets": ["20/class", 0.05], "seeds": [1]})
    assert [run_name(m, b, s, v) for v, m, b, s in grid.runs()] == [
        "ce_human-b20pc-s1",
        "ce_human-b0.05-s1",
    ]
    assert sorted(grid.budgets, key=budget_order) == [0.05, "20/class"]
    with pytest.raises(DataError, match="N/class"):
        Grid.from_dict({"budgets": ["lots"]})
