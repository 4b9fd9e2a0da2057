"""Prometheus metrics of a model replica (names are part of the contract in docs/architecture.md).

Registered on prometheus_client's default registry, which also carries the process collector
(`process_resident_memory_bytes`). The hot path does not touch prometheus_client: every prometheus update takes a
lock and walks the buckets, and at saturation the per-request and per-batch ones were ≈ 5 % of a replica's CPU
(py-spy, docs/benchmarks.md). Requests and batches append plain numbers to `TALLY` instead, which adds them in
bulk (vectorised) at scrape time (services/common/tally.py), or once FLUSH_AT are held, so every scrape sees
every request answered before it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from services.common.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from services.common.tally import FLUSH_AT, HistogramTally, on_scrape

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

class Tally:
    """What the hot path counts between scrapes: request codes, latencies, queue waits, batches, scores, inputs."""

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.latency = HistogramTally(LATENCY, register=False)
        self.queue = HistogramTally(QUEUE, register=False)
        self.compute = HistogramTally(COMPUTE, register=False)
        self.batch_size = HistogramTally(BATCH_SIZE, register=False)
        self.scores: dict[str, HistogramTally] = {}
        self.predictions: dict[str, int] = {}
        self.inputs = InputSummary()
        self.held = 0

    def request(self, code: int, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.latency.values.append(seconds)
        self.held += 1
        if self.held >= FLUSH_AT:
            self.flush()

    def batch(self, version: str, compute_s: float, queue_s: Iterable[float], scores: list[float],
              num: np.ndarray, cat: np.ndarray, vocab_sizes: tuple[int, ...]) -> None:
        n = len(scores)
        self.compute.values.append(compute_s)
        self.batch_size.values.append(float(n))
        self.queue.values.extend(queue_s)
        self.predictions[version] = self.predictions.get(version, 0) + n
        tally = self.scores.get(version)
        if tally is None:
            tally = self.scores[version] = HistogramTally(SCORE.labels(version), register=False)
        tally.values.extend(scores)  # NaN scores are dropped (and counted) at flush
        self.inputs.add(num, cat, vocab_sizes)
        self.held += n
        if self.held >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        self.held = 0
        codes, self.codes = self.codes, {}
        for code, n in codes.items():
            REQUESTS.labels(code=str(code)).inc(n)
        for h in (self.latency, self.queue, self.compute, self.batch_size):
            h.flush()
        predictions, self.predictions = self.predictions, {}
        for version, n in predictions.items():
            PREDICTIONS.labels(version).inc(n)
        for version, tally in self.scores.items():
            if tally.values:
                nan = [v for v in tally.values if v != v]
                if nan:
                    NAN_SCORES.labels(version).inc(len(nan))
                    tally.values = [v for v in tally.values if v == v]
                tally.flush()
        self.inputs.flush()


class InputSummary:
    """Per-feature input summaries: a batch's arrays are held and summarised together (vectorised) at flush."""

    def __init__(self) -> None:
        self._num = [
            (INPUT_SUM.labels(f), INPUT_SUMSQ.labels(f), INPUT_COUNT.labels(f), INPUT_NULLS.labels(f))
            for f in NUMERIC_FEATURES
        ]
        self._cat_nulls = [INPUT_NULLS.labels(f) for f in CATEGORICAL_FEATURES]
        self._cat_unknown = [INPUT_UNKNOWN.labels(f) for f in CATEGORICAL_FEATURES]
        self._held: dict[tuple[int, ...], tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def add(self, num: np.ndarray, cat: np.ndarray, vocab_sizes: tuple[int, ...]) -> None:
        held = self._held.get(vocab_sizes)
        if held is None:
            held = self._held[vocab_sizes] = ([], [])
        held[0].append(num)
        held[1].append(cat)

    def flush(self) -> None:
        held, self._held = self._held, {}
        for vocab_sizes, (nums, cats) in held.items():
            self.observe(np.concatenate(nums), np.concatenate(cats), list(vocab_sizes))

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


TALLY = Tally()
on_scrape(TALLY.flush)
