"""The ``parley`` command: one group per package, loaded only when used.

    parley stream …   the worker and its topics        (stream/cli.py)
    parley train  …   labelling and training           (train/cli.py)
    parley engine …   bundles, engines, the registry   (engines/cli.py)

Entry points stay thin: they build the package's frozen settings once, configure logging once, and
call the library. A ParleyError or an invalid setting ends the command with its message and exit
status 1, not a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from parley import __version__
from parley.errors import ParleyError
from parley.logging import configure_logging

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}

_GROUPS = {
    "stream": ("stream.cli", "group"),
    "train": ("train.cli", "group"),
    "engine": ("engines.cli", "group"),
}


class LazyGroup(click.Group):
    """A group whose subgroups are imported on first use, so ``parley stream`` never imports torch."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _GROUPS:
            module, attr = _GROUPS[name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="parley")
def cli() -> None:
    """parley labels every utterance of live conversations (intent, sentiment, dialogue act) within
    milliseconds, with a small student model distilled from LLM labels and a few human ones.

    Settings come from environment variables (PARLEY_KAFKA_*, PARLEY_REDIS_*, PARLEY_TOPIC_*, and
    PARLEY_WORKER_*, PARLEY_TRAIN_*, PARLEY_ENGINE_* per deployable); each group's `settings`
    command shows what is in force, secrets masked.
    """


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build a deployable's settings (environment + overrides) and configure logging from them."""
    try:
        settings = cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise click.ClickException(describe_settings_error(exc)) from None
    configure_logging(getattr(settings, "log_level", "INFO"), getattr(settings, "log_format", "auto"))
    return settings


def describe_settings_error(exc: ValidationError) -> str:
    """Name each bad setting by the environment variable that sets it."""
    prefix = _env_prefix(exc.title)
    lines = [f"invalid settings ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors(include_url=False):
        path = "__".join(str(p) for p in err["loc"]).upper()
        where = f"{prefix}{path}" if path else prefix.rstrip("_") + "_*"
        masked = "not shown" if err["type"] == "missing" or "input" not in err else _masked(err)
        shown = "" if masked == "not shown" else f" (got {masked})"
        lines.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(lines)


def _env_prefix(title: str) -> str:
    from parley.connections import DeployableSettings, KafkaSettings, RedisSettings, TopicSettings

    classes: list[type[BaseSettings]] = [KafkaSettings, RedisSettings, TopicSettings]
    for cls in [*classes, *DeployableSettings.__subclasses__()]:
        if cls.__name__ == title:
            return str(cls.model_config.get("env_prefix", ""))
    return ""


def _masked(err: Any) -> str:
    """The offending value, unless it could be or hold a secret."""
    field = str(err["loc"][-1]) if err["loc"] else ""
    value = err["input"]
    if (
        not field
        or isinstance(value, dict)
        or any(m in field for m in ("password", "secret", "key", "token"))
    ):
        return "not shown"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_settings(settings: BaseSettings) -> None:
    """The settings in force as JSON; SecretStr values print as '**********'."""
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2, sort_keys=True))


def emit_schemas(schemas: dict[str, dict[str, Any]], out: Path | None) -> None:
    """Print JSON Schemas (one, or a mapping of several), or write <name>.schema.json files into ``out``."""
    if out is None:
        only = next(iter(schemas.values())) if len(schemas) == 1 else schemas
        click.echo(json.dumps(only, indent=2, sort_keys=True))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        click.echo(f"wrote {path}")


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def main() -> None:
    try:
        status = cli.main(prog_name="parley", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ParleyError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
