"""Controlled perturbations of the LLM ensemble, for robustness experiments (grid key ``perturb:``).

The only one so far is a **dialogue-level bias**: an LLM that reads a whole conversation is swayed by
its overall tone or topic, and leans every turn of it towards one label. Modelled per dialogue and
task: one class ``c_d`` is drawn (seeded by the dialogue id), and every utterance's ensemble score
becomes ``(1 − b)·s(u) + b·onehot(c_d)``. Within a dialogue, score differences only shrink by
``(1 − b)``, so the intra-dialogue preference loss sees the same rankings; the hard label, the soft
label and GCE's target all move towards ``c_d``. It measures the claim that comparing utterances of
one dialogue cancels dialogue-level LLM bias; real LLM bias is not this clean.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from train.data import Dataset
from train.errors import TrainError

PERTURBATIONS = ("dialogue_bias",)


def _class_for(dialogue_id: str, task: str, n: int, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{task}\x00{dialogue_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def dialogue_bias(data: Dataset, strength: float, seed: int = 0) -> Dataset:
    """The dataset with every dialogue's ensemble scores pulled by ``strength`` towards one class."""
    if not 0 <= strength < 1:
        raise TrainError(f"dialogue_bias strength must be in [0, 1), not {strength}")
    dialogue_of = {uid: u.dialogue_id for uid, u in data.utterances.items()}
    ensemble: dict[str, dict[str, list[float]]] = {}
    for task, scores in data.ensemble.items():
        n = len(data.labels[task])
        shifted = {}
        for uid, probs in scores.items():
            c = _class_for(dialogue_of[uid], task, n, seed)
            shifted[uid] = [(1 - strength) * p + (strength if k == c else 0.0) for k, p in enumerate(probs)]
        ensemble[task] = shifted
    return replace(data, ensemble=ensemble)


def apply(data: Dataset, spec: dict[str, Any]) -> Dataset:
    """Apply a grid's ``perturb:`` mapping, e.g. ``{dialogue_bias: 0.3, seed: 0}``."""
    unknown = set(spec) - {*PERTURBATIONS, "seed"}
    if unknown:
        raise TrainError(f"perturb: unknown keys {sorted(unknown)}; known: {[*PERTURBATIONS, 'seed']}")
    if "dialogue_bias" in spec:
        data = dialogue_bias(data, float(spec["dialogue_bias"]), int(spec.get("seed", 0)))
    return data
