"""Measured figures: what this attempt's monitor series actually showed, summarised once when the attempt ends
(journaled as a `measured` event) and quoted by the debrief instead of numbers written into the scenario file.

A debrief text names a figure as `[[ measured.SERIES.AGG ]]`: SERIES is a monitor series (docs/monitoring.md, e.g.
`drift.amount.psi`, `drift.amount.median_ratio`, `decisions.decline_rate`, `gateway.code.422.share`,
`quality.accuracy`), AGG one of `max`, `min`, `mean`, `last`, or the same with `_pct` (a share shown as a
percentage). Only points after the scenario clock started count: the set-up and warm-up are not the incident.
A figure the attempt never measured reads "n/a (not measured)".
"""

from __future__ import annotations

import math
import re
from typing import Any

# Series worth keeping for the debrief (the journal is not a time-series store).
KEPT_PREFIXES = ("drift.", "decisions.", "version.", "quality.", "gateway.", "score.", "slo.", "llm.", "llm-")
AGGREGATES = ("max", "min", "mean", "last")
FIGURE = re.compile(r"\[\[\s*measured\.([A-Za-z0-9_.\-]+?)\.(max|min|mean|last)(_pct)?\s*\]\]")
NOT_MEASURED = "n/a (not measured)"
# The series names a debrief may quote (what lab/monitor/monitor.py records); checked by tests/scenario.
KNOWN_SERIES: tuple[str, ...] = (
    r"drift\.[a-z_]+\.(psi|null_rate|median_ratio)",
    r"decisions\.decline_rate",
    r"version\.[A-Za-z0-9_]+\.(rps|decline_rate|score_mean)",
    r"quality\.(accuracy|precision|recall|labels)",
    r"quality\.[A-Za-z0-9_]+\.(accuracy|precision|recall)",
    r"gateway\.code\.[0-9]{3}\.share",
    r"gateway\.(rps|error_rate|error_rate_5xx|p50_ms|p95_ms|p99_ms|fallback_rate|retry_rps)",
    r"score\.(mean|p90)",
    # the LLM track (lab/monitor/llm.py)
    r"llm\.(ttft_p50_ms|ttft_p99_ms|itl_p50_ms|itl_p99_ms|output_tokens_per_s|goodput_ratio)",
    r"llm\.finish_reason\.(stop|length|abort)",
    r"llm-[0-9]+\.(ttft_p50_ms|ttft_p99_ms|itl_p99_ms|output_tokens_per_s|kv_cache_usage|kv_cache_usage_max|"
    r"num_requests_waiting|num_requests_running|preemptions_per_s|prefix_cache_hit_rate|spec_acceptance_rate|"
    r"canary_perplexity)",
    r"llm-[0-9]+\.finish_reason\.(stop|length|abort)",
    r"gateway\.(rate_limited_rate|llm_error_rate|llm_ttft_p99_ms|client_ttft_p99_ms|client_itl_p99_ms|goodput_ratio)",
)


def summarize(export: dict[str, Any] | None, since: float | None = None) -> dict[str, dict[str, float]]:
    """{series: {max, min, mean, last, points}} over the export's points at or after `since`."""
    out: dict[str, dict[str, float]] = {}
    for name, points in ((export or {}).get("series") or {}).items():
        if not name.startswith(KEPT_PREFIXES):
            continue
        values = [float(v) for t, v in points if v is not None and (since is None or t >= since)
                  and isinstance(v, int | float) and math.isfinite(v)]
        if values:
            out[name] = {"max": max(values), "min": min(values), "mean": sum(values) / len(values),
                         "last": values[-1], "points": float(len(values))}
    return out


def _format(value: float, pct: bool) -> str:
    if pct:
        return f"{100 * value:.3g} %"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fill(text: str, measured: dict[str, dict[str, float]] | None) -> str:
    """The text with every `[[ measured.SERIES.AGG ]]` replaced by this attempt's figure."""
    def one(m: re.Match[str]) -> str:
        figures = (measured or {}).get(m.group(1))
        if not figures or m.group(2) not in figures:
            return NOT_MEASURED
        return _format(figures[m.group(2)], bool(m.group(3)))

    return FIGURE.sub(one, text)


def references(text: str) -> list[tuple[str, str]]:
    """(series, aggregate) of every measured figure a text quotes."""
    return [(m.group(1), m.group(2) + (m.group(3) or "")) for m in FIGURE.finditer(text)]
