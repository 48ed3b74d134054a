"""Named recipes: what `parley train fit` trains without a method flag, and how flags combine."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from parley.cli import cli
from train.errors import TrainError
from train.recipes import RECIPES, recipe_settings


def test_no_flag_trains_the_default_recipe_and_a_method_alone_trains_it_plainly() -> None:
    assert recipe_settings(None, None) == RECIPES["default"]
    assert recipe_settings("v2", None)["calibrate_prompts"] == "temperature"
    assert recipe_settings(None, "distill") == {"method": "distill"}  # a baseline on plain settings
    recipe_settings(None, None)["method"] = "changed"  # a copy: the table itself cannot be changed
    assert RECIPES["default"]["method"] != "changed"


def test_every_recipe_is_a_valid_fit_config_that_the_command_line_cannot_silently_undo() -> None:
    """fit and loop pass their own options (epochs, length, device, …) after the recipe, so a recipe
    must not set them: it would be overridden without a word."""
    pytest.importorskip("torch", reason="training needs the train extra")
    from train.loop import FitConfig

    given_by_options = {"model_name", "encoder", "version", "seed", "pretrain_epochs", "finetune_epochs"}
    given_by_options |= {"max_length", "device"}
    for name in RECIPES:
        settings = recipe_settings(name, None)
        FitConfig(**settings)
        assert not set(settings) & given_by_options, name


def test_a_recipe_and_a_method_together_or_an_unknown_recipe_are_refused() -> None:
    with pytest.raises(TrainError, match="names its own method"):
        recipe_settings("v2", "distill")
    with pytest.raises(TrainError, match="unknown recipe"):
        recipe_settings("v9", None)


def test_the_fit_command_refuses_both_flags_before_loading_anything(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    for name in ("u.jsonl", "g.jsonl", "labels.json"):
        (base / name).write_text("")
    args = ["train", "fit", "--utterances", str(base / "u.jsonl"), "--gold", str(base / "g.jsonl")]
    args += ["--labels", str(base / "labels.json"), "--out", str(base / "ckpt")]
    result = CliRunner().invoke(cli, [*args, "--recipe", "v2", "--method", "distill"])
    assert result.exit_code == 2
    assert "names its own method" in result.output
