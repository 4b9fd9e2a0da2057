"""Which config keys a learner may change with `config_set`, per service kind.

Operational knobs an on-call engineer really owns (timeouts, retries, breakers, batching, fallbacks, drained
replicas, routing, readiness, thresholds). Excluded on purpose: what the lab manages itself (the gateway's
`replicas`, pushed on scale) and the knobs that *simulate* infrastructure trouble (a feature store's added
latency or error rate, a replica's extra latency or slow start): on a real system those are not settings
anyone could turn off, so turning them off is not a fix.
"""

from __future__ import annotations

SETTABLE: dict[str, frozenset[str]] = {
    "gateway": frozenset({
        "drained", "routing", "feature_timeout_ms", "model_timeout_ms", "max_retries", "retry_backoff_ms",
        "retry_budget_ratio", "breaker_failures", "breaker_reset_ms", "outlier_errors", "outlier_ejection_ms",
        "health_check_ms", "feature_fallback", "model_fallback", "decision_threshold", "amount_scale", "amount_max",
    }),
    "model": frozenset({
        "max_batch_size", "max_wait_ms", "max_queue", "max_rows_per_request", "cache_size", "torch_threads",
        "compute_thread", "readiness",
    }),
    "feature-store": frozenset({"cache"}),
    "registry": frozenset({"variant_timeout_s", "train_timeout_s"}),
}


def kind_of(service: str) -> str:
    return "model" if service.startswith("model-") else service


def settable(service: str) -> frozenset[str]:
    return SETTABLE.get(kind_of(service), frozenset())
