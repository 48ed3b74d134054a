"""``parley stream send``: conversations from a JSONL file into the ``utterances`` topic.

Each line is an utterance in the ``utterances`` contract, or in the benchmark layout of
../shared/data (``id``, ``dialogue_id``, ``turn``, ``speaker``, ``text``), which is mapped onto it.
Lines are validated before anything is sent (``raw=True`` sends them byte for byte, which is how
tests feed malformed input to the worker). Every message is keyed by conversation_id and the call
returns only after Kafka acknowledged all of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.clients import kafka_producer
from parley.connections import KafkaSettings
from parley.contracts import ContractError
from stream.contracts import DEFAULT_LIMITS, TextLimits, Utterance, decode_utterance, encode
from stream.errors import StreamError

# Fields of ../shared/data/*/utterances.jsonl and their names in the utterances contract.
_BENCHMARK_LAYOUT = {"id": "utterance_id", "dialogue_id": "conversation_id"}
_BENCHMARK_ONLY = ("split",)


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class SendReport:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("inf")


def _to_contract_layout(obj: dict[str, Any]) -> dict[str, Any]:
    if "utterance_id" in obj or "id" not in obj:
        return obj
    mapped = {_BENCHMARK_LAYOUT.get(k, k): v for k, v in obj.items() if k not in _BENCHMARK_ONLY}
    if isinstance(mapped.get("conversation_id"), int):
        mapped["conversation_id"] = str(mapped["conversation_id"])
    return mapped


def read_utterances(path: Path, limits: TextLimits = DEFAULT_LIMITS) -> list[Utterance]:
    """Every line of a JSONL file as a valid Utterance; the first bad line raises with its number."""
    utterances = []
    for number, line in _lines(path):
        try:
            obj = json.loads(line)
            if isinstance(obj, dict):
                line = json.dumps(_to_contract_layout(obj)).encode("utf-8")
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # decode_utterance reports it with the contract's reason
        try:
            utterances.append(decode_utterance(line, limits).utterance)
        except ContractError as exc:
            raise StreamError(f"{path}, line {number}: {exc}") from None
    return utterances


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield number, line
    except FileNotFoundError:
        raise StreamError(f"{path} does not exist") from None


def messages_for(utterances: Sequence[Utterance]) -> list[Message]:
    return [Message(u.conversation_id.encode("utf-8"), encode(u)) for u in utterances]


def raw_messages(path: Path) -> list[Message]:
    """Lines sent as they are; keyed by conversation_id where the line has one, else unkeyed."""
    messages = []
    for _, line in _lines(path):
        key = None
        try:
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("conversation_id"), str):
                key = obj["conversation_id"].encode("utf-8", errors="surrogatepass")
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        messages.append(Message(key, line))
    return messages


def _count_ack(on_sent: Callable[[int], None]) -> Callable[[asyncio.Future[Any]], None]:
    def done(ack: asyncio.Future[Any]) -> None:
        if not ack.cancelled() and ack.exception() is None:
            on_sent(1)

    return done


async def send_messages(
    kafka: KafkaSettings,
    topic: str,
    messages: Sequence[Message],
    *,
    rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> SendReport:
    """Produce every message (at ``rate`` messages/s, or as fast as possible) and wait for all acks."""
    if rate is not None and rate <= 0:
        raise StreamError(f"rate must be positive (messages per second), got {rate}")
    # Room for the largest message (the broker, not this client, decides what is too large).
    largest = max((len(m.value or b"") + len(m.key or b"") for m in messages), default=0)
    producer = kafka_producer(kafka, max_request_size=max(1_048_576, largest + 4096))
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for i, message in enumerate(messages):
            if rate is not None:
                # Pace against the schedule, not the previous send, so the average rate holds.
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            ack = await producer.send(
                topic, message.value, key=message.key, headers=list(message.headers) or None
            )
            if on_sent is not None:
                ack.add_done_callback(_count_ack(on_sent))
            pending.append(ack)
            if len(pending) >= 1000:  # bound what is in flight
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return SendReport(len(messages), time.perf_counter() - started)
