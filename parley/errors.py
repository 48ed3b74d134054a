"""The root of parley's exceptions.

Every exception parley raises on purpose derives from :class:`ParleyError`, so an entry point can
catch one type, print its message and exit non-zero. Each package extends it::

    ParleyError
     ├── ContractError          a message broke its schema   (parley.contracts)
     ├── ConfigError            settings that cannot work    (parley.errors)
     ├── ServiceUnavailable     Kafka or Redis did not answer (parley.errors)
     ├── StreamError            the worker and its CLI       (stream.errors)
     ├── EngineError            bundles and backends         (engines.errors)
     │    └── ManifestError
     └── TrainError             training and labelling       (train.errors)

Messages say what was wrong, with which value, and what to do about it.
"""


class ParleyError(Exception):
    """Base of every error parley raises on purpose."""


class ConfigError(ParleyError, ValueError):
    """Settings that are valid one by one but cannot work together, or name a missing file."""


class ServiceUnavailable(ParleyError, ConnectionError):
    """Kafka or Redis could not be reached within the configured time."""
