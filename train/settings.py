"""The trainer's settings (environment prefix ``PARLEY_TRAIN_``), built at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    llm_model: str | None = Field(
        None, description="Model name sent to the endpoint, or the local model (hub id, path, .gguf)."
    )
    llm_scoring: Literal["auto", "logprobs", "samples"] = Field(
        "auto", description="Scores from logprobs, from n sampled answers, or logprobs when offered."
    )
    llm_samples: int = Field(
        5, ge=1, le=64, description="Answers sampled per request when scoring by samples."
    )
    llm_concurrency: int = Field(8, ge=1, le=512, description="Requests in flight at once.")
    llm_requests_per_minute: float = Field(0.0, ge=0, description="Rate limit (0: none).")
    llm_timeout_s: float = Field(30.0, gt=0, description="Time-out of one request.")
    llm_max_retries: int = Field(
        5, ge=0, le=20, description="Retries of a request on 429, 5xx and time-outs."
    )
    llm_price_prompt_per_1m: float = Field(
        0.0, ge=0, description="Price of 1M prompt tokens, for the cost estimate."
    )
    llm_price_completion_per_1m: float = Field(
        0.0, ge=0, description="Price of 1M completion tokens, for the cost estimate."
    )
    seed: int = Field(13, description="Seed of every random choice (splits, budgets, initialisation).")
