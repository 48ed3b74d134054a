"""Per-partition series follow the assignment: a revoked partition's lag and offset are dropped."""

from __future__ import annotations

from prometheus_client import generate_latest

from stream.metrics import WorkerMetrics


def test_revoked_partitions_leave_no_series_behind() -> None:
    metrics = WorkerMetrics()
    for partition in (0, 1):
        metrics.consumer_lag.labels(topic="utterances", partition=str(partition)).set(10 + partition)
        metrics.committed.labels(topic="utterances", partition=str(partition)).set(100 + partition)
    metrics.forget_partitions([("utterances", 1), ("utterances", 7)])  # 7 was never set here
    text = generate_latest(metrics.registry).decode()
    assert 'parley_consumer_lag{partition="0",topic="utterances"} 10.0' in text
    assert 'parley_committed_offset{partition="0",topic="utterances"} 100.0' in text
    assert 'partition="1"' not in text
