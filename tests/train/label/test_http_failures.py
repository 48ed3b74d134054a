"""The HTTP backend's failure paths, against a local server whose answers the test scripts.

Canned responses are used only here, to drive what a real endpoint does on a bad day (429 bursts,
500s, time-outs, malformed JSON, labels outside the set); the tests assert what the client did.
The happy path runs against the real SmolLM2 model in test_real_model.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from train.data import Utterance
from train.label.backend import BackendUnavailable, LabelRequest
from train.label.cache import AnswerCache
from train.label.http import HttpOptions, OpenAIBackend, RateLimiter
from train.label.run import label
from train.label.spec import Prompt, PromptBank, Rendered, read_task

LABELS = ("inform", "question", "directive", "commissive")
MODEL = "scripted"


def completion(content: str, logprobs: list[tuple[str, float]] | None = None, n: int = 1) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "logprobs": None,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": logprobs[0][0],
                    "logprob": logprobs[0][1],
                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in logprobs],
                }
            ]
        }
    choices = [json.loads(json.dumps(dict(choice, index=k))) for k in range(n)]
    return {"choices": choices, "usage": {"prompt_tokens": 30, "completion_tokens": 2}}


@dataclass
class Script:
    """Responses in order (the last one repeats); each is (status, body or callable, headers, delay)."""

    steps: list[tuple[int, Any, dict[str, str], float]]
    payloads: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    models_status: int = 200

    async def chat(self, request: web.Request) -> web.Response:
        self.payloads.append(await request.json())
        status, body, headers, delay = self.steps[min(len(self.payloads) - 1, len(self.steps) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, headers=headers, content_type="application/json")

    async def models(self, _: web.Request) -> web.Response:
        if self.models_status != 200:
            return web.json_response({"error": "no"}, status=self.models_status)
        return web.json_response({"data": [{"id": MODEL}]})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[TestServer] = []

    async def start(script: Script) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", script.chat)
        app.router.add_get("/v1/models", script.models)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}/v1"

    yield start
    for s in servers:
        await s.close()


def backend(url: str, delays: list[float] | None = None, **options: Any) -> OpenAIBackend:
    recorded = delays if delays is not None else []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)
        await asyncio.sleep(0)

    defaults: dict[str, Any] = {
        "backoff_base_s": 0.5,
        "backoff_cap_s": 4.0,
        "max_retries": 4,
        "timeout_s": 5.0,
    }
    return OpenAIBackend(HttpOptions(base_url=url, model=MODEL, **{**defaults, **options}), sleep=sleep)


def request(text: str = "Could you pass the salt?") -> LabelRequest:
    return LabelRequest(text, Rendered("", f'Label: "{text}"'), LABELS)


async def test_a_429_burst_is_retried_with_bounded_jittered_backoff_and_retry_after(serve: Any) -> None:
    script = Script(
        [
            (429, {"error": "slow down"}, {}, 0.0),
            (429, {"error": "slow down"}, {"Retry-After": "1.5"}, 0.0),
            (503, {"error": "busy"}, {}, 0.0),
            (200, completion("question", [("question", -0.05), ("inform", -3.0)]), {}, 0.0),
        ]
    )
    delays: list[float] = []
    b = backend(await serve(script), delays)
    [answer] = await b.score([request()])
    await b.close()
    assert answer.label == "question"
    assert answer.failed is None
    assert len(script.payloads) == 4
    assert b.stats.retries == 3
    # full jitter within base·2^k, capped; Retry-After (1.5 s) is a floor for the retry that follows it
    assert 0 <= delays[0] <= 0.5  # after the first 429: up to base
    assert delays[1] == 1.5  # after the 429 with Retry-After: 1.5 (a floor above any jitter ≤ 1.0 here)
    assert 0 <= delays[2] <= 2.0  # after the 503: up to base·2²
    assert all(0 <= d <= 4.0 for d in delays)


async def test_persistent_500s_end_as_a_failed_request_that_is_not_cached(serve: Any, tmp_path: Path) -> None:
    script = Script([(500, {"error": "boom"}, {}, 0.0)])
    delays: list[float] = []
    b = backend(await serve(script), delays, max_retries=3)
    cache = AnswerCache(tmp_path / "cache.sqlite")
    task = read_task("dialogue_act")
    bank = PromptBank((Prompt("p", "{labels}: {text}"),))
    utts = {"u1": Utterance("u1", "d", 0, "Could you pass the salt?", "train")}
    summary = await label(utts, [task], bank, b, cache, tmp_path / "out", progress=False)
    await b.close()
    assert len(script.payloads) == 4  # one try and three retries, then it gives up
    assert [d <= min(4.0, 0.5 * 2**k) for k, d in enumerate(delays)] == [True] * 3
    assert summary.failed == 1
    assert summary.answered == 0
    assert "HTTP 500" in next(iter(summary.failure_reasons))
    assert len(cache) == 0
    assert (tmp_path / "out" / "llm_labels.jsonl").read_text() == ""


async def test_time_outs_are_retried_then_reported(serve: Any) -> None:
    script = Script([(200, completion("inform"), {}, 2.0)])
    b = backend(await serve(script), timeout_s=0.2, max_retries=2)
    [answer] = await b.score([request()])
    await b.close()
    assert answer.failed is not None
    assert "time-out" in answer.failed
    assert len(script.payloads) == 3


async def test_malformed_json_and_labels_outside_the_set_become_recorded_abstentions(
    serve: Any, tmp_path: Path
) -> None:
    script = Script(
        [
            (200, "{not json", {}, 0.0),
            (200, completion("banana"), {}, 0.0),
            (200, {"choices": "nope"}, {}, 0.0),
            (200, completion("Question."), {}, 0.0),
        ]
    )
    b = backend(await serve(script), concurrency=1)
    task = read_task("dialogue_act")
    bank = PromptBank((Prompt("p", "{labels}: {text}"),))
    utts = {f"u{k}": Utterance(f"u{k}", "d", k, f"utterance number {k}", "train") for k in range(4)}
    summary = await label(utts, [task], bank, b, AnswerCache(tmp_path / "c.sqlite"), tmp_path, progress=False)
    await b.close()
    records = [json.loads(line) for line in (tmp_path / "llm_labels.jsonl").read_text().splitlines()]
    reasons = [r.get("abstained", "") for r in records]
    assert summary.abstained == 3
    assert summary.answered == 1
    assert reasons[0].startswith("malformed response")
    assert reasons[1].startswith("label outside the set")
    assert reasons[2].startswith("malformed response")
    assert records[3]["label"] == "question"
    assert "abstained" not in records[3]
    assert all(r["label"] is None and r["scores"] == {} for r in records[:3])
    ensemble = [json.loads(line) for line in (tmp_path / "ensemble.jsonl").read_text().splitlines()]
    assert [e["prompts"] for e in ensemble] == [0, 0, 0, 1]
    assert summary.abstention_reasons == {"malformed response": 2, "label outside the set": 1}


async def test_without_logprobs_auto_scoring_falls_back_to_sampled_answers(serve: Any) -> None:
    def sampled(n: int) -> dict[str, Any]:
        body = completion("question", None, n)
        body["choices"][1]["message"]["content"] = "inform"
        return body

    script = Script([(200, completion("question"), {}, 0.0), (200, sampled(5), {}, 0.0)])
    b = backend(await serve(script), concurrency=1, samples=5)
    first, second = await b.score([request("a")]) + await b.score([request("b")])
    await b.close()
    assert script.payloads[0]["logprobs"] is True
    assert "n" not in script.payloads[0]
    assert script.payloads[1]["n"] == 5
    assert script.payloads[1]["temperature"] == 1.0
    assert first.label == "question"
    assert second.scores == {"inform": 0.2, "question": 0.8, "directive": 0.0, "commissive": 0.0}


async def test_concurrency_is_bounded(serve: Any) -> None:
    """Requests are held by the server until released: with concurrency 3, exactly 3 are ever in flight."""
    release, three_held = asyncio.Event(), asyncio.Event()
    script = Script([(200, completion("inform", [("inform", -0.1)]), {}, 0.0)])

    async def chat(request: web.Request) -> web.Response:
        script.payloads.append(await request.json())
        script.in_flight += 1
        script.max_in_flight = max(script.max_in_flight, script.in_flight)
        if script.in_flight == 3:
            three_held.set()
        await release.wait()
        script.in_flight -= 1
        return web.json_response(completion("inform", [("inform", -0.1)]))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b = backend(f"http://127.0.0.1:{server.port}/v1", concurrency=3)
    scoring = asyncio.create_task(b.score([request(str(k)) for k in range(12)]))
    await asyncio.wait_for(three_held.wait(), 30)  # the first three arrive and are held
    for _ in range(20):  # give a fourth every chance to arrive while the three are held
        await asyncio.sleep(0.01)
    held = script.in_flight
    release.set()
    answers = await scoring
    await b.close()
    await server.close()
    assert held == 3
    assert script.max_in_flight == 3
    assert [a.label for a in answers] == ["inform"] * 12


async def test_rate_limit_spaces_request_starts() -> None:
    clock = [100.0]
    slept: list[float] = []
    limiter = RateLimiter(600, clock=lambda: clock[0])

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    import train.label.http as http

    original = http.asyncio.sleep
    http.asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        for _ in range(4):
            await limiter.wait()
    finally:
        http.asyncio.sleep = original  # type: ignore[assignment]
    assert slept == pytest.approx([0.1, 0.2, 0.3])  # 600/min: one start every 0.1 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_dead_endpoint_fails_fast_with_a_clear_message() -> None:
    b = backend(f"http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(BackendUnavailable, match=r"cannot reach the LLM endpoint .* is the server running"):
        await b.check()
    await b.close()


async def test_a_rejected_key_or_unknown_model_stops_before_any_labelling(serve: Any) -> None:
    script = Script([(200, completion("inform"), {}, 0.0)], models_status=401)
    b = backend(await serve(script))
    with pytest.raises(BackendUnavailable, match="rejected the API key"):
        await b.check()
    await b.close()
    other = OpenAIBackend(HttpOptions(base_url=await serve(Script([])), model="gpt-9"))
    with pytest.raises(BackendUnavailable, match="does not serve model 'gpt-9'"):
        await other.check()
    await other.close()
    assert script.payloads == []


async def test_an_endpoint_that_keeps_failing_stops_the_run(serve: Any) -> None:
    script = Script([(502, "bad gateway", {}, 0.0)])
    b = backend(await serve(script), max_retries=0, max_consecutive_failures=3, concurrency=1)
    with pytest.raises(BackendUnavailable, match="3 requests in a row failed"):
        await b.score([request(str(k)) for k in range(10)])
    await b.close()
    assert len(script.payloads) <= 4


async def test_the_api_key_is_sent_as_a_bearer_token_and_never_logged(serve: Any, capsys: Any) -> None:
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(completion("inform", [("inform", -0.1)]))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b = OpenAIBackend(
        HttpOptions(base_url=f"http://127.0.0.1:{server.port}/v1", model=MODEL, api_key="sk-secret-123")
    )
    await b.score([request()])
    await b.close()
    await server.close()
    assert seen == ["Bearer sk-secret-123"]
    assert "sk-secret-123" not in capsys.readouterr().err


async def test_a_server_refusing_logprobs_switches_every_request_in_flight_to_samples(serve: Any) -> None:
    """Requests already sent with logprobs when the first refusal comes back are asked again with n."""
    script = Script([])

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        script.payloads.append(body)
        await asyncio.sleep(0.02)
        if body.get("logprobs"):
            return web.json_response({"error": {"message": "logprobs are not supported"}}, status=400)
        return web.json_response(completion("directive", None, body["n"]))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b = backend(f"http://127.0.0.1:{server.port}/v1", concurrency=8, samples=3)
    answers = await b.score([request(str(k)) for k in range(8)])
    await b.close()
    await server.close()
    assert [a.label for a in answers] == ["directive"] * 8
    assert all(a.failed is None and a.abstained is None for a in answers)
    assert b.scoring == "samples"


async def test_other_client_errors_are_failures_not_cached_abstentions(serve: Any, tmp_path: Path) -> None:
    script = Script([(422, {"error": "max_tokens is not supported"}, {}, 0.0)])
    b = backend(await serve(script), max_consecutive_failures=50)
    cache = AnswerCache(tmp_path / "c.sqlite")
    utts = {"u1": Utterance("u1", "d", 0, "hello", "train")}
    bank = PromptBank((Prompt("p", "{labels}: {text}"),))
    summary = await label(utts, [read_task("dialogue_act")], bank, b, cache, tmp_path, progress=False)
    await b.close()
    assert summary.failed == 1
    assert summary.abstained == 0
    assert len(script.payloads) == 1  # a 422 is not retried: asking again will not change it
    assert len(cache) == 0


async def test_logprobs_are_read_at_the_token_that_begins_a_label(serve: Any) -> None:
    body = completion("The label is question")
    body["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": "The",
                "logprob": -0.01,
                "top_logprobs": [{"token": "The", "logprob": -0.01}, {"token": " I", "logprob": -6}],
            },
            {"token": " label", "logprob": -0.1, "top_logprobs": [{"token": " label", "logprob": -0.1}]},
            {"token": " is", "logprob": -0.1, "top_logprobs": [{"token": " is", "logprob": -0.1}]},
            {
                "token": " question",
                "logprob": -0.2,
                "top_logprobs": [
                    {"token": " question", "logprob": -0.2},
                    {"token": " directive", "logprob": -2.0},
                ],
            },
        ]
    }
    script = Script([(200, body, {}, 0.0), (200, completion("", [("**", -0.1)]), {}, 0.0)])
    b = backend(await serve(script), concurrency=1)
    [answer] = await b.score([request()])
    assert answer.label == "question"
    assert answer.scores is not None
    assert answer.scores["directive"] > 0
    [empty] = await b.score([request("again")])
    await b.close()
    assert empty.abstained == "empty answer"
    assert b.scoring == "auto"  # an empty answer with logprobs is no reason to switch to sampling


def test_the_command_reports_a_dead_endpoint_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "u.jsonl").write_text('{"id": "u1", "text": "hello"}\n')
    done = subprocess.run(
        [sys.executable, "-c", "from parley.cli import main; main()", "train", "label",
         "--utterances", str(tmp_path / "u.jsonl"), "--task", "sentiment", "--backend", "openai",
         "--base-url", f"http://127.0.0.1:{_free_port()}/v1", "--model", "m", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: cannot reach the LLM endpoint" in done.stderr
    assert "Traceback" not in done.stderr
