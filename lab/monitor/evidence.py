"""Evidence a debrief may cite, computed from what the monitor already holds: per-feature distributions (live
against the training reference), decisions (decline rate, score histogram, confusion matrix, cost-weighted loss),
status codes per route, and per-upstream latency.

Pure functions over a drift `Reference`, a live window of rows and gateway scrape windows; the console's
`distributions`, `decisions`, `status_codes` and `upstreams` operations render them (docs/console.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lab.monitor.drift import BOOLEAN_FEATURES, Reference, category_counts, numeric_values, to_columns
from lab.monitor.signals import Window, _ms, _ratio

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.50, 0.75, 0.95)
QUANTILE_NAMES: tuple[str, ...] = ("p5", "p25", "p50", "p75", "p95")
# What a wrong decision costs, in units of one wrongly declined legitimate transaction: a missed fraud loses the
# transaction's money (the lab's average fraud is worth about ten false declines of customer friction).
COST_FALSE_DECLINE = 1.0
COST_MISSED_FRAUD = 10.0


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return dict.fromkeys(QUANTILE_NAMES)
    qs = np.quantile(values, QUANTILES)
    return {n: round(float(q), 6) for n, q in zip(QUANTILE_NAMES, qs, strict=True)}


def _ratio_of_medians(live: float | None, ref: float | None) -> float | None:
    if live is None or ref is None or ref == 0:
        return None
    return round(live / ref, 4)


def numeric_distribution(name: str, ref_sorted: np.ndarray, edges: np.ndarray, ref_props: np.ndarray,
                         live: np.ndarray) -> dict[str, Any]:
    """Quantiles of reference and live, and a histogram on the reference's decile bins (share per bin)."""
    present = live[~np.isnan(live)]
    ref_q, live_q = _quantiles(ref_sorted), _quantiles(present)
    hist: list[dict[str, Any]] = []
    if len(present):
        counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        live_props = counts / counts.sum()
    else:
        live_props = np.zeros(len(edges) + 1)
    for i in range(len(edges) + 1):
        lo = None if i == 0 else round(float(edges[i - 1]), 6)
        hi = None if i == len(edges) else round(float(edges[i]), 6)
        hist.append({"from": lo, "to": hi, "reference": round(float(ref_props[i]), 4) if i < len(ref_props) else 0.0,
                     "live": round(float(live_props[i]), 4)})
    return {"name": name, "kind": "numeric", "rows": int(len(live)), "present": int(len(present)),
            "reference": ref_q, "live": live_q,
            "median_ratio": _ratio_of_medians(live_q["p50"], ref_q["p50"]), "histogram": hist}


def categorical_distribution(name: str, categories: list[str], ref_props: np.ndarray, values: list[Any]
                             ) -> dict[str, Any]:
    counter, nulls = category_counts(values, name in BOOLEAN_FEATURES)
    present = sum(counter.values())
    keys = list(categories) + sorted(k for k in counter if k not in set(categories))
    hist = [{"category": k, "reference": round(float(ref_props[i]), 4) if i < len(categories) else 0.0,
             "live": round(counter.get(k, 0) / present, 4) if present else 0.0} for i, k in enumerate(keys)]
    return {"name": name, "kind": "categorical", "rows": len(values), "present": present,
            "null_rate": round(nulls / len(values), 4) if values else None, "histogram": hist}


def distributions(reference: Reference | None, live: Any, feature: str | None = None) -> dict[str, Any]:
    """Every request feature and the model score (or just `feature`): live window against the training sample."""
    if reference is None:
        return {"reference_version": None, "window": 0, "features": []}
    cfg = reference.config
    cols = to_columns(live, (*cfg.numeric, *cfg.categorical, "score"))
    rows = len(next(iter(cols.values()), []))
    out = []
    for f in cfg.numeric:
        if feature in (None, f):
            r = reference.numeric[f]
            out.append(numeric_distribution(f, r.sorted_values, r.edges, r.proportions, numeric_values(cols[f])))
    for f in cfg.categorical:
        if feature in (None, f):
            c = reference.categorical[f]
            out.append(categorical_distribution(f, c.categories, c.proportions, cols[f]))
    if reference.score is not None and feature in (None, "score"):
        s = reference.score
        entry = numeric_distribution("score", s.sorted_values, s.edges, s.proportions, numeric_values(cols["score"]))
        out.append({**entry, "kind": "score"})
    return {"reference_version": reference.version, "reference_rows": reference.rows, "window": rows,
            "features": out}


def decisions(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Decline rate (per version and overall) and the score histogram over the monitor's window; the confusion
    matrix and the cost-weighted loss from the labels over the quality window."""
    versions = snapshot.get("versions") or {}
    total = declines = 0.0
    window_s = float(snapshot.get("window_s") or 0.0)
    per_version = {}
    for v, f in versions.items():
        n = (f.get("rps") or 0.0) * window_s
        rate = f.get("decline_rate")
        total += n
        declines += n * (rate or 0.0)
        per_version[v] = {"decline_rate": rate, "rps": f.get("rps"), "score_mean": f.get("score_mean")}
    quality = snapshot.get("quality") or {}
    overall = quality.get("overall") or {}
    counts = {k: float(overall.get(k) or 0.0) for k in ("tp", "fp", "tn", "fn")}
    labels = sum(counts.values())
    cost = counts["fp"] * COST_FALSE_DECLINE + counts["fn"] * COST_MISSED_FRAUD
    return {
        "window_s": window_s,
        "decline_rate": _ratio(declines, total),
        "versions": per_version,
        "score": snapshot.get("score") or {},
        "quality_window_s": quality.get("window_s"),
        "confusion": {"labels": labels, **counts},
        "accuracy": snapshot.get("accuracy"),
        "recall": snapshot.get("recall"),
        "precision": snapshot.get("precision"),
        "costs": {"false_decline": COST_FALSE_DECLINE, "missed_fraud": COST_MISSED_FRAUD},
        "cost_per_label": round(cost / labels, 4) if labels else None,
        "cost_total": cost,
    }


def status_codes(w: Window, prefix: str) -> dict[str, dict[str, float]]:
    """{route: {code: count}} of `<prefix>_requests_total` over the window."""
    out: dict[str, dict[str, float]] = {}
    for (route, code), v in w.by(f"{prefix}_requests_total", ("route", "code")).items():
        if v > 0:
            out.setdefault(route or "-", {})[code or "-"] = round(v, 1)
    return {r: dict(sorted(c.items())) for r, c in sorted(out.items())}


def upstream_latency(w: Window) -> dict[str, dict[str, float | None]]:
    """Per upstream as the gateway sees it (the feature store, each replica): p50/p95/p99 (ms), rps, errors."""
    by = w.by("gateway_upstream_requests_total", ("upstream", "replica", "outcome"))
    seen: dict[str, dict[str, float]] = {}
    for (upstream, replica, outcome), v in by.items():
        d = seen.setdefault(replica or upstream, {"total": 0.0, "errors": 0.0})
        d["total"] += v
        if outcome not in ("ok", "success", "2xx", "200"):
            d["errors"] += v
    replicas = {labels.get("replica") for _, labels in w.ring.columns("gateway_upstream_latency_seconds_bucket")}
    out = {}
    for who, d in sorted(seen.items()):
        want = {"replica": who} if who in replicas else {"upstream": who}
        lat = "gateway_upstream_latency_seconds"
        out[who] = {"rps": _ratio(d["total"], w.span_s), "error_rate": _ratio(d["errors"], d["total"]),
                    "p50_ms": _ms(w.quantile(lat, 0.50, want)), "p95_ms": _ms(w.quantile(lat, 0.95, want)),
                    "p99_ms": _ms(w.quantile(lat, 0.99, want))}
    return out
