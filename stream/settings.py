"""The worker's settings (environment prefix ``PARLEY_WORKER_``), built once at the entry point."""

from __future__ import annotations

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
    max_text_chars: int = Field(2000, ge=1, description="Longest utterance text accepted, in characters.")
    oversize: Literal["reject", "truncate"] = Field(
        "reject", description="Text over max_text_chars: reject it to the DLQ, or truncate and flag it."
    )
    max_message_bytes: int = Field(256 * 1024, ge=64, description="Largest input message, in bytes.")
    state_ttl_s: int = Field(24 * 3600, ge=1, description="Expiry of a conversation's state in Redis.")

    @property
    def text_limits(self) -> TextLimits:
        return TextLimits(self.max_text_chars, self.oversize, self.max_message_bytes)
