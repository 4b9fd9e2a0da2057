"""Prometheus metrics of a model replica (names are part of the contract in docs/architecture.md).

Registered on prometheus_client's default registry, which also carries the process collector
(`process_resident_memory_bytes`). Label children used on the hot path are cached to keep per-request cost low.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from services.common.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

REQUESTS = Counter("model_requests_total", "Predict requests by HTTP status code", ["code"])
LATENCY = Histogram("model_request_latency_seconds", "Predict request latency", buckets=LATENCY_BUCKETS)
QUEUE = Histogram("model_queue_seconds", "Time a request waited for its batch", buckets=LATENCY_BUCKETS)
COMPUTE = Histogram("model_compute_seconds", "Time to score one batch", buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("model_batch_size", "Rows per batch", buckets=BATCH_BUCKETS)
INFLIGHT = Gauge("model_inflight", "Predict requests being handled")
QUEUE_DEPTH = Gauge("model_queue_depth", "Rows waiting for a batch")
INFO = Gauge("model_info", "1 per loaded model version", ["version", "sha256"])
READY = Gauge("model_ready", "1 when the replica is loaded and warmed")
PREDICTIONS = Counter("model_predictions_total", "Rows scored", ["version"])
SCORE = Histogram("model_score", "Distribution of fraud scores", ["version"], buckets=SCORE_BUCKETS)
NAN_SCORES = Counter("model_nan_scores_total", "Scores that came out NaN", ["version"])
CACHE_ENTRIES = Gauge("model_cache_entries", "Rows held by the prediction cache")
CACHE_LOOKUPS = Counter("model_cache_lookups_total", "Prediction cache lookups by outcome", ["outcome"])
REJECTED = Counter("model_rejected_total", "Requests refused before scoring", ["reason"])
RELOADS = Counter("model_reloads_total", "Reload attempts by outcome", ["outcome"])
# sums are gauges because inputs may be negative (a Counter refuses to go down); they only ever accumulate
INPUT_SUM = Gauge("model_input_sum", "Sum of non-null values seen per numeric feature", ["feature"])
INPUT_SUMSQ = Gauge("model_input_sumsq", "Sum of squares of non-null values per numeric feature", ["feature"])
INPUT_COUNT = Counter("model_input_values_total", "Non-null values seen per numeric feature", ["feature"])
INPUT_NULLS = Counter("model_input_nulls_total", "Missing (null) values per feature", ["feature"])
INPUT_UNKNOWN = Counter("model_input_unknown_total", "Category values never seen in training", ["feature"])

_code_children: dict[int, Counter] = {}


def count_request(code: int, seconds: float) -> None:
    child = _code_children.get(code)
    if child is None:
        child = _code_children[code] = REQUESTS.labels(code=str(code))
    child.inc()
    LATENCY.observe(seconds)


class InputSummary:
    """Per-feature input summaries, updated once per batch (vectorised)."""

    def __init__(self) -> None:
        self._num = [
            (INPUT_SUM.labels(f), INPUT_SUMSQ.labels(f), INPUT_COUNT.labels(f), INPUT_NULLS.labels(f))
            for f in NUMERIC_FEATURES
        ]
        self._cat_nulls = [INPUT_NULLS.labels(f) for f in CATEGORICAL_FEATURES]
        self._cat_unknown = [INPUT_UNKNOWN.labels(f) for f in CATEGORICAL_FEATURES]

    def observe(self, num: np.ndarray, cat: np.ndarray, vocab_sizes: list[int]) -> None:
        nulls = np.isnan(num)
        present = ~nulls
        values = np.where(present, num, 0.0)
        sums = values.sum(axis=0)
        sumsq = (values * values).sum(axis=0)
        counts = present.sum(axis=0)
        null_counts = nulls.sum(axis=0)
        for j, (s, sq, c, n) in enumerate(self._num):
            if counts[j]:
                s.inc(float(sums[j]))
                sq.inc(float(sumsq[j]))
                c.inc(int(counts[j]))
            if null_counts[j]:
                n.inc(int(null_counts[j]))
        for j, size in enumerate(vocab_sizes):
            col = cat[:, j]
            missing = int((col < 0).sum())
            unknown = int((col == size).sum())
            if missing:
                self._cat_nulls[j].inc(missing)
            if unknown:
                self._cat_unknown[j].inc(unknown)
