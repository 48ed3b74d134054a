"""Client factories: the only place that turns settings (and their secrets) into live clients.

aiokafka and redis are imported inside the functions so that importing settings stays cheap.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from parley.connections import KafkaSettings, RedisSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from redis.asyncio import Redis


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for SSL and SASL_SSL listeners, None for plaintext ones."""
    if not settings.uses_tls:
        return None
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
    )
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile and settings.ssl_keyfile:
        password = settings.ssl_keyfile_password
        context.load_cert_chain(
            str(settings.ssl_certfile),
            str(settings.ssl_keyfile),
            password=password.get_secret_value() if password else None,
        )
    return context


def kafka_client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka's producer, consumer and admin client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.sasl_mechanism is not None:
        assert settings.sasl_password is not None  # enforced by KafkaSettings' validator
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def kafka_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all) and never reorders a key's messages."""
    from aiokafka import AIOKafkaProducer

    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    options.update(overrides)
    return AIOKafkaProducer(**kafka_client_kwargs(settings), **options)


def kafka_consumer(settings: KafkaSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (at-least-once is the caller's job)."""
    from aiokafka import AIOKafkaConsumer

    options: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **kafka_client_kwargs(settings), **options)


def kafka_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**kafka_client_kwargs(settings))


def redis_client(settings: RedisSettings) -> Redis:
    """An asyncio Redis client; it connects lazily, on the first command."""
    from redis.asyncio import Redis

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
    }
    if settings.tls:
        options.update(
            ssl=True,
            ssl_ca_certs=str(settings.ssl_ca_file) if settings.ssl_ca_file else None,
            ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    return Redis(**options)
