"""The LLM track's signals: per replica from its `vllm:*` metrics, at the gateway from `gateway_llm_*`, as the
clients saw it from the load generator's `faultline_llm_client_*`, goodput, and the canary perplexity (the
monitor's own small echo + logprobs completion of a fixed held-out text, sent to each replica at a low rate).

Everything is computed from counter and histogram increases over the monitor's window (lab/monitor/signals.py's
`Window`), gauges from the latest scrape; a figure without data is None. docs/monitoring.md, "The LLM track".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import httpx
import numpy as np

from lab import parts
from lab.monitor.signals import Window, histogram_quantile, window
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.loadgen import NAME as LOADGEN

# The held-out canary text: Genesis 2:10, a verse of the trainer's validation split (every 20th verse,
# services/llm/corpus.py), so no version was trained on it; short enough for the tests' 128-token context.
CANARY_TEXT = ("And a river went out of Eden to water the garden; and from thence it was parted, and became into "
               "four heads.")
FINISH_REASONS = ("stop", "length", "abort")
CLIENT_OUTCOMES = ("ok", "error", "rate_limited", "abandoned")
# Goodput, as bench/llm.py defines it: a request is good when its TTFT <= 1 s and its ITL <= 200 ms.
GOODPUT_TTFT_S = 1.0
GOODPUT_ITL_S = 0.2

TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
E2E = "vllm:e2e_request_latency_seconds"
QUEUE = "vllm:request_queue_time_seconds"
CLIENT_TTFT = "faultline_llm_client_ttft_seconds"
CLIENT_ITL = "faultline_llm_client_itl_seconds"
CLIENT_E2E = "faultline_llm_client_e2e_seconds"
CLIENT_TOKENS = "faultline_llm_client_output_tokens_total"
CLIENT_REQUESTS = "faultline_llm_client_requests_total"


def llm_part() -> Any:
    """The LLM track's replicated part (None when no module declares one)."""
    try:
        return parts.replica_part(track="llm")
    except (RuntimeError, KeyError, ValueError, LookupError):
        return None


def is_llm(name: str) -> bool:
    part = llm_part()
    return part is not None and part.matches(name)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def merged_buckets(windows: Iterable[Window], name: str, want: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """One histogram's bucket increases summed over several targets' windows (same bounds)."""
    agg: dict[float, float] = {}
    for w in windows:
        bounds, counts = w.buckets(name, want)
        for b, c in zip(bounds, counts, strict=True):
            agg[float(b)] = agg.get(float(b), 0.0) + float(c)
    if not agg:
        return np.zeros(0), np.zeros(0)
    bounds = np.array(sorted(agg))
    return bounds, np.maximum.accumulate(np.array([agg[b] for b in bounds]))


def merged_quantile(windows: Iterable[Window], name: str, q: float) -> float | None:
    bounds, counts = merged_buckets(list(windows), name)
    return histogram_quantile(q, bounds, counts)


def share_at_most(windows: Iterable[Window], name: str, limit_s: float) -> tuple[float | None, float]:
    """(share of a histogram's observations <= limit_s, observations) over the windows; the share interpolates
    linearly inside the bucket holding the limit, as histogram_quantile does."""
    bounds, counts = merged_buckets(list(windows), name)
    if len(bounds) == 0 or counts[-1] <= 0:
        return None, 0.0
    total = float(counts[-1])
    below, lower = 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        if limit_s >= b:
            below, lower = float(c), float(b)
            continue
        if math.isinf(b):
            break
        frac = (limit_s - lower) / (b - lower) if b > lower else 1.0
        below += (float(c) - below) * max(0.0, min(1.0, frac))
        break
    return below / total, total


def gauge_over_window(w: Window, name: str, how: str = "max") -> float | None:
    """A gauge's max or mean over the scrapes of the window (KV usage moves between two scrapes)."""
    ring = w.ring
    col = ring.index.get((name, ()))
    if col is None:
        return None
    times = ring.timestamps()
    if not times:
        return None
    start = times[-1] - w.span_s
    values = []
    for t, row in ring._rows:  # noqa: SLF001 - the ring's rows, read on the monitor's thread
        if t >= start - 1e-9 and col < len(row) and not math.isnan(row[col]):
            values.append(float(row[col]))
    if not values:
        return None
    return max(values) if how == "max" else sum(values) / len(values)


def finish_shares(w: Window, canary_finishes: float = 0.0) -> tuple[dict[str, float | None], float]:
    """finish_reason -> share of the requests that finished in the window (the canary's own `length` finishes
    taken out), and how many finished."""
    by = w.by("vllm:request_success_total", "finished_reason")
    by["length"] = max(0.0, by.get("length", 0.0) - canary_finishes)
    total = sum(by.values())
    return {r: _ratio(by.get(r, 0.0), total) for r in sorted(set(FINISH_REASONS) | set(by))}, total


def server_signals(w: Window, canary: dict[str, Any] | None = None, canary_finishes: float = 0.0) -> dict[str, Any]:
    """One LLM replica over the window, from its `vllm:*` metrics."""
    ring = w.ring
    span = w.span_s
    shares, finished = finish_shares(w, canary_finishes)
    queries = w.sum("vllm:prefix_cache_queries_total")
    drafted = w.sum("vllm:spec_decode_num_draft_tokens_total")
    rejected = w.sum("llm_rejected_total")
    out: dict[str, Any] = {
        "rps": _ratio(finished, span),
        "requests": finished,
        "error_rate": _ratio(rejected, finished + rejected),
        "rejected_per_s": _ratio(rejected, span),
        "ttft_p50_ms": _ms(w.quantile(TTFT, 0.5)),
        "ttft_p99_ms": _ms(w.quantile(TTFT, 0.99)),
        "itl_p50_ms": _ms(w.quantile(ITL, 0.5)),
        "itl_p99_ms": _ms(w.quantile(ITL, 0.99)),
        "e2e_p50_ms": _ms(w.quantile(E2E, 0.5)),
        "e2e_p99_ms": _ms(w.quantile(E2E, 0.99)),
        "queue_p99_ms": _ms(w.quantile(QUEUE, 0.99)),
        "output_tokens_per_s": _ratio(w.sum("vllm:generation_tokens_total"), span),
        "prompt_tokens_per_s": _ratio(w.sum("vllm:prompt_tokens_total"), span),
        "num_requests_running": ring.latest_value("vllm:num_requests_running"),
        "num_requests_waiting": ring.latest_value("vllm:num_requests_waiting"),
        "kv_cache_usage": ring.latest_value("vllm:kv_cache_usage_perc"),
        "kv_cache_usage_max": gauge_over_window(w, "vllm:kv_cache_usage_perc", "max"),
        "kv_blocks_total": ring.latest_value("llm_kv_blocks_total"),
        "preemptions_per_s": _ratio(w.sum("vllm:num_preemptions_total"), span),
        "prefix_cache_hit_rate": _ratio(w.sum("vllm:prefix_cache_hits_total"), queries),
        "spec_acceptance_rate": _ratio(w.sum("vllm:spec_decode_num_accepted_tokens_total"), drafted),
        "finish_reason": shares,
        "ready": ring.latest_value("llm_ready"),
    }
    c = canary or {}
    out["canary_perplexity"] = c.get("perplexity")
    out["version"] = c.get("version")
    out["canary"] = dict(c) if c else None
    return out


def gateway_signals(w: Window) -> dict[str, Any]:
    """The gateway's LLM routes: request rate, errors, the 429 rate, TTFT as the gateway saw it, tokens/s."""
    by = w.by("gateway_llm_requests_total", "code")
    total = sum(by.values())
    errors = sum(v for c, v in by.items() if not c.startswith("2"))
    return {
        "llm_rps": _ratio(total, w.span_s),
        "llm_requests": total,
        "llm_error_rate": _ratio(errors, total),
        "rate_limited_rate": _ratio(by.get("429", 0.0), total),
        "llm_ttft_p50_ms": _ms(w.quantile("gateway_llm_ttft_seconds", 0.5)),
        "llm_ttft_p99_ms": _ms(w.quantile("gateway_llm_ttft_seconds", 0.99)),
        "llm_e2e_p99_ms": _ms(w.quantile("gateway_llm_request_latency_seconds", 0.99)),
        "llm_output_tokens_per_s": _ratio(w.sum("gateway_llm_tokens_total", {"kind": "completion"}), w.span_s),
    }


def client_signals(w: Window | None) -> dict[str, Any]:
    """The clients' view (the load generator's `faultline_llm_client_*`); every figure None when it exports none."""
    keys = ("client_rps", "client_ttft_p50_ms", "client_ttft_p99_ms", "client_itl_p50_ms", "client_itl_p99_ms",
            "client_e2e_p50_ms", "client_e2e_p99_ms", "client_output_tokens_per_s", "client_rate_limited_rate")
    out: dict[str, Any] = dict.fromkeys(keys)
    out["client_outcomes"] = None
    if w is None or not w.ring.columns(CLIENT_REQUESTS):
        return out
    by = w.by(CLIENT_REQUESTS, "outcome")
    total = sum(by.values())
    out.update({
        "client_rps": _ratio(total, w.span_s),
        "client_ttft_p50_ms": _ms(w.quantile(CLIENT_TTFT, 0.5)),
        "client_ttft_p99_ms": _ms(w.quantile(CLIENT_TTFT, 0.99)),
        "client_itl_p50_ms": _ms(w.quantile(CLIENT_ITL, 0.5)),
        "client_itl_p99_ms": _ms(w.quantile(CLIENT_ITL, 0.99)),
        "client_e2e_p50_ms": _ms(w.quantile(CLIENT_E2E, 0.5)),
        "client_e2e_p99_ms": _ms(w.quantile(CLIENT_E2E, 0.99)),
        "client_output_tokens_per_s": _ratio(w.sum(CLIENT_TOKENS), w.span_s),
        "client_rate_limited_rate": _ratio(by.get("rate_limited", 0.0), total),
        "client_outcomes": {o: _ratio(by.get(o, 0.0), total) for o in sorted(set(CLIENT_OUTCOMES) | set(by))},
    })
    return out


def goodput(client: Window | None, replicas: list[Window], gateway: Window | None) -> dict[str, Any]:
    """Goodput over the window: the share (and rate) of requests answered with TTFT <= 1 s and ITL <= 200 ms.

    The monitor sees histograms, not single requests, so this is an estimate: the share of requests answered
    (not an error, not a 429; abandoned streams left out) x the share of TTFTs <= 1 s x the share of inter-token
    gaps <= 200 ms. From the clients' figures when the load generator exports them, else from the replicas'
    histograms and the gateway's answers."""
    if client is not None and client.ring.columns(CLIENT_REQUESTS):
        by = client.by(CLIENT_REQUESTS, "outcome")
        counted = sum(v for o, v in by.items() if o != "abandoned")
        answered = _ratio(by.get("ok", 0.0), counted)
        ttft_ok, n = share_at_most([client], CLIENT_TTFT, GOODPUT_TTFT_S)
        itl_ok, _ = share_at_most([client], CLIENT_ITL, GOODPUT_ITL_S)
        source, span, requests = "client", client.span_s, counted
    else:
        answered = None
        requests = 0.0
        if gateway is not None and gateway.ring.columns("gateway_llm_requests_total"):
            by = gateway.by("gateway_llm_requests_total", "code")
            requests = sum(by.values())
            answered = _ratio(sum(v for c, v in by.items() if c.startswith("2")), requests)
        ttft_ok, n = share_at_most(replicas, TTFT, GOODPUT_TTFT_S)
        itl_ok, _ = share_at_most(replicas, ITL, GOODPUT_ITL_S)
        if answered is None and n > 0:
            answered, requests = 1.0, n
        source = "server"
        span = max((w.span_s for w in replicas), default=0.0)
    if answered is None or ttft_ok is None or requests <= 0:
        return {"goodput_ratio": None, "goodput_rps": None, "goodput_source": None}
    ratio = answered * ttft_ok * (1.0 if itl_ok is None else itl_ok)
    return {"goodput_ratio": ratio, "goodput_rps": _ratio(ratio * requests, span), "goodput_source": source}


def track_summary(replicas: dict[str, Window], canaries: dict[str, dict[str, Any]],
                  canary_finishes: dict[str, float]) -> dict[str, Any]:
    """The replicas together (histograms merged): TTFT/ITL p50/p99, tokens/s, finish shares; and per version
    (the version each replica's canary answer named): replicas and mean canary perplexity."""
    ws = list(replicas.values())
    by: dict[str, float] = {}
    for name, w in replicas.items():
        for reason, v in w.by("vllm:request_success_total", "finished_reason").items():
            by[reason] = by.get(reason, 0.0) + v
        by["length"] = max(0.0, by.get("length", 0.0) - canary_finishes.get(name, 0.0))
    total = sum(by.values())
    versions: dict[str, dict[str, Any]] = {}
    for name, c in sorted(canaries.items()):
        if not c.get("version"):
            continue
        v = versions.setdefault(c["version"], {"replicas": [], "perplexities": []})
        v["replicas"].append(name)
        if c.get("perplexity") is not None:
            v["perplexities"].append(c["perplexity"])
    return {
        "replicas": sorted(replicas),
        "ttft_p50_ms": _ms(merged_quantile(ws, TTFT, 0.5)),
        "ttft_p99_ms": _ms(merged_quantile(ws, TTFT, 0.99)),
        "itl_p50_ms": _ms(merged_quantile(ws, ITL, 0.5)),
        "itl_p99_ms": _ms(merged_quantile(ws, ITL, 0.99)),
        "output_tokens_per_s": sum(w.sum("vllm:generation_tokens_total") / w.span_s for w in ws if w.span_s > 0)
        if ws else None,
        "finish_reason": {r: _ratio(by.get(r, 0.0), total) for r in sorted(set(FINISH_REASONS) | set(by))},
        "versions": {v: {"replicas": d["replicas"], "canary_perplexity":
                         (sum(d["perplexities"]) / len(d["perplexities"])) if d["perplexities"] else None}
                     for v, d in sorted(versions.items())},
    }


async def canary(client: httpx.AsyncClient, url: str, text: str = CANARY_TEXT) -> dict[str, Any]:
    """One canary: the perplexity (per token) of `text` on the replica at `url`, through an echo completion with
    `logprobs` and `max_tokens: 0` (nothing generated). {"perplexity", "version", "tokens", "ms", "error", "at"}."""
    start = time.perf_counter()
    out: dict[str, Any] = {"perplexity": None, "version": None, "tokens": 0, "error": None, "at": time.time()}
    try:
        resp = await client.post(f"{url}/v1/completions", json={"prompt": text, "max_tokens": 0, "echo": True,
                                                                "logprobs": 0, "temperature": 0})
        body = resp.json()
        if resp.status_code != 200:
            err = body.get("error") if isinstance(body, dict) else None
            out["error"] = f"HTTP {resp.status_code}: {(err or {}).get('message', resp.text[:200])}"
        else:
            out["version"] = body.get("model")
            lps = [lp for lp in ((body["choices"][0].get("logprobs") or {}).get("token_logprobs") or [])
                   if isinstance(lp, int | float)]
            if lps:
                out["tokens"] = len(lps)
                out["perplexity"] = round(math.exp(-sum(lps) / len(lps)), 4)
            else:
                out["error"] = "the answer carried no prompt log-probabilities"
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


# ---- scenario probes (lab/scenario/probes.py declares the kinds; lab/attempt/probes.py asks here) ----------------

PROBE_KINDS = ("ttft_p99_ms", "itl_p99_ms", "ttft_gap_ms", "goodput_ratio", "finish_reason_share", "kv_cache_usage",
               "preemption_rate", "prefix_cache_hit_rate", "spec_acceptance_rate", "canary_perplexity",
               "rate_limited_rate", "llm_status_share")
MIN_REQUESTS = 3  # finished requests (or answers) a windowed figure needs, else no value
# draft tokens a replica must have proposed in the window for its acceptance rate to count (a few steps' worth)
MIN_DRAFT_TOKENS = 20


def probe_value(monitor: Any, probe: Any, seconds: float, now: float) -> float | None:
    """One LLM probe's value over the last `seconds` (on the monitor's loop); None: no data (unknown)."""
    def win(name: str) -> Window | None:
        ring = monitor.rings.get(name)
        return None if ring is None else window(ring, seconds, now)

    target = getattr(probe, "target", None)
    names = [target] if target is not None and is_llm(target) else \
        [n for n in monitor.rings if is_llm(n)]
    replicas = [w for n in names if (w := win(n)) is not None]
    kind = probe.kind
    if kind == "canary_perplexity":
        values = [c.get("perplexity") for n, c in monitor.canaries.items() if n in names]
        values = [v for v in values if v is not None]
        return max(values) if values else None
    if kind in ("ttft_p99_ms", "itl_p99_ms") and target == LOADGEN:
        w = win(LOADGEN)
        name = CLIENT_TTFT if kind == "ttft_p99_ms" else CLIENT_ITL
        if w is None or w.count(name) < MIN_REQUESTS:
            return None
        return _ms(w.quantile(name, 0.99))
    if kind == "ttft_p99_ms" and target == GATEWAY:
        w = win(GATEWAY)
        if w is None or w.count("gateway_llm_ttft_seconds") < MIN_REQUESTS:
            return None
        return _ms(w.quantile("gateway_llm_ttft_seconds", 0.99))
    if kind in ("ttft_p99_ms", "itl_p99_ms"):
        name = TTFT if kind == "ttft_p99_ms" else ITL
        if sum(w.count(name) for w in replicas) < MIN_REQUESTS:
            return None
        return _ms(merged_quantile(replicas, name, 0.99))
    if kind == "ttft_gap_ms":
        q = float(getattr(probe, "q", 0.5))
        client = win(LOADGEN)
        if client is None or client.count(CLIENT_TTFT) < MIN_REQUESTS or \
                sum(w.count(TTFT) for w in replicas) < MIN_REQUESTS:
            return None
        c, s = client.quantile(CLIENT_TTFT, q), merged_quantile(replicas, TTFT, q)
        return None if c is None or s is None else _ms(c - s)
    if kind == "goodput_ratio":
        return goodput(win(LOADGEN), replicas, win(GATEWAY))["goodput_ratio"]
    if kind == "rate_limited_rate":
        if target == LOADGEN:
            w = win(LOADGEN)
            if w is None:
                return None
            by = w.by(CLIENT_REQUESTS, "outcome")
            total = sum(by.values())
            return by.get("rate_limited", 0.0) / total if total >= MIN_REQUESTS else None
        w = win(GATEWAY)
        if w is None:
            return None
        by = w.by("gateway_llm_requests_total", "code")
        total = sum(by.values())
        return by.get("429", 0.0) / total if total >= MIN_REQUESTS else None
    if kind == "llm_status_share":
        w = win(GATEWAY)
        if w is None:
            return None
        by = w.by("gateway_llm_requests_total", "code")
        total = sum(by.values())
        status = probe.status
        hits = sum(v for c, v in by.items() if (c.startswith(status[0]) if status.endswith("xx") else c == status))
        return hits / total if total >= MIN_REQUESTS else None
    if kind == "finish_reason_share":
        hits = total = 0.0
        each: list[float] = []
        for n in names:
            w = win(n)
            if w is None:
                continue
            shares, finished = finish_shares(w, monitor._canary_finishes(n, w))  # noqa: SLF001 - its own canaries
            total += finished
            hits += (shares.get(probe.reason) or 0.0) * finished
            if finished >= MIN_REQUESTS:
                each.append(shares.get(probe.reason) or 0.0)
        if getattr(probe, "each_replica", False):
            # the worst replica: the lowest share when the rule is a floor, else the highest
            return (min(each) if probe.tolerance.min is not None else max(each)) if each else None
        return hits / total if total >= MIN_REQUESTS else None
    if kind == "kv_cache_usage":
        values = [v for w in replicas if (v := gauge_over_window(w, "vllm:kv_cache_usage_perc", "max")) is not None]
        return max(values) if values else None
    if kind == "preemption_rate":
        if not replicas:
            return None
        return sum(w.sum("vllm:num_preemptions_total") / w.span_s for w in replicas if w.span_s > 0)
    if kind == "prefix_cache_hit_rate":
        queries = sum(w.sum("vllm:prefix_cache_queries_total") for w in replicas)
        return _ratio(sum(w.sum("vllm:prefix_cache_hits_total") for w in replicas), queries)
    if kind == "spec_acceptance_rate":
        return spec_acceptance_rate(replicas)
    return None


def spec_acceptance_rate(replicas: list[Window]) -> float | None:
    """The lowest acceptance rate (accepted / proposed draft tokens) among the replicas that proposed at least
    MIN_DRAFT_TOKENS in their window; None when none did (speculation off, or no greedy traffic). The lowest, not
    the pooled ratio: one replica with a stale draft must not be averaged away by healthy ones."""
    rates = [w.sum("vllm:spec_decode_num_accepted_tokens_total") / drafted for w in replicas
             if (drafted := w.sum("vllm:spec_decode_num_draft_tokens_total")) >= MIN_DRAFT_TOKENS]
    return min(rates) if rates else None
