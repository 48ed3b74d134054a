"""Connection settings for Kafka, Redis and the topic names, shared by every deployable.

Each group reads its own environment prefix, so one variable configures the worker, the engine
builder and the trainer alike (the Helm chart sets them once per pod):

    PARLEY_KAFKA_*   KafkaSettings      PARLEY_REDIS_*   RedisSettings      PARLEY_TOPIC_*   TopicSettings

Secrets are ``SecretStr``: they print as ``'**********'`` in reprs, logs and ``--help``, and only
the client factories in :mod:`parley.clients` read their values.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="forbid", env_nested_delimiter="__")


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster: PLAINTEXT, SSL or SASL_SSL (PLAIN, SCRAM-SHA-256/512)."""

    model_config = _config("PARLEY_KAFKA_")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of brokers to bootstrap from."
    )
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Listener protocol.")
    sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism for SASL_* protocols.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_cafile: FilePath | None = Field(None, description="CA bundle (PEM) that signed the brokers' certs.")
    ssl_certfile: FilePath | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: FilePath | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    ssl_keyfile_password: SecretStr | None = Field(None, description="Password of the client key (secret).")
    ssl_check_hostname: bool = Field(True, description="Check that broker certificates match host names.")
    client_id: str = Field("parley", description="Client id reported to the brokers (quotas, logs).")
    request_timeout_ms: int = Field(30_000, ge=1_000, description="Time-out of one request to a broker.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None):
            raise ConfigError(
                f"security_protocol={self.security_protocol} needs sasl_mechanism, sasl_username and "
                "sasl_password (PARLEY_KAFKA_SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD)"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise ConfigError(
                f"sasl_mechanism={self.sasl_mechanism} is set but security_protocol="
                f"{self.security_protocol} does not use SASL; use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ConfigError(
                f"TLS files are set but security_protocol={self.security_protocol} does not use TLS; "
                "use SSL or SASL_SSL"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("ssl_certfile and ssl_keyfile go together: set both for mutual TLS, or neither")
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty; give host:port of at least one broker")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


class RedisSettings(BaseSettings):
    """How to reach Redis: host and port (or a URL), optional ACL user and password, optional TLS."""

    model_config = _config("PARLEY_REDIS_")

    host: str = Field("127.0.0.1", description="Redis host.")
    port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    db: int = Field(0, ge=0, description="Database number.")
    username: str | None = Field(None, description="ACL user name (Redis 6+); none for the default user.")
    password: SecretStr | None = Field(None, description="Password (secret).")
    tls: bool = Field(False, description="Connect over TLS (rediss://).")
    ssl_ca_file: FilePath | None = Field(None, description="CA bundle (PEM) for TLS.")
    ssl_certfile: FilePath | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: FilePath | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    key_prefix: str = Field("parley:", description="Prefix of every key parley writes.")
    socket_timeout_s: float = Field(5.0, gt=0, description="Time-out of one command.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.tls and (self.ssl_ca_file or self.ssl_certfile or self.ssl_keyfile):
            raise ConfigError("Redis TLS files are set but tls is false; set PARLEY_REDIS_TLS=true")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("Redis ssl_certfile and ssl_keyfile go together: set both, or neither")
        return self

    @property
    def address(self) -> str:
        """Where Redis is, without credentials: safe to log."""
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class TopicSettings(BaseSettings):
    """Topic names and, for ``parley stream topics create``, their partition counts."""

    model_config = _config("PARLEY_TOPIC_")

    utterances: str = Field("utterances", description="Input: live utterances, keyed by conversation_id.")
    utterance_labels: str = Field("utterance-labels", description="Output: one labelled record per input.")
    utterances_dlq: str = Field("utterances-dlq", description="Rejected inputs with their reasons.")
    model_events: str = Field("model-events", description="model_trained / engine_ready events.")
    labelling_queue: str = Field(
        "labelling-queue", description="Utterances the workers chose for labelling (the learning loop)."
    )
    partitions: int = Field(
        6, ge=1, description="Partitions of the utterance topics when parley creates them."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor when parley creates topics.")

    def all_names(self) -> list[str]:
        return [
            self.utterances,
            self.utterance_labels,
            self.utterances_dlq,
            self.model_events,
            self.labelling_queue,
        ]


class DeployableSettings(BaseSettings):
    """What every deployable shares: how to log, and how to reach Kafka."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON off a terminal, readable console output on one."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
