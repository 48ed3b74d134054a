"""Any OpenAI-compatible chat-completions endpoint (vLLM, OpenAI, llama.cpp's server, …) as a backend.

Scores come from the first answer token's ``top_logprobs`` where the server offers them
(``scoring="logprobs"``), otherwise from ``n`` sampled answers (``scoring="samples"``); ``"auto"``
asks for logprobs and falls back to samples for the rest of the run when the server ignores or
refuses them. Requests run at most ``concurrency`` at a time and at most ``requests_per_minute``;
429, 5xx, time-outs and dropped connections are retried with exponential backoff and full jitter
(honouring ``Retry-After``), up to ``max_retries`` times. A request that still fails is returned as
failed (asked again by the next run); an endpoint that cannot be reached, rejects the key or does
not know the model stops the run at once, as do ``max_consecutive_failures`` failures in a row.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from train.label.backend import (
    Answer,
    BackendUnavailable,
    LabelRequest,
    parse_answer,
    scores_from_counts,
    scores_from_top_logprobs,
)

log = structlog.get_logger(__name__)

Scoring = Literal["auto", "logprobs", "samples"]
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpOptions:
    base_url: str
    model: str
    api_key: str | None = None
    scoring: Scoring = "auto"
    samples: int = 5
    top_logprobs: int = 20
    max_answer_tokens: int = 8
    concurrency: int = 8
    requests_per_minute: float = 0.0
    """0: no limit."""
    timeout_s: float = 30.0
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_consecutive_failures: int = 20
    price_prompt_per_1m: float = 0.0
    price_completion_per_1m: float = 0.0


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0
    backoff_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


class RateLimiter:
    """At most ``per_minute`` starts per minute, evenly spaced (0: unlimited)."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._clock = clock

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class OpenAIBackend:
    def __init__(
        self, options: HttpOptions, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.options = options
        self.model = options.model
        self.base_url = options.base_url.rstrip("/")
        self.stats = HttpStats()
        self.scoring: Scoring = options.scoring
        self._sleep = sleep
        self._limiter = RateLimiter(options.requests_per_minute)
        self._semaphore = asyncio.Semaphore(options.concurrency)
        self._consecutive_failures = 0
        # the cache key's backend part: answers scored another way are other answers
        self.kind = "openai/" + (
            options.scoring if options.scoring == "logprobs" else f"{options.scoring}-n{options.samples}"
        )
        self._session_: aiohttp.ClientSession | None = None  # made inside the event loop, on first use

    @property
    def _session(self) -> aiohttp.ClientSession:
        if self._session_ is None:
            headers = {"Content-Type": "application/json"}
            if self.options.api_key:
                headers["Authorization"] = f"Bearer {self.options.api_key}"
            self._session_ = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
                # one connection per request in flight: waiting for a pooled one would eat the time-out
                connector=aiohttp.TCPConnector(limit=self.options.concurrency),
            )
        return self._session_

    async def close(self) -> None:
        if self._session_ is not None:
            await self._session_.close()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        o = self.options
        if not (o.price_prompt_per_1m or o.price_completion_per_1m):
            return None
        return (prompt_tokens * o.price_prompt_per_1m + completion_tokens * o.price_completion_per_1m) / 1e6

    async def check(self) -> None:
        """One quick request to ``/models``: unreachable, key rejected or model unknown stop here."""
        url = f"{self.base_url}/models"
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=min(10.0, self.options.timeout_s))
            ) as resp:
                if resp.status in (401, 403):
                    raise BackendUnavailable(
                        f"{url} rejected the API key (HTTP {resp.status}); set PARLEY_TRAIN_LLM_API_KEY"
                    )
                if resp.status != 200:
                    return  # some compatible servers have no /models; the first real request will tell
                try:
                    body = await resp.json(content_type=None)
                    ids = [m.get("id") for m in body.get("data", [])]
                except (ValueError, AttributeError):
                    return
                if ids and self.model not in ids:
                    raise BackendUnavailable(
                        f"{self.base_url} does not serve model {self.model!r}; it serves {ids[:10]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"cannot reach the LLM endpoint {self.base_url} ({exc.__class__.__name__}: {exc}); "
                "is the server running and the URL right (it usually ends in /v1)?"
            ) from None

    async def score(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        try:
            async with asyncio.TaskGroup() as group:  # one request stopping the run cancels the others
                tasks = [group.create_task(self._one(r)) for r in requests]
        except* BackendUnavailable as errors:
            raise errors.exceptions[0] from None
        return [t.result() for t in tasks]

    # -- one request ------------------------------------------------------------------------------
    def _payload(self, request: LabelRequest, scoring: Scoring) -> dict[str, Any]:
        o = self.options
        payload: dict[str, Any] = {
            "model": o.model,
            "messages": request.prompt.messages(),
            "max_tokens": o.max_answer_tokens,
        }
        if scoring == "samples":
            payload.update(n=o.samples, temperature=1.0)
        else:
            payload.update(temperature=0.0, logprobs=True, top_logprobs=o.top_logprobs)
        return payload

    async def _one(self, request: LabelRequest) -> Answer:
        async with self._semaphore:
            answer = await self._with_retries(request)
        if answer.failed is None:
            self._consecutive_failures = 0
        else:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.options.max_consecutive_failures:
                raise BackendUnavailable(
                    f"{self._consecutive_failures} requests in a row failed at {self.base_url}; "
                    f"the last: {answer.failed}"
                )
        return answer

    async def _with_retries(self, request: LabelRequest) -> Answer:
        o = self.options
        last, retry_after = "", None
        for attempt in range(o.max_retries + 1):
            if attempt:
                delay = random.uniform(0, min(o.backoff_cap_s, o.backoff_base_s * 2 ** (attempt - 1)))
                if retry_after is not None:
                    delay = max(delay, min(retry_after, o.backoff_cap_s))
                self.stats.retries += 1
                self.stats.backoff_s.append(delay)
                await self._sleep(delay)
            await self._limiter.wait()
            try:
                return await self._attempt(request)
            except _Retry as exc:
                last, retry_after = exc.reason, exc.retry_after
                log.debug("llm request retry", reason=last, attempt=attempt)
        return Answer(failed=f"{last} (after {o.max_retries} retries)")

    async def _attempt(self, request: LabelRequest) -> Answer:
        url = f"{self.base_url}/chat/completions"
        for _ in range(2):  # a second time only when the server refused logprobs
            sent = self.scoring
            self.stats.requests += 1
            try:
                async with self._session.post(url, json=self._payload(request, sent)) as resp:
                    status = resp.status
                    self.stats.statuses[str(status)] = self.stats.statuses.get(str(status), 0) + 1
                    text = await resp.text()
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.ClientConnectionError as exc:
                raise _Retry(f"connection: {exc.__class__.__name__}") from None
            except aiohttp.ClientPayloadError as exc:
                raise _Retry(f"incomplete response: {exc.__class__.__name__}") from None
            except TimeoutError:
                raise _Retry(f"time-out after {self.options.timeout_s:g} s") from None
            if status in RETRYABLE or status >= 500:
                raise _Retry(f"HTTP {status}", retry_after)
            if status in (401, 403):
                raise BackendUnavailable(f"{url} rejected the API key (HTTP {status}): {text[:200]}")
            if status == 404:
                raise BackendUnavailable(
                    f"{url} answered 404 (unknown path or model {self.model!r}): {text[:200]}"
                )
            if (
                status == 400
                and sent != "samples"
                and self.options.scoring == "auto"
                and "logprob" in text.lower()
            ):
                self._fallback("the server refuses logprobs")
                continue
            if status != 200:  # not the answer's fault: not cached, asked again by the next run
                return Answer(failed=f"HTTP {status}: {text[:120]}")
            try:
                body = json.loads(text)
                choices = body["choices"]
                usage = body.get("usage") or {}
            except (ValueError, KeyError, TypeError):
                return Answer(abstained=f"malformed response: {text[:80]!r}")
            return self._answer(request, choices, usage, sent)
        return Answer(failed="the server refused logprobs and sampled answers")

    def _fallback(self, why: str) -> None:
        if self.scoring == "auto":
            log.warning("llm scoring falls back to sampled answers", reason=why, samples=self.options.samples)
            self.scoring = "samples"

    def _answer(self, request: LabelRequest, choices: Any, usage: dict[str, Any], sent: Scoring) -> Answer:
        answer = self._parse(request, choices, sent)
        answer.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        answer.completion_tokens = int(usage.get("completion_tokens") or 0)
        return answer

    def _parse(self, request: LabelRequest, choices: Any, sent: Scoring) -> Answer:
        try:
            texts = [str(c["message"].get("content") or "") for c in choices]
        except (KeyError, TypeError, AttributeError):
            return Answer(abstained="malformed response: no message in choices")
        if not texts:
            return Answer(abstained="malformed response: no choices")
        if sent == "samples":
            scores, reason = scores_from_counts(texts, request.labels)
            return Answer(scores=scores, abstained=reason, text=" | ".join(texts))
        logprobs = choices[0].get("logprobs") if isinstance(choices[0], dict) else None
        if self.scoring == "auto" and not (logprobs or {}).get("content") and texts[0].strip():
            self._fallback("the server returned no logprobs")  # an answer, but no logprobs with it
        top = _label_token_alternatives(logprobs, request.labels)
        scores = scores_from_top_logprobs(top, request.labels) if top else None
        if scores is None:  # no usable alternatives: the greedy answer counts as one sample
            label, reason = parse_answer(texts[0], request.labels)
            if label is None:
                return Answer(abstained=reason, text=texts[0])
            scores = {k: float(k == label) for k in request.labels}
        return Answer(scores=scores, text=texts[0])


def _label_token_alternatives(logprobs: Any, labels: Sequence[str]) -> list[tuple[str, float]] | None:
    """The alternatives at the first answer token that itself begins a label ("The label is
    question" is scored at "question", not at "The"); None when no token begins one."""
    try:
        content = logprobs["content"]
    except (KeyError, TypeError):
        return None
    for entry in content or []:
        token = str(entry.get("token", ""))
        if not token.strip(" \n\t\"'`*:"):
            continue
        if scores_from_top_logprobs([(token, 0.0)], labels) is not None:
            return [(str(t["token"]), float(t["logprob"])) for t in entry.get("top_logprobs") or [entry]]
    return None


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
