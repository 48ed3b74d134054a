"""``parley engine bench``: throughput and latency of a backend over batch sizes, with and without
length bucketing, on real utterance texts.

Unbucketed: texts are cut into batches in arrival order, so each batch pads to its longest text.
Bucketed: each window of texts (what a worker collects before inferring) is ordered by token length
first and then cut, as the worker does. Latency is measured per batch (one ``infer`` call).
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engines.base import EngineOptions, load_engine
from engines.bundle import Bundle

WINDOW = 256


@dataclass(frozen=True, slots=True)
class BenchRow:
    backend: str
    batch: int
    bucketed: bool
    utterances: int
    seconds: float
    utterances_per_s: float
    p50_ms: float
    p99_ms: float
    mean_tokens: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(texts: Sequence[str], batch: int, lengths: Sequence[int], bucketed: bool) -> list[list[str]]:
    out: list[list[str]] = []
    window = max(WINDOW, batch)
    for start in range(0, len(texts), window):
        idx = list(range(start, min(start + window, len(texts))))
        if bucketed:
            idx.sort(key=lambda i: lengths[i])
        out.extend([texts[i] for i in idx[j : j + batch]] for j in range(0, len(idx), batch))
    return out


def bench(
    bundle: Bundle,
    backend: str,
    options: EngineOptions,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    *,
    bucket_modes: Sequence[bool] = (False, True),
    min_seconds: float = 3.0,
    seed: int = 0,
) -> list[BenchRow]:
    shuffled = list(texts)
    random.Random(seed).shuffle(shuffled)
    rows = []
    for batch in batch_sizes:
        engine = load_engine(
            bundle, backend, EngineOptions(**{**asdict(options), "max_batch": batch, "bucket": False})
        )
        lengths = engine.tokenizer.lengths(shuffled)
        with engine:
            for bucketed in bucket_modes if batch > 1 else (False,):
                batches = _batches(shuffled, batch, lengths, bucketed)
                engine.infer(batches[0])  # warm-up: first-call allocations and graph set-up
                latencies: list[float] = []
                done = i = 0
                started = time.perf_counter()
                # Every batch at least once, and for at least min_seconds.
                while i < len(batches) or time.perf_counter() - started < min_seconds:
                    chunk = batches[i % len(batches)]
                    t0 = time.perf_counter()
                    engine.infer(chunk)
                    latencies.append(time.perf_counter() - t0)
                    done += len(chunk)
                    i += 1
                seconds = time.perf_counter() - started
                ms = np.array(latencies) * 1000
                rows.append(
                    BenchRow(
                        backend=engine.name,
                        batch=batch,
                        bucketed=bucketed,
                        utterances=done,
                        seconds=round(seconds, 3),
                        utterances_per_s=round(done / seconds, 1),
                        p50_ms=round(float(np.percentile(ms, 50)), 2),
                        p99_ms=round(float(np.percentile(ms, 99)), 2),
                        mean_tokens=round(float(np.mean(lengths)), 1),
                        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    )
                )
    return rows
