"""Input drift: each request feature's live window against the production model's training reference.

Per feature: PSI on reference-quantile bins (numeric) or on categories plus an `unseen` bucket (categorical);
a two-sample test shown alongside (KS for numeric, chi-squared for categorical) together with the
Jensen-Shannon distance; and the null rate. The flag is PSI >= 0.25 or a null-rate jump >= 0.05 — not the
p-values, which flag trivial shifts once the window holds thousands of rows (see docs/monitoring.md).

`Reference` preprocesses the reference once (sorted values, bin edges, category counts) so that a report
over a 10,000-row live window costs a few milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.monitor.stats import chi2_homogeneity, js_distance, ks_2samp, psi
from services.common.schema import REQUEST_CATEGORICAL, REQUEST_NUMERIC

UNSEEN = "__unseen__"
BOOLEAN_FEATURES = frozenset({"card_present"})
# Rows from the gateway's /v1/recent (or a registry reference) may nest the request under one of these keys.
_NESTED_KEYS = ("input", "inputs", "request", "features", "transaction", "row")
_WRAPPER_KEYS = ("rows", "items", "recent", "data", "reference", "columns", "sample")


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and binning. Defaults are argued in docs/monitoring.md."""

    bins: int = 10
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    null_rate_delta: float = 0.05
    min_rows: int = 500
    min_values: int = 50
    epsilon: float = 1e-4
    numeric: tuple[str, ...] = REQUEST_NUMERIC
    categorical: tuple[str, ...] = REQUEST_CATEGORICAL


def to_columns(data: Any, features: Iterable[str]) -> dict[str, list[Any]]:
    """Columns for `features` from rows (list of dicts, possibly nested), a dict of columns, or a wrapper
    object such as {"rows": [...]} / {"items": [...]}. Missing values become None."""
    features = list(features)
    if isinstance(data, Mapping):
        for key in _WRAPPER_KEYS:
            if key in data and not any(f in data for f in features):
                return to_columns(data[key], features)
        n = max((len(v) for v in data.values() if isinstance(v, Sequence | np.ndarray)), default=0)
        return {f: list(data[f]) if f in data else [None] * n for f in features}
    rows = list(data or [])
    if rows and isinstance(rows[0], Mapping) and any(isinstance(rows[0].get(k), Mapping) for k in _NESTED_KEYS):
        rows = [_flatten(r) for r in rows]
    # plain dicts (what JSON decoding gives) take the fast path: an ABC isinstance per cell costs more than
    # the whole drift computation
    if not all(type(r) is dict for r in rows):
        rows = [r if isinstance(r, Mapping) else {} for r in rows]
    return {f: [r.get(f) for r in rows] for f in features}


def _flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if not isinstance(v, Mapping)}
    for k in _NESTED_KEYS:
        inner = row.get(k)
        if isinstance(inner, Mapping):
            for ik, iv in inner.items():
                flat.setdefault(ik, iv)
    return flat


def numeric_values(values: Sequence[Any]) -> np.ndarray:
    """Floats with NaN for missing or non-numeric values (booleans count as 0/1)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            return arr
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = math.nan if v is None else float(v)
        except (TypeError, ValueError):
            out[i] = math.nan
    return out


def category_key(value: Any, boolean: bool = False) -> str | None:
    """One spelling per category, so a reference saved as 0/1 and a live window sent as true/false agree."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool | np.bool_) or boolean:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes"):
                return "true"
            if low in ("false", "0", "no"):
                return "false"
            return low
        return "true" if bool(value) else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class _NumericRef:
    sorted_values: np.ndarray
    edges: np.ndarray
    proportions: np.ndarray
    null_rate: float
    rows: int


@dataclass
class _CategoricalRef:
    categories: list[str]
    counts: np.ndarray
    proportions: np.ndarray
    null_rate: float
    rows: int


def _bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype(np.float64)


def _numeric_ref(values: np.ndarray, bins: int) -> _NumericRef:
    rows = len(values)
    present = np.sort(values[~np.isnan(values)])
    if len(present):
        qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        # ties (integer hours, a point mass of zeros) collapse quantiles; duplicate edges would make empty bins
        edges = np.unique(np.quantile(present, qs))
    else:
        edges = np.zeros(0)
    counts = _bin_counts(edges, present)
    props = counts / counts.sum() if counts.sum() else counts
    null_rate = float(1.0 - len(present) / rows) if rows else 0.0
    return _NumericRef(present, edges, props, null_rate, rows)


def category_counts(values: Sequence[Any], boolean: bool) -> tuple[Counter[str], int]:
    """Counts per normalised category, and the number of nulls. Raw values are counted first (in C) and
    normalised once per distinct value, not once per row."""
    counter: Counter[str] = Counter()
    nulls = 0
    try:
        raw_counts = Counter(values)
    except TypeError:  # an unhashable value (a list, an object) in a categorical field: count its text
        raw_counts = Counter(v if isinstance(v, Hashable) else str(v) for v in values)
    for raw, n in raw_counts.items():
        key = category_key(raw, boolean)
        if key is None:
            nulls += n
        else:
            counter[key] += n
    return counter, nulls


def _categorical_ref(values: Sequence[Any], boolean: bool) -> _CategoricalRef:
    counter, nulls = category_counts(values, boolean)
    categories = sorted(counter)
    counts = np.array([counter[c] for c in categories], dtype=np.float64)
    props = counts / counts.sum() if counts.sum() else counts
    null_rate = float(nulls / len(values)) if len(values) else 0.0
    return _CategoricalRef(categories, counts, props, null_rate, len(values))


@dataclass
class Reference:
    """A preprocessed drift reference (the production model's training sample)."""

    version: str | None
    numeric: dict[str, _NumericRef] = field(default_factory=dict)
    categorical: dict[str, _CategoricalRef] = field(default_factory=dict)
    score: _NumericRef | None = None
    rows: int = 0
    config: DriftConfig = field(default_factory=DriftConfig)

    @classmethod
    def build(cls, data: Any, version: str | None = None, config: DriftConfig | None = None) -> Reference:
        config = config or DriftConfig()
        cols = to_columns(data, (*config.numeric, *config.categorical, "score"))
        ref = cls(version=version, config=config)
        ref.rows = len(next(iter(cols.values()), []))
        for f in config.numeric:
            ref.numeric[f] = _numeric_ref(numeric_values(cols[f]), config.bins)
        for f in config.categorical:
            ref.categorical[f] = _categorical_ref(cols[f], f in BOOLEAN_FEATURES)
        scores = numeric_values(cols["score"])
        if len(scores) and not np.isnan(scores).all():
            ref.score = _numeric_ref(scores, config.bins)
        return ref


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def _status(cfg: DriftConfig, psi_value: float | None, null_jump: bool, enough: bool) -> tuple[str, bool]:
    if not enough:
        return "insufficient_data", False
    if null_jump or (psi_value is not None and psi_value >= cfg.psi_drift):
        return "drifted", True
    if psi_value is not None and psi_value >= cfg.psi_warn:
        return "moderate", False
    return "stable", False


def numeric_drift(name: str, ref: _NumericRef, live: np.ndarray, cfg: DriftConfig) -> dict[str, Any]:
    present = np.sort(live[~np.isnan(live)])
    rows = len(live)
    null_rate = float(1.0 - len(present) / rows) if rows else 0.0
    psi_value = js = d = p = None
    if len(present) >= cfg.min_values and len(ref.sorted_values):
        actual = _bin_counts(ref.edges, present) / len(present)
        psi_value = psi(ref.proportions, actual, cfg.epsilon)
        js = js_distance(ref.proportions, actual)
        d, p = ks_2samp(ref.sorted_values, present)
    reasons = []
    null_jump = abs(null_rate - ref.null_rate) >= cfg.null_rate_delta
    if null_jump:
        reasons.append(f"null rate {null_rate:.1%} vs {ref.null_rate:.1%} in reference")
    if psi_value is not None and psi_value >= cfg.psi_drift:
        reasons.append(f"PSI {psi_value:.3f} >= {cfg.psi_drift}")
    status, drifted = _status(cfg, psi_value, null_jump, rows >= cfg.min_rows)
    return {
        "name": name,
        "kind": "numeric",
        "psi": _round(psi_value),
        "test": "ks",
        "statistic": _round(d),
        "p_value": _round(p, 8),
        "js": _round(js),
        "null_rate": _round(null_rate),
        "reference_null_rate": _round(ref.null_rate),
        "reference_median": _round(float(np.median(ref.sorted_values))) if len(ref.sorted_values) else None,
        "live_median": _round(float(np.median(present))) if len(present) else None,
        "status": status,
        "drifted": drifted,
        "reasons": reasons if drifted else [],
    }


def categorical_drift(
    name: str, ref: _CategoricalRef, values: Sequence[Any], cfg: DriftConfig
) -> dict[str, Any]:
    counter, _ = category_counts(values, name in BOOLEAN_FEATURES)
    present = sum(counter.values())
    rows = len(values)
    null_rate = float(1.0 - present / rows) if rows else 0.0
    known = set(ref.categories)
    unseen = {k: v for k, v in counter.items() if k not in known}
    unseen_total = float(sum(unseen.values()))
    psi_value = js = stat = p = None
    if present >= cfg.min_values and len(ref.categories):
        live_counts = np.array([counter.get(c, 0) for c in ref.categories] + [unseen_total], dtype=np.float64)
        ref_counts = np.concatenate((ref.counts, [0.0]))
        expected = ref_counts / ref_counts.sum()
        actual = live_counts / live_counts.sum()
        psi_value = psi(expected, actual, cfg.epsilon)
        js = js_distance(expected, actual)
        # the chi-squared test uses each unseen category as its own column, as a fresh category really is
        full_live = np.concatenate((live_counts[:-1], sorted(unseen.values())))
        full_ref = np.concatenate((ref.counts, np.zeros(len(unseen))))
        stat, p = chi2_homogeneity(full_ref, full_live)
    reasons = []
    null_jump = abs(null_rate - ref.null_rate) >= cfg.null_rate_delta
    if null_jump:
        reasons.append(f"null rate {null_rate:.1%} vs {ref.null_rate:.1%} in reference")
    if psi_value is not None and psi_value >= cfg.psi_drift:
        reasons.append(f"PSI {psi_value:.3f} >= {cfg.psi_drift}")
    if unseen and present:
        top = max(unseen, key=lambda k: unseen[k])
        if unseen_total / present >= 0.01:
            reasons.append(f"{unseen_total / present:.1%} unseen categories (most: {top!r})")
    status, drifted = _status(cfg, psi_value, null_jump, rows >= cfg.min_rows)
    return {
        "name": name,
        "kind": "categorical",
        "psi": _round(psi_value),
        "test": "chi2",
        "statistic": _round(stat),
        "p_value": _round(p, 8),
        "js": _round(js),
        "null_rate": _round(null_rate),
        "reference_null_rate": _round(ref.null_rate),
        "unseen_rate": _round(unseen_total / present) if present else None,
        "unseen": sorted(unseen, key=lambda k: -unseen[k])[:5],
        "status": status,
        "drifted": drifted,
        "reasons": reasons if drifted else [],
    }


def drift_report(reference: Reference, live: Any) -> dict[str, Any]:
    """The drift of every request feature (and of the score distribution, when the reference has scores)."""
    cfg = reference.config
    cols = to_columns(live, (*cfg.numeric, *cfg.categorical, "score"))
    rows = len(next(iter(cols.values()), []))
    features = []
    for f in cfg.numeric:
        features.append(numeric_drift(f, reference.numeric[f], numeric_values(cols[f]), cfg))
    for f in cfg.categorical:
        features.append(categorical_drift(f, reference.categorical[f], cols[f], cfg))
    score = None
    if reference.score is not None:
        live_scores = numeric_values(cols["score"])
        if not np.isnan(live_scores).all():
            score = numeric_drift("score", reference.score, live_scores, cfg)
            score["kind"] = "score"
    drifted = [f["name"] for f in features if f["drifted"]]
    return {
        "features": features,
        "drifted": drifted,
        "drift_share": round(len(drifted) / len(features), 4) if features else 0.0,
        "window": rows,
        "enough_data": rows >= cfg.min_rows,
        "reference_version": reference.version,
        "reference_rows": reference.rows,
        "score": score,
        "thresholds": {
            "psi_warn": cfg.psi_warn,
            "psi_drift": cfg.psi_drift,
            "null_rate_delta": cfg.null_rate_delta,
            "min_rows": cfg.min_rows,
            "bins": cfg.bins,
        },
    }
