"""``parley stream replay-dlq``: send chosen DLQ records' original inputs back to be labelled again.

After the cause of a rejection is fixed (an engine rolled back after ``inference_failed``, a size
limit raised after ``too_large``), the records filed under it can go back to the input topic, byte
for byte, with their original keys. The DLQ is read without a consumer group (it moves no one's
offsets) from its first record to its end as it is when the command starts. A record whose original
was cut to fit the DLQ cannot be replayed and is reported, never sent half.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime

from parley.connections import KafkaSettings
from parley.contracts import RejectCode
from stream.contracts import DlqRecord
from stream.errors import StreamError
from stream.send import Message, send_messages
from stream.tail import Record, read_to_end


@dataclass(frozen=True, slots=True)
class Selection:
    """Which DLQ records to replay; every given criterion must hold."""

    reasons: frozenset[RejectCode] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    """DLQ offsets, inclusive (what ``parley stream tail --topic utterances-dlq`` shows)."""

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None and bound.tzinfo is None:
                raise StreamError(
                    f"time {bound.isoformat()} needs a UTC offset, e.g. 2026-12-01T10:00:00+00:00"
                )
        if self.from_offset is not None and self.to_offset is not None and self.from_offset > self.to_offset:
            raise StreamError(f"--from-offset {self.from_offset} is after --to-offset {self.to_offset}")

    def wants(self, record: Record, dead: DlqRecord) -> bool:
        return (
            (not self.reasons or dead.reason in self.reasons)
            and (self.since is None or dead.failed_at >= self.since)
            and (self.until is None or dead.failed_at <= self.until)
            and (self.partition is None or record.partition == self.partition)
            and (self.from_offset is None or record.offset >= self.from_offset)
            and (self.to_offset is None or record.offset <= self.to_offset)
        )


@dataclass(slots=True)
class ReplayReport:
    read: int = 0
    matched: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    cut: list[str] = field(default_factory=list)
    """partition:offset of matched records whose original was truncated (not replayable)."""
    unreadable: list[str] = field(default_factory=list)
    """partition:offset of DLQ records that are not valid DLQ records."""
    messages: list[Message] = field(default_factory=list)


async def replay_dlq(
    kafka: KafkaSettings,
    dlq_topic: str,
    to_topic: str,
    selection: Selection,
    *,
    dry_run: bool = False,
    on_read: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Select DLQ records and (unless ``dry_run``) send their originals to ``to_topic``."""
    report = ReplayReport()
    async with aclosing(read_to_end(kafka, dlq_topic)) as records:
        async for record in records:
            report.read += 1
            if on_read is not None:
                on_read(1)
            where = f"{record.partition}:{record.offset}"
            try:
                dead = DlqRecord.model_validate_json(record.value)
            except ValueError:
                report.unreadable.append(where)
                continue
            if not selection.wants(record, dead):
                continue
            report.matched[dead.reason.value] += 1
            if dead.original_truncated:
                report.cut.append(where)
                continue
            report.messages.append(Message(dead.original_key, dead.original_value))
    if report.messages and not dry_run:
        await send_messages(kafka, to_topic, report.messages)
        report.sent = len(report.messages)
    return report


def parse_reasons(values: tuple[str, ...]) -> frozenset[RejectCode]:
    try:
        return frozenset(RejectCode(v) for v in values)
    except ValueError:
        known = ", ".join(c.value for c in RejectCode)
        raise StreamError(f"unknown reason in {list(values)}; the reasons are: {known}") from None
