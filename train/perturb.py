"""Controlled perturbations of the LLM labels, for robustness experiments (grid key ``perturb:``).

Realistic LLM noise, applied to each prompt's scores (then averaged again into the ensemble):

- ``mood: β`` — **mood contagion**. An LLM that reads the previous turns labels a neutral "thanks"
  in a complaint as negative: every turn's log-scores are shifted by β times its dialogue's centred
  mean log-scores (the ensemble's, the same shift for every prompt: they read the same conversation).
  Content-correlated: the shift follows what the dialogue says, not a coin.
- ``topic: β`` — the prompt's context moves label priors per conversation with its topic: the shift
  is β times a fixed random projection of the dialogue's mean hashed bag of words (standardised),
  so dialogues about the same things lean the same way.
- ``call_noise: σ`` — labelling a whole dialogue in one call shares its sampling: per (dialogue,
  prompt) one temperature exp(N(0, σ)) and one noise vector N(0, σ) on the log-scores.

Each moves pointwise targets with the dialogue while keeping each prompt's order of the turns of one
dialogue for a class (up to the per-utterance renormalisation).

And the first, simpler one, on the ensemble: a **dialogue-level bias**: an LLM that reads a whole
conversation is swayed by its overall tone or topic, and leans every turn of it towards one label.
Modelled per dialogue and task: one class ``c_d`` is drawn (seeded by the dialogue id), and every
utterance's ensemble score becomes ``(1 − b)·s(u) + b·onehot(c_d)``. Within a dialogue, score
differences only shrink by ``(1 − b)``, so the intra-dialogue preference loss sees the same
rankings; the hard label, the soft label and GCE's target all move towards ``c_d``. It measures the
claim that comparing utterances of one dialogue cancels dialogue-level LLM bias; real LLM bias is
not this clean.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

from train.data import Dataset
from train.errors import TrainError

PERTURBATIONS = ("dialogue_bias", "mood", "topic", "call_noise")
EPS = 1e-4
HASH_DIM = 512


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _log_normalised(row: list[float]) -> np.ndarray:
    p = np.clip(np.asarray(row, dtype=np.float64), 0.0, None)
    p = p / (p.sum() or 1.0)
    return np.log(np.clip(p, EPS, None))


def _softmax(z: np.ndarray) -> list[float]:
    e = np.exp(z - z.max())
    return [float(v) for v in e / e.sum()]


def _need_prompts(data: Dataset, kind: str) -> None:
    if not data.prompts:
        raise TrainError(f"perturb {kind!r} works on the prompts' scores: the data has no LLM labels")


def _shift_prompts(data: Dataset, shift_of: Any) -> Dataset:
    """Every prompt row tempered/shifted: ``shift_of(task, dialogue, prompt, log_row) → new log_row``."""
    dialogue_of = {uid: u.dialogue_id for uid, u in data.utterances.items()}
    prompts = {
        task: {
            uid: {
                p: _softmax(shift_of(task, dialogue_of[uid], p, _log_normalised(row)))
                for p, row in rows.items()
            }
            for uid, rows in by_id.items()
        }
        for task, by_id in data.prompts.items()
    }
    return data.with_prompts(prompts)


def mood(data: Dataset, beta: float) -> Dataset:
    """Mood contagion: each turn's log-scores += β · (its dialogue's centred mean ensemble log-scores)."""
    _need_prompts(data, "mood")
    dialogue_of = {uid: u.dialogue_id for uid, u in data.utterances.items()}
    shifts: dict[str, dict[str, np.ndarray]] = {}
    for task, ens in data.ensemble.items():
        by_dialogue: dict[str, list[np.ndarray]] = defaultdict(list)
        for uid, row in ens.items():
            by_dialogue[dialogue_of[uid]].append(_log_normalised(row))
        shifts[task] = {}
        for d, rows in by_dialogue.items():
            m = np.mean(rows, axis=0)
            shifts[task][d] = m - m.mean()
    return _shift_prompts(data, lambda task, d, p, z: z + beta * shifts[task][d])


def _bag_of_words(texts: list[str]) -> np.ndarray:
    v = np.zeros(HASH_DIM)
    for text in texts:
        for word in set(re.findall(r"[a-z']+", text.lower())):
            v[int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "big") % HASH_DIM] += 1.0
    return v / max(len(texts), 1)


def topic(data: Dataset, beta: float, seed: int = 0) -> Dataset:
    """Topic-driven priors: log-scores += β · standardised (dialogue's mean bag of words · W_task)."""
    _need_prompts(data, "topic")
    dialogues = data.dialogues()
    bags = {d: _bag_of_words([u.text for u in us]) for d, us in dialogues.items()}
    ids = sorted(bags)
    matrix = np.stack([bags[d] for d in ids]) if ids else np.zeros((0, HASH_DIM))
    shifts: dict[str, dict[str, np.ndarray]] = {}
    for task, labels in data.labels.items():
        w = _rng(seed, "topic", task).normal(size=(HASH_DIM, len(labels)))
        raw = matrix @ w
        raw = (raw - raw.mean(0)) / (raw.std(0) + 1e-9)
        raw = raw - raw.mean(1, keepdims=True)
        shifts[task] = dict(zip(ids, raw, strict=True))
    return _shift_prompts(data, lambda task, d, p, z: z + beta * shifts[task][d])


def call_noise(data: Dataset, sigma: float, seed: int = 0) -> Dataset:
    """Noise shared within one call: per (dialogue, prompt) a temperature and a log-score offset."""
    _need_prompts(data, "call_noise")
    cache: dict[tuple[str, str, str], tuple[float, np.ndarray]] = {}

    def shifted(task: str, d: str, p: str, z: np.ndarray) -> np.ndarray:
        key = (task, d, p)
        if key not in cache:
            rng = _rng(seed, "call", *key)
            cache[key] = (float(np.exp(rng.normal(0.0, sigma))), rng.normal(0.0, sigma, size=z.shape))
        temperature, offset = cache[key]
        out: np.ndarray = (z + offset) / temperature
        return out

    return _shift_prompts(data, shifted)


def _class_for(dialogue_id: str, task: str, n: int, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{task}\x00{dialogue_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def _biased(row: list[float], c: int, strength: float) -> list[float]:
    total = sum(row) or 1.0
    return [(1 - strength) * v / total + (strength if k == c else 0.0) for k, v in enumerate(row)]


def dialogue_bias(data: Dataset, strength: float, seed: int = 0) -> Dataset:
    """The dataset with every dialogue's ensemble scores pulled by ``strength`` towards one class."""
    if not 0 <= strength < 1:
        raise TrainError(f"dialogue_bias strength must be in [0, 1), not {strength}")
    dialogue_of = {uid: u.dialogue_id for uid, u in data.utterances.items()}
    if data.prompts:
        # On every prompt's (normalised) row, so that whatever recomputes the ensemble from the
        # prompts later (calibration, agreement) still sees the bias; the mean is biased the same way.
        prompts = {
            task: {
                uid: {
                    p: _biased(
                        row, _class_for(dialogue_of[uid], task, len(data.labels[task]), seed), strength
                    )
                    for p, row in rows.items()
                }
                for uid, rows in by_id.items()
            }
            for task, by_id in data.prompts.items()
        }
        return data.with_prompts(prompts)
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
    """Apply a grid's ``perturb:`` mapping, e.g. ``{mood: 1.0, call_noise: 0.3, seed: 0}``: on the
    prompts mood, then topic, then call noise; dialogue_bias last, on the ensemble."""
    unknown = set(spec) - {*PERTURBATIONS, "seed"}
    if unknown:
        raise TrainError(f"perturb: unknown keys {sorted(unknown)}; known: {[*PERTURBATIONS, 'seed']}")
    seed = int(spec.get("seed", 0))
    if "mood" in spec:
        data = mood(data, float(spec["mood"]))
    if "topic" in spec:
        data = topic(data, float(spec["topic"]), seed)
    if "call_noise" in spec:
        data = call_noise(data, float(spec["call_noise"]), seed)
    if "dialogue_bias" in spec:
        data = dialogue_bias(data, float(spec["dialogue_bias"]), seed)
    return data
