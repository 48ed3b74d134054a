"""parley: streaming dialogue analytics.

This package holds only what the three product packages share: the ``parley`` command line, the
connection settings for Kafka and Redis, logging set-up, the contract helpers behind every message
schema, and the root of the exception hierarchy. The work lives in ``stream`` (the worker),
``train`` (the student and its LLM labels) and ``engines`` (bundles and inference backends).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parley")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
