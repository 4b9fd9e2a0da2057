"""The `reference [version]` operation: calibration data for scenario authors and learners alike.

What a model version was trained against, from the registry's `reference.json` (a sample of training inputs with
the label and the version's own score) and its meta: the score distribution (quantiles, a 20-bin histogram, the
share at or above the gateway's decision threshold — the decline rate to expect —, at the model's own calibrated
threshold and at a few round thresholds) and each feature's
distribution (numeric: quantiles, mean, null rate; categorical: the top categories' shares). An author calibrates
`score_quantile`, `decline_rate` and `drift_psi` tolerances with it (docs/monitoring.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation, table
from lab.parts.gateway import NAME as GATEWAY
from lab.stackclients import ServiceCallError

QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
BINS = 20
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TOP_CATEGORIES = 8
SKIP = ("label", "score")


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{round(q * 100):02d}": round(float(np.quantile(values, q)), 5) for q in QUANTILES}


def score_summary(scores: np.ndarray, threshold: float | None,
                  gateway_threshold: float | None = None) -> dict[str, Any]:
    counts, edges = np.histogram(scores, bins=BINS, range=(0.0, 1.0))
    n = len(scores)
    return {
        "count": n,
        "mean": round(float(scores.mean()), 5),
        "quantiles": _quantiles(scores),
        "histogram": [[round(float(lo), 3), round(float(hi), 3), round(float(c) / n, 5)]
                      for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)],
        "threshold": threshold,
        "decline_share": None if threshold is None else round(float((scores >= threshold).mean()), 5),
        "gateway_threshold": gateway_threshold,
        "expected_decline_rate": None if gateway_threshold is None
        else round(float((scores >= gateway_threshold).mean()), 5),
        "decline_share_at": {f"{t:g}": round(float((scores >= t).mean()), 5) for t in THRESHOLDS},
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def feature_summary(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    values = [r.get(name) for r in rows]
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    null_rate = round(1 - len(present) / len(values), 5) if values else None
    if present and all(_is_number(v) for v in present):
        arr = np.array(present, dtype=float)
        return {"name": name, "type": "numeric", "null_rate": null_rate, "mean": round(float(arr.mean()), 5),
                "quantiles": _quantiles(arr)}
    counts: dict[str, int] = {}
    for v in present:
        counts[str(v)] = counts.get(str(v), 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
    return {"name": name, "type": "categorical", "null_rate": null_rate, "categories": len(counts),
            "top": {k: round(c / len(present), 5) for k, c in top}}


def summarise(reference: dict[str, Any], meta: dict[str, Any], gateway_threshold: float | None = None
              ) -> dict[str, Any]:
    rows = [r for r in reference.get("rows") or [] if isinstance(r, dict)]
    threshold = (meta.get("metrics") or {}).get("threshold")
    scores = np.array([r["score"] for r in rows if _is_number(r.get("score"))], dtype=float)
    columns = reference.get("columns") or [k for k in (rows[0] if rows else {}) if k not in SKIP]
    labels = [r["label"] for r in rows if _is_number(r.get("label"))]
    return {
        "version": reference.get("version") or meta.get("version"),
        "rows": len(rows),
        "label_rate": round(sum(labels) / len(labels), 5) if labels else None,
        "scores": score_summary(scores, threshold, gateway_threshold) if len(scores) else None,
        "features": [feature_summary(rows, c) for c in columns if c not in SKIP],
    }


def _text(data: dict[str, Any]) -> str:
    s = data["scores"]
    lines = [f"reference of {data['version']}: {data['rows']} training rows, label (fraud) rate "
             f"{num(data['label_rate'], '{:.2%}')}"]
    if s is not None:
        q = s["quantiles"]
        lines.append("scores: mean " + num(s["mean"], "{:.3f}") + ", "
                     + ", ".join(f"{k} {v:.3f}" for k, v in q.items()))
        if s["gateway_threshold"] is not None:
            lines.append(f"gateway decision threshold {s['gateway_threshold']:g}: {s['expected_decline_rate']:.1%} of "
                         "scores at or above it (the decline rate to expect on training-like traffic)")
        if s["threshold"] is not None:
            lines.append(f"the model's calibrated threshold {s['threshold']:g} (where its metrics were measured): "
                         f"{s['decline_share']:.1%} at or above it")
        lines.append("share at or above: " + ", ".join(f"{t} {v:.1%}" for t, v in s["decline_share_at"].items()))
        lines.append("histogram: " + " ".join(f"[{lo:.2f},{hi:.2f}) {f:.1%}" for lo, hi, f in s["histogram"] if f))
    rows = [["FEATURE", "TYPE", "NULL", "P05", "P50", "P95 / TOP CATEGORIES"]]
    for f in data["features"]:
        if f["type"] == "numeric":
            q = f["quantiles"]
            rows.append([f["name"], "numeric", num(f["null_rate"], "{:.1%}"), num(q["p05"], "{:g}"),
                         num(q["p50"], "{:g}"), num(q["p95"], "{:g}")])
        else:
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(f["top"].items())[:4])
            rows.append([f["name"], "categorical", num(f["null_rate"], "{:.1%}"), "", "", top])
    return "\n".join([*lines, "", table(rows)])


@operation("reference")
def reference(ctx: ConsoleContext, args: Any) -> OpResult:
    http = ctx.http
    try:
        if args.version is None:
            production = http.registry("GET", "/v1/models?stage=production")
            if not production:
                raise ConsoleError("no version is in production; name one: reference VERSION", 409)
            version = production[0]["version"]
        else:
            version = ctx.resolve_version(args.version)
        meta = http.registry("GET", f"/v1/models/{version}")
        ref = http.registry("GET", f"/v1/models/{version}/reference")
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc
    try:
        gateway_threshold = http.get_config(GATEWAY).get("decision_threshold")
    except ServiceCallError:
        gateway_threshold = None  # the gateway is down: the reference still answers
    data = summarise(ref, meta, gateway_threshold)
    data["version"] = version
    return OpResult(data, _text(data))
