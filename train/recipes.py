"""Named training recipes: a method with its settings, what ``parley train fit`` trains by default.

A recipe is a starting point, not a lock: ``--set NAME=VALUE`` still overrides any of its settings,
and ``--method`` alone trains that method on plain settings (the baselines stay runnable). The
evidence behind ``default`` is in docs/training.md ("The default recipe").
"""

from __future__ import annotations

from typing import Any

from train.errors import TrainError

V1: dict[str, Any] = {"method": "method"}
"""The first reading of the paper: probability gaps, τ 0.1, softplus, entries averaged."""

V2: dict[str, Any] = {
    "method": "method",
    "gap": "log",
    "tau": 0.5,
    "form": "soft",
    "pair_mean": "classes",
    "agreement": "weight",
    "calibrate_prompts": "temperature",
    "distill_weight": 1.0,
}
"""Log-score gaps, soft targets, per-class averaging, agreement-weighted pairs, prompts calibrated on
the budget, class levels anchored by KL."""

PAIRS_HC: dict[str, Any] = {"method": "method", "head_calibration": "bias"}
"""v1's intra-dialogue pairs, then each head's bias refitted on the budget's labels before
fine-tuning: the pairs learn what a dialogue's mood cannot move (orders within the dialogue), the
humans set the class levels that pairs leave unset. The default: it holds the best worst-case margin
over the baselines across noise levels, tasks and corpora of dialogue acts and sentiment
(docs/training.md). Not for many-class intents: on BANKING77 (77 intents, one seed) it trails
distillation far behind; train those with ``--method distill``."""

RECIPES: dict[str, dict[str, Any]] = {"v1": V1, "v2": V2, "pairs-hc": PAIRS_HC}
RECIPES["default"] = RECIPES["pairs-hc"]


def recipe_settings(recipe: str | None, method: str | None) -> dict[str, Any]:
    """The FitConfig settings for ``--recipe`` / ``--method``: a recipe, the default recipe when
    neither is given, or a plain method on its defaults."""
    if recipe is not None and method is not None:
        raise TrainError(
            f"--recipe {recipe} names its own method; give --method {method} alone for the plain method, "
            "or --set to change a recipe's setting"
        )
    if method is not None:
        return {"method": method}
    name = recipe or "default"
    if name not in RECIPES:
        raise TrainError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return dict(RECIPES[name])
