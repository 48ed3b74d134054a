"""Settings: environment prefixes, what real clusters need (TLS, SASL), frozen objects, masked secrets."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from engines.settings import EngineBuilderSettings
from parley.clients import kafka_client_kwargs, kafka_ssl_context
from parley.connections import KafkaSettings, RedisSettings
from stream.settings import WorkerSettings
from train.settings import TrainerSettings

SECRET = "hunter2-do-not-print"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a client certificate signed by it, made with openssl."""
    d = tmp_path_factory.mktemp("pki")

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    sh(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=parley-test-ca",
    )
    sh(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=parley-client",
    )
    sh(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
    )
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def test_defaults_point_at_the_local_services() -> None:
    """Out of the box, every deployable talks to the Kafka and Redis that scripts/ start."""
    for cls in (WorkerSettings, EngineBuilderSettings):
        settings = cls()
        assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
        assert settings.redis.address == "redis://127.0.0.1:6379/0"
    assert TrainerSettings().kafka.security_protocol == "PLAINTEXT"


def test_shared_prefix_reaches_every_deployable(monkeypatch: pytest.MonkeyPatch) -> None:
    """PARLEY_KAFKA_* configures the worker, the engine builder and the trainer alike."""
    monkeypatch.setenv("PARLEY_KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9094,kafka-1:9094")
    monkeypatch.setenv("PARLEY_TOPIC_UTTERANCES", "calls.utterances")
    for cls in (WorkerSettings, EngineBuilderSettings, TrainerSettings):
        settings = cls()
        assert settings.kafka.bootstrap_servers == "kafka-0:9094,kafka-1:9094"
        assert settings.topics.utterances == "calls.utterances"


def test_deployable_prefix_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """PARLEY_WORKER_* sets the worker and nothing else."""
    monkeypatch.setenv("PARLEY_WORKER_CONSUMER_GROUP", "eu-workers")
    monkeypatch.setenv("PARLEY_WORKER_OVERSIZE", "truncate")
    settings = WorkerSettings()
    assert settings.consumer_group == "eu-workers"
    assert settings.text_limits.oversize == "truncate"
    assert EngineBuilderSettings().consumer_group == "parley-engine-builder"


def test_settings_are_frozen() -> None:
    """A settings object cannot be changed after the entry point built it."""
    settings = WorkerSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.consumer_group = "other"  # type: ignore[misc]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_with_a_ca_file_builds_client_arguments(mechanism: str, pki: dict[str, Path]) -> None:
    """SASL_SSL with each mechanism gives aiokafka a TLS context trusting the CA, and the credentials."""
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password=SECRET,
        ssl_cafile=pki["ca"],
    )
    kwargs = kafka_client_kwargs(kafka)
    assert kwargs["sasl_mechanism"] == mechanism
    assert kwargs["sasl_plain_password"] == SECRET
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert any(c["subject"] == ((("commonName", "parley-test-ca"),),) for c in context.get_ca_certs())


def test_mutual_tls_loads_the_client_certificate(pki: dict[str, Path]) -> None:
    """SSL with a client certificate and key builds a context (the key must match the cert)."""
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_cafile=pki["ca"], ssl_certfile=pki["cert"], ssl_keyfile=pki["key"]
    )
    assert kafka_ssl_context(kafka) is not None
    wrong = KafkaSettings(
        security_protocol="SSL", ssl_cafile=pki["ca"], ssl_certfile=pki["cert"], ssl_keyfile=pki["ca"]
    )
    with pytest.raises(ssl.SSLError):
        kafka_ssl_context(wrong)


def test_plaintext_has_no_tls_and_no_credentials() -> None:
    """PLAINTEXT passes neither a TLS context nor SASL settings to the client."""
    kwargs = kafka_client_kwargs(KafkaSettings())
    assert "ssl_context" not in kwargs
    assert "sasl_mechanism" not in kwargs


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"security_protocol": "SASL_SSL"}, "needs sasl_mechanism", id="sasl-without-credentials"
        ),
        pytest.param({"sasl_mechanism": "PLAIN"}, "does not use SASL", id="mechanism-without-sasl"),
        pytest.param(
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "GSSAPI",
                "sasl_username": "u",
                "sasl_password": "p",
            },
            "sasl_mechanism",
            id="unsupported-mechanism",
        ),
        pytest.param(
            {"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "ssl_cafile", id="missing-ca"
        ),
        pytest.param({"bootstrap_servers": " "}, "bootstrap_servers", id="empty-bootstrap"),
    ],
)
def test_kafka_settings_that_cannot_work_are_refused(fields: dict[str, str], message: str) -> None:
    """Inconsistent or impossible Kafka settings fail at start-up, saying which."""
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**fields)  # type: ignore[arg-type]


def test_tls_files_need_a_tls_protocol(pki: dict[str, Path]) -> None:
    """A CA file with PLAINTEXT is a mistake, not silently ignored."""
    with pytest.raises(ValidationError, match="does not use TLS"):
        KafkaSettings(ssl_cafile=pki["ca"])


def test_redis_password_and_tls(pki: dict[str, Path]) -> None:
    """Redis with an ACL user, a password and TLS: the address shows neither user nor password."""
    redis = RedisSettings(username="parley", password=SECRET, tls=True, ssl_ca_file=pki["ca"])
    assert redis.address == "rediss://127.0.0.1:6379/0"
    with pytest.raises(ValidationError, match="tls is false"):
        RedisSettings(ssl_ca_file=pki["ca"])


def test_secrets_never_show_in_repr_dumps_or_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """SecretStr values are masked in repr, in JSON dumps and in structured logs."""
    monkeypatch.setenv("PARLEY_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PARLEY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("PARLEY_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("PARLEY_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("PARLEY_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("PARLEY_TRAIN_LLM_API_KEY", SECRET)
    for settings in (WorkerSettings(), EngineBuilderSettings(), TrainerSettings()):
        assert SECRET not in repr(settings)
        assert SECRET not in settings.model_dump_json()
        with structlog.testing.capture_logs() as logs:
            structlog.get_logger().info("starting", settings=settings.model_dump(mode="json"))
        assert SECRET not in str(logs)
    assert WorkerSettings().kafka.sasl_password is not None
    assert WorkerSettings().kafka.sasl_password.get_secret_value() == SECRET
