"""Derived signals from raw scrapes: rates, error rates, latency quantiles, queue vs compute, model quality.

Everything is computed from counter increases over a sliding window (`ScrapeRing.increase`), so a process
restart (counters back to zero) never produces a negative rate, and histogram quantiles describe the window,
not the process lifetime. Metric names follow docs/architecture.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lab import parts
from lab.monitor.series import ScrapeRing, label_match
from lab.parts import gateway as _gateway
from lab.parts import loadgen as _loadgen

# Metric family prefixes of the parts whose signals are computed specially (their declarations say which).
GATEWAY_KIND = str(_gateway.PART.metrics_prefix)
LOADGEN_KIND = str(_loadgen.PART.metrics_prefix)

Want = dict[str, str | Iterable[str]] | None


@dataclass
class Window:
    """Counter increases of one target over one window (`span_s` seconds of actual scrape coverage)."""

    ring: ScrapeRing
    inc: np.ndarray
    span_s: float

    def sum(self, name: str, want: Want = None) -> float:
        total = 0.0
        for col, labels in self.ring.columns(name):
            if col < len(self.inc) and label_match(labels, want):
                total += float(self.inc[col])
        return total

    def by(self, name: str, label: str | tuple[str, ...], want: Want = None) -> dict:
        """Increases grouped by one label (keys are values) or several (keys are tuples)."""
        out: dict = {}
        for col, labels in self.ring.columns(name):
            if col >= len(self.inc) or not label_match(labels, want):
                continue
            key = labels.get(label, "") if isinstance(label, str) else tuple(labels.get(x, "") for x in label)
            out[key] = out.get(key, 0.0) + float(self.inc[col])
        return out

    def rate(self, name: str, want: Want = None) -> float | None:
        if self.span_s <= 0:
            return None
        return self.sum(name, want) / self.span_s

    def buckets(self, name: str, want: Want = None) -> tuple[np.ndarray, np.ndarray]:
        """Histogram bucket upper bounds and cumulative counts over the window, summed over matching labels."""
        agg: dict[float, float] = {}
        for col, labels in self.ring.columns(name + "_bucket"):
            if col >= len(self.inc) or not label_match(labels, want):
                continue
            le = labels.get("le")
            if le is None:
                continue
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            agg[bound] = agg.get(bound, 0.0) + float(self.inc[col])
        if not agg:
            return np.zeros(0), np.zeros(0)
        bounds = np.array(sorted(agg))
        counts = np.maximum.accumulate(np.array([agg[b] for b in bounds]))
        return bounds, counts

    def quantile(self, name: str, q: float, want: Want = None) -> float | None:
        bounds, counts = self.buckets(name, want)
        return histogram_quantile(q, bounds, counts)

    def mean(self, name: str, want: Want = None) -> float | None:
        count = self.sum(name + "_count", want)
        if count <= 0:
            return None
        return self.sum(name + "_sum", want) / count

    def count(self, name: str, want: Want = None) -> float:
        return self.sum(name + "_count", want)


def window(ring: ScrapeRing, window_s: float, now: float | None = None) -> Window | None:
    got = ring.increase(window_s, now)
    if got is None:
        return None
    inc, span = got
    return Window(ring, inc, span)


def histogram_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th observation.

    Observations in the +Inf bucket are reported at the highest finite bound (the histogram cannot say more).
    """
    if len(bounds) == 0 or counts[-1] <= 0:
        return None
    total = counts[-1]
    rank = q * total
    i = int(np.searchsorted(counts, rank, side="left"))
    i = min(i, len(bounds) - 1)
    if math.isinf(bounds[i]):
        finite = bounds[np.isfinite(bounds)]
        return float(finite[-1]) if len(finite) else None
    upper = float(bounds[i])
    lower = 0.0 if i == 0 else float(bounds[i - 1])
    if i == 0 and upper <= 0:
        return upper
    prev = 0.0 if i == 0 else float(counts[i - 1])
    in_bucket = float(counts[i]) - prev
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - prev) / in_bucket


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def _is_success(code: str) -> bool:
    return code.startswith("2")


def _is_server_error(code: str) -> bool:
    return code.startswith("5")


def request_signals(w: Window, prefix: str, want: Want = None) -> dict[str, float | None]:
    """rps, error rates (non-2xx and 5xx only) and latency quantiles from `<prefix>_requests_total{code}` and
    `<prefix>_request_latency_seconds`."""
    by_code = w.by(f"{prefix}_requests_total", "code", want)
    total = sum(by_code.values())
    errors = sum(v for c, v in by_code.items() if not _is_success(c))
    server_errors = sum(v for c, v in by_code.items() if _is_server_error(c))
    lat = f"{prefix}_request_latency_seconds"
    return {
        "rps": _ratio(total, w.span_s),
        "requests": total,
        "error_rate": _ratio(errors, total),
        "error_rate_5xx": _ratio(server_errors, total),
        "p50_ms": _ms(w.quantile(lat, 0.50, want)),
        "p95_ms": _ms(w.quantile(lat, 0.95, want)),
        "p99_ms": _ms(w.quantile(lat, 0.99, want)),
        "mean_ms": _ms(w.mean(lat, want)),
    }


def status_share(w: Window, prefix: str, status: str, want: Want = None) -> tuple[float | None, float]:
    """(share of `<prefix>_requests_total` answered with `status` — a class like `5xx` or a code like `503` —,
    requests counted) over the window; the share is None without requests."""
    by_code = w.by(f"{prefix}_requests_total", "code", want)
    total = sum(by_code.values())
    if status.endswith("xx"):
        hits = sum(v for c, v in by_code.items() if c.startswith(status[0]))
    else:
        hits = sum(v for c, v in by_code.items() if c == status)
    return _ratio(hits, total), total


def gateway_score_routes(w: Window) -> list[str]:
    """The gateway's scoring route label(s): the traffic the gateway SLOs are about."""
    routes = {labels.get("route", "") for _, labels in w.ring.columns("gateway_requests_total")}
    return sorted(r for r in routes if "score" in r)


def gateway_signals(w: Window) -> dict:
    routes = gateway_score_routes(w)
    want: Want = {"route": routes} if routes else None
    out: dict = request_signals(w, GATEWAY_KIND, want)
    per_route = {}
    for route in sorted({labels.get("route", "") for _, labels in w.ring.columns("gateway_requests_total")}):
        r = request_signals(w, GATEWAY_KIND, {"route": route})
        per_route[route] = {k: r[k] for k in ("rps", "error_rate", "p99_ms")}
    out["routes"] = per_route
    fallbacks = w.by("gateway_fallbacks_total", "kind")
    out["fallback_rps"] = {k: v / w.span_s for k, v in fallbacks.items()} if w.span_s > 0 else {}
    scored = out["requests"] or 0.0
    out["fallback_rate"] = _ratio(sum(fallbacks.values()), scored)
    out["retry_rps"] = w.rate("gateway_retries_total")
    breakers = {}
    for col, labels in w.ring.columns("gateway_breaker_open"):
        v = w.ring.latest_value("gateway_breaker_open", w.ring.keys[col][1])
        breakers[labels.get("replica", "")] = v
    out["breaker_open"] = breakers
    return out


def upstream_signals(w: Window) -> dict[str, dict[str, float | None]]:
    """Per replica (and the feature store), as the gateway saw it: rps, error rate, p99 (ms)."""
    by = w.by("gateway_upstream_requests_total", ("upstream", "replica", "outcome"))
    names: dict[str, dict[str, float]] = {}
    for (upstream, replica, outcome), v in by.items():
        who = replica or upstream
        d = names.setdefault(who, {"total": 0.0, "errors": 0.0})
        d["total"] += v
        if outcome not in ("ok", "success", "2xx", "200"):
            d["errors"] += v
    out = {}
    for who, d in sorted(names.items()):
        want_r: Want = {"replica": who} if any(
            labels.get("replica") == who for _, labels in w.ring.columns("gateway_upstream_latency_seconds_bucket")
        ) else {"upstream": who}
        out[who] = {
            "rps": _ratio(d["total"], w.span_s),
            "error_rate": _ratio(d["errors"], d["total"]),
            "p99_ms": _ms(w.quantile("gateway_upstream_latency_seconds", 0.99, want_r)),
        }
    return out


def confusion_quality(tp: float, fp: float, tn: float, fn: float) -> dict[str, float | None]:
    n = tp + fp + tn + fn
    return {
        "labels": n,
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fraud_rate": _ratio(tp + fn, n),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def quality_from_counts(by: dict[tuple[str, str], float]) -> dict:
    """Overall and per-version accuracy/precision/recall from {(model_version, outcome): count}."""
    versions: dict[str, dict[str, float]] = {}
    for (version, outcome), v in by.items():
        versions.setdefault(version, {"tp": 0.0, "fp": 0.0, "tn": 0.0, "fn": 0.0})
        if outcome in versions[version]:
            versions[version][outcome] += v
    overall = {k: sum(c[k] for c in versions.values()) for k in ("tp", "fp", "tn", "fn")}
    return {
        "overall": confusion_quality(**overall),
        "versions": {v: confusion_quality(**c) for v, c in sorted(versions.items())},
    }


def quality_signals(w: Window) -> dict:
    return quality_from_counts(w.by("gateway_feedback_total", ("model_version", "outcome")))


def served_share(w: Window) -> tuple[float, float | None]:
    """(scoring requests, share answered 2xx) over the window: the gateway's scoring route(s) only."""
    routes = gateway_score_routes(w)
    r = request_signals(w, GATEWAY_KIND, {"route": routes} if routes else None)
    requests = r["requests"] or 0.0
    return requests, (None if r["error_rate"] is None else 1.0 - r["error_rate"])


def honest_quality(figures: dict | None, w: Window) -> dict:
    """Quality counted over every scoring request, not only the answered ones: a failed request is a wrong decision
    (no fraud caught, no customer served). accuracy = labelled accuracy x share answered; recall likewise (a fraud
    whose request failed was not caught). Precision is about the declines made and is unchanged. With no labels but
    failed requests only, accuracy and recall are 0. The labelled-only figures stay as `accuracy_labelled` and
    `recall_labelled`."""
    out = dict(figures or {})
    requests, served = served_share(w)
    out["requests"] = requests
    out["served"] = served
    for key in ("accuracy", "recall"):
        labelled = out.get(key)
        out[f"{key}_labelled"] = labelled
        if served is None:
            continue
        if labelled is not None:
            out[key] = labelled * served
        elif served == 0.0 and requests > 0:
            out[key] = 0.0
    return out


def cumulative_quality(ring: ScrapeRing) -> dict:
    by: dict[tuple[str, str], float] = {}
    for col, labels in ring.columns("gateway_feedback_total"):
        if col < len(ring.totals):
            key = (labels.get("model_version", ""), labels.get("outcome", ""))
            by[key] = by.get(key, 0.0) + float(ring.totals[col])
    return quality_from_counts(by)


def prediction_signals(w: Window) -> dict[str, dict]:
    """Per model version: rps, decline rate, per-replica rps, and the score distribution's mean and p50."""
    by = w.by("gateway_predictions_total", ("model_version", "replica", "decision"))
    versions: dict[str, dict] = {}
    for (version, replica, decision), v in by.items():
        d = versions.setdefault(version, {"total": 0.0, "declines": 0.0, "replicas": {}})
        d["total"] += v
        if decision == "decline":
            d["declines"] += v
        d["replicas"][replica] = d["replicas"].get(replica, 0.0) + v
    out = {}
    for version, d in sorted(versions.items()):
        want: Want = {"model_version": version}
        out[version] = {
            "rps": _ratio(d["total"], w.span_s),
            "decline_rate": _ratio(d["declines"], d["total"]),
            "replicas": {r: _ratio(v, w.span_s) for r, v in sorted(d["replicas"].items())},
            "score_mean": w.mean("gateway_score", want),
            "score_p50": w.quantile("gateway_score", 0.5, want),
        }
    return out


def prediction_totals(w: Window, version: str | None = None) -> tuple[float, float]:
    """(predictions, declines) the gateway made over the window, for one model version or all of them."""
    want: Want = {"model_version": version} if version else None
    by = w.by("gateway_predictions_total", "decision", want)
    return sum(by.values()), by.get("decline", 0.0)


def score_distribution(w: Window, want: Want = None) -> dict:
    """The live score histogram over the window (bucket upper bound -> fraction), plus mean and quantiles."""
    bounds, counts = w.buckets("gateway_score", want)
    if len(bounds) == 0 or counts[-1] <= 0:
        return {"count": 0.0, "mean": None, "p50": None, "p90": None, "buckets": []}
    per_bucket = np.diff(np.concatenate(([0.0], counts))) / counts[-1]
    return {
        "count": float(counts[-1]),
        "mean": w.mean("gateway_score", want),
        "p50": histogram_quantile(0.5, bounds, counts),
        "p90": histogram_quantile(0.9, bounds, counts),
        "buckets": [["+Inf" if math.isinf(b) else float(b), round(float(f), 5)] for b, f in zip(bounds, per_bucket,
                                                                                               strict=True)],
    }


def model_signals(w: Window) -> dict:
    out: dict = request_signals(w, "model")
    out["queue_ms"] = _ms(w.mean("model_queue_seconds"))
    out["compute_ms"] = _ms(w.mean("model_compute_seconds"))
    out["queue_p99_ms"] = _ms(w.quantile("model_queue_seconds", 0.99))
    out["compute_p99_ms"] = _ms(w.quantile("model_compute_seconds", 0.99))
    out["batch_size"] = w.mean("model_batch_size")
    ring = w.ring
    out["queue_depth"] = ring.latest_value("model_queue_depth")
    out["inflight"] = ring.latest_value("model_inflight")
    out["cache_entries"] = ring.latest_value("model_cache_entries")
    loaded = []
    for col, labels in ring.columns("model_info"):
        v = ring.latest_value("model_info", ring.keys[col][1])
        if v:
            loaded.append({"version": labels.get("version", ""), "sha256": labels.get("sha256", "")})
    out["versions"] = loaded
    out["predictions_rps"] = {k: v / w.span_s for k, v in w.by("model_predictions_total", "version").items()} \
        if w.span_s > 0 else {}
    nans = w.by("model_nan_scores_total", "version")
    out["nan_scores"] = {k: v for k, v in nans.items()}
    return out


def loadgen_signals(w: Window) -> dict:
    """The client's view (locust): answered rate and error rate as clients saw them, including requests that
    got no answer at all (code "0": a proxy down, a timeout) which no server metric can count."""
    out: dict = request_signals(w, LOADGEN_KIND)
    ring = w.ring
    for key in ("target_rps", "achieved_rps", "users", "feedback_pending"):
        out[key] = ring.latest_value(f"loadgen_{key}")
    profiles = [labels.get("profile", "") for col, labels in ring.columns("loadgen_profile")
                if ring.latest_value("loadgen_profile", ring.keys[col][1])]
    out["profile"] = profiles[0] if profiles else None
    by_code = w.by("loadgen_requests_total", "code")
    total = sum(by_code.values())
    out["no_answer_rate"] = _ratio(by_code.get("0", 0.0), total)
    return out


def process_signals(w: Window) -> dict[str, float | None]:
    """RSS from the latest scrape and CPU% from process_cpu_seconds_total over the window."""
    ring = w.ring
    cpu = w.rate("process_cpu_seconds_total") if ring.columns("process_cpu_seconds_total") else None
    return {
        "rss_bytes": ring.latest_value("process_resident_memory_bytes"),
        "cpu_percent": None if cpu is None else round(cpu * 100.0, 2),
    }


def service_kind(name: str, ring: ScrapeRing | None = None) -> str:
    """Which metric family prefix a service exposes: from its part's declaration, else from what it exports."""
    part = parts.part_for(name)
    if part is not None and part.metrics_prefix:
        return part.metrics_prefix
    if ring is not None:
        # an unknown name: the service whose `<prefix>_requests_total{code}` has a matching latency histogram
        candidates = sorted({key[0][: -len("_requests_total")] for key in ring.keys
                             if key[0].endswith("_requests_total") and any(k == "code" for k, _ in key[1])})
        for prefix in candidates:
            if ring.columns(f"{prefix}_request_latency_seconds_bucket"):
                return prefix
        if candidates:
            return candidates[0]
    return name.replace("-", "")


def service_signals(name: str, w: Window) -> dict:
    """Every derived number for one service over one window."""
    kind = service_kind(name, w.ring)
    if kind == GATEWAY_KIND:
        out = gateway_signals(w)
    elif kind == "model":
        out = model_signals(w)
    elif kind == LOADGEN_KIND:
        out = loadgen_signals(w)
    else:
        out = request_signals(w, kind)
    out.update(process_signals(w))
    out["window_s"] = round(w.span_s, 3)
    return out
