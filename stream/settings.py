"""The worker's settings (environment prefix ``PARLEY_WORKER_``), built once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from parley.connections import DeployableSettings, RedisSettings
from stream.contracts import TextLimits


class WorkerSettings(DeployableSettings):
    """Settings of ``parley stream worker`` and of the stream tools (send, tail, topics, roundtrip)."""

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_WORKER_", frozen=True, extra="forbid", env_nested_delimiter="__"
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    consumer_group: str = Field("parley-worker", min_length=1, description="Kafka consumer group.")
    max_text_chars: int = Field(
        2000, ge=1, le=100_000, description="Longest utterance text accepted, in characters."
    )
    oversize: Literal["reject", "truncate"] = Field(
        "reject", description="Text over max_text_chars: reject it to the DLQ, or truncate and flag it."
    )
    max_message_bytes: int = Field(
        256 * 1024, ge=64, le=16 * 1024 * 1024, description="Largest input message, in bytes."
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest record the worker writes (the producer's max.request.size); a DLQ record "
        "whose original would not fit carries its first bytes, its length and its SHA-256. The output "
        "and DLQ topics must accept records this large (the broker's message.max.bytes).",
    )
    state_ttl_s: int = Field(24 * 3600, ge=1, description="Expiry of a conversation's state in Redis.")
    state_recent: int = Field(
        5, ge=0, le=100, description="Utterances kept per conversation for models that read context."
    )
    state_seen_max: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="Utterance ids kept per conversation to recognise replays (the newest ones).",
    )
    state_backlog_max: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description="State updates held in memory while Redis is down, written when it returns.",
    )
    sentiment_alpha: float = Field(
        0.3, gt=0, le=1, description="Weight of the newest utterance in rolling sentiment."
    )
    batch_max_size: int = Field(
        256,
        ge=1,
        le=4096,
        description="Most messages per batch: a batch is whatever has arrived, up to this many (the "
        "engine sorts them by length and cuts them by tokens).",
    )
    batch_max_wait_ms: int = Field(
        0,
        ge=0,
        le=1000,
        description="How long a started batch may wait for more messages; 0 (the default) never "
        "holds a message back when the engine is idle.",
    )
    top_k: int = Field(3, ge=1, description="Labels listed per task in each output.")
    model: str = Field("student", min_length=1, description="Model whose current engine this worker serves.")
    target: str = Field(
        "cpu", min_length=1, description="Node kind of the pointer to follow: cpu, gpu-sm90, ..."
    )
    registry_uri: str = Field("./registry", min_length=1, description="Bundle registry (path or fsspec URL).")
    bundle_path: Path | None = Field(None, description="Serve this bundle directory and ignore the pointer.")
    engine_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads per engine call; by default the runtime decides, or 1 with lanes.",
    )
    engine_lanes: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Engine calls run side by side (backends that allow it: ONNX Runtime); by default "
        "one per CPU this process may use (docs/benchmarks/engine-lanes.md).",
    )
    engine_max_batch: int = Field(
        128, ge=1, description="Most rows per engine call (batches are length-sorted first)."
    )
    engine_max_tokens: int | None = Field(
        512,
        ge=1,
        description="Most padded tokens (rows × longest) per engine call (docs/benchmarks/engine-shapes.md); "
        "none: rows alone limit a call.",
    )
    engine_max_padding: float | None = Field(
        0.25,
        ge=0,
        description="Most pad tokens per engine call as a share of its real tokens: a few texts of mixed "
        "lengths are not all padded to the longest (docs/benchmarks/engine-lanes.md); none: no cap.",
    )
    select_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of labelled utterances considered for the labelling queue (the learning loop); "
        "0, the default, turns selection off (docs/loop.md).",
    )
    select_min_score: float = Field(
        0.5, ge=0, le=1, description="Least selection score (uncertainty, rarity or disagreement) sent."
    )
    select_quota_per_class: int = Field(
        100, ge=1, description="Most utterances sent per (task, predicted label) per quota window."
    )
    select_quota_window_s: float = Field(3600.0, gt=0, description="Length of the quota window.")
    select_disagreement_s: float = Field(
        600.0,
        ge=0,
        description="After an engine swap, how long the previous engine also labels the considered share, "
        "so that utterances the two label differently are sent.",
    )
    pipeline_depth: int = Field(
        2, ge=1, le=16, description="Batches whose sends may be in flight while the next one is processed."
    )
    commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often acknowledged offsets are committed."
    )
    drain_timeout_s: float = Field(
        20.0,
        gt=0,
        le=120,
        description="On a rebalance or shutdown, how long to wait for batches in flight before "
        "giving up on them (their inputs are then read again).",
    )
    publish_timeout_s: float = Field(
        60.0,
        gt=0,
        le=600,
        description="How long a send may go unacknowledged (with retries) before the worker stops "
        "without committing.",
    )
    publish_linger_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="How long the producer gathers records into one request: a batch's outputs go "
        "to Kafka in a few requests instead of one each.",
    )
    engine_retry_s: float = Field(
        2.0, gt=0, description="First wait before retrying an engine that failed to load (doubles)."
    )
    pointer_poll_s: float = Field(
        10.0, gt=0, description="How often to re-read the pointer besides engine_ready."
    )
    session_timeout_s: float = Field(
        15.0, ge=6, le=300, description="A worker silent this long loses its partitions to the others."
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Port of /metrics, /healthz and /readyz.")
    web_host: str = Field("0.0.0.0", description="Address the web endpoints bind to.")
    instance: str | None = Field(
        None, description="Name of this worker in DLQ records and logs (default: host)."
    )

    @property
    def text_limits(self) -> TextLimits:
        return TextLimits(self.max_text_chars, self.oversize, self.max_message_bytes)
