"""The trainer's settings (environment prefix ``PARLEY_TRAIN_``), built at the entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from parley.connections import DeployableSettings


class TrainerSettings(DeployableSettings):
    """Settings of the ``parley train`` commands (labelling, fitting, publishing)."""

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_TRAIN_", frozen=True, extra="forbid", env_nested_delimiter="__"
    )

    registry_uri: str = Field(
        "./registry", min_length=1, description="Where finished bundles are registered (path or fsspec URL)."
    )
    runs_dir: Path = Field(Path("./runs"), description="Checkpoints, reports and caches of training runs.")
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint for LLM labelling, e.g. http://127.0.0.1:8000/v1."
    )
    llm_api_key: SecretStr | None = Field(None, description="API key of the LLM endpoint (secret).")
    seed: int = Field(13, description="Seed of every random choice (splits, budgets, initialisation).")
