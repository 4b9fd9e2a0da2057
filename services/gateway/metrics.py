"""The gateway's Prometheus metrics (names are part of the contract in docs/architecture.md).

Hot-path counters keep their labelled children in plain dicts: `Counter.labels()` takes a lock and builds a
key on every call. Each child is wrapped in a tally (services/common/tally.py): a request adds to a Python
number and the scrape adds the total to prometheus (eight locked updates per scored transaction before).
Per-replica state (breaker, ejection, health, in-flight) is read at scrape time by a collector instead of being
updated on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.tally import CounterTally, HistogramTally
from services.gateway.replicas import OPEN, ReplicaPool, RetryBudget

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class _Children:
    """labels(*values) memoised per label tuple, each child behind a tally (same inc/observe, added at scrape)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._tally = HistogramTally if isinstance(metric, Histogram) else CounterTally
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._tally(self._metric.labels(*values))
        return child


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests = _Children(
            Counter("gateway_requests_total", "Requests by route and HTTP status", ["route", "code"])
        )
        self.latency = _Children(
            Histogram("gateway_request_latency_seconds", "Request latency by route", ["route"], buckets=LATENCY_BUCKETS)
        )
        self.upstream = _Children(
            Counter(
                "gateway_upstream_requests_total",
                "Calls to the feature store and model replicas by outcome",
                ["upstream", "replica", "outcome"],
            )
        )
        self.upstream_latency = _Children(
            Histogram(
                "gateway_upstream_latency_seconds",
                "Upstream call latency",
                ["upstream", "replica"],
                buckets=LATENCY_BUCKETS,
            )
        )
        self.predictions = _Children(
            Counter("gateway_predictions_total", "Scored transactions", ["model_version", "replica", "decision"])
        )
        self.fallbacks = _Children(Counter("gateway_fallbacks_total", "Answers served by a fallback", ["kind"]))
        self.unavailable = _Children(
            Counter("gateway_unavailable_total", "503 answers by the dependency that failed", ["dependency"])
        )
        self.retries = Counter("gateway_retries_total", "Model calls retried on another replica")
        self.budget_exhausted = Counter("gateway_retry_budget_exhausted_total", "Retries refused by the retry budget")
        self.feedback = _Children(
            Counter("gateway_feedback_total", "Ground-truth feedback by outcome", ["model_version", "outcome"])
        )
        self.score = _Children(Histogram("gateway_score", "Model scores", ["model_version"], buckets=SCORE_BUCKETS))
        self.unknown_category = _Children(
            Counter("gateway_unknown_category_total", "Categorical values outside the training vocabulary", ["field"])
        )
        self.null_inputs = _Children(
            Counter("gateway_null_inputs_total", "Input fields that arrived as null", ["field"])
        )
        self.replica_events = _Children(
            Counter(
                "gateway_replica_events_total",
                "Breaker, ejection and health transitions",
                ["replica", "event"],
            )
        )


class ReplicaCollector(Collector):
    """Per-replica gauges computed from the pool at scrape time."""

    def __init__(self, pool: ReplicaPool, budget: RetryBudget) -> None:
        self._pool = pool
        self._budget = budget

    def collect(self) -> Any:
        state = self._pool.describe()
        gauges: dict[str, tuple[str, Callable[[dict[str, Any]], float]]] = {
            "gateway_breaker_open": ("1 while the replica's circuit breaker is open", lambda s: s["breaker"] == OPEN),
            "gateway_replica_ejected": ("1 while the replica is ejected as an outlier", lambda s: s["ejected"]),
            "gateway_replica_healthy": ("1 when the last health check passed", lambda s: s["healthy"]),
            "gateway_replica_drained": ("1 when the replica is drained", lambda s: s["drained"]),
            "gateway_replica_inflight": ("Outstanding requests to the replica", lambda s: s["inflight"]),
        }
        for name, (doc, value) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["replica"])
            for replica, s in state.items():
                family.add_metric([replica], float(value(s)))
            yield family
        yield GaugeMetricFamily(
            "gateway_retry_budget_tokens", "Retries the budget allows right now", self._budget.tokens
        )


def register_collector(pool: ReplicaPool, budget: RetryBudget) -> None:
    REGISTRY.register(ReplicaCollector(pool, budget))
