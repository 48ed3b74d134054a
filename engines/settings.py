"""The engine builder's settings (environment prefix ``PARLEY_ENGINE_``), built at the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from parley.connections import DeployableSettings, RedisSettings


class EngineBuilderSettings(DeployableSettings):
    """Settings of the ``parley engine`` commands and of the engine watcher."""

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_ENGINE_", frozen=True, extra="forbid", env_nested_delimiter="__"
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    registry_uri: str = Field(
        "./registry", min_length=1, description="Bundle registry: a local directory or an fsspec URL."
    )
    consumer_group: str = Field(
        "parley-engine-builder", min_length=1, description="Kafka consumer group of the watcher."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description=(
            "Node kind: 'gpu' builds TensorRT plans (fails if TensorRT or CUDA does not work), 'cpu' "
            "builds ONNX Runtime engines, 'auto' decides and fails loudly when TensorRT is installed "
            "but CUDA is broken (docs/engines.md)."
        ),
    )
