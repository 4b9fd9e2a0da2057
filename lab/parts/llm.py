"""An LLM replica (`llm-N`): the OpenAI-compatible streaming server of the LLM track (services/llm, docs/llm.md),
which the gateway calls through the replica's own hop. Its declaration and typed client."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lab.parts import register
from lab.parts.base import Dial, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient, PartError, detail_of
from lab.parts.gateway import NAME as GATEWAY

NAME = "llm"
TRACK = "llm"
DEFAULT_VERSION = "v1"


def llm_registry(settings: Any) -> Any:
    """Where the LLM versions live: `<registry>/llm/versions/<v>` (services/registry/llm.py)."""
    return settings.registry_dir / NAME


def _version(settings: Any) -> str:
    return str(getattr(settings, "llm_version", None) or DEFAULT_VERSION)


def _args(name: str, launch: Launch) -> list[str]:
    s = launch.settings
    return ["--registry", str(s.registry_dir), "--replica", name, "--version", _version(s)]


def _preflight(settings: Any) -> str | None:
    version = _version(settings)
    if not (llm_registry(settings) / "versions" / version / "meta.json").is_file():
        return (f"no trained LLM version {version} in {llm_registry(settings)} — run `make setup` "
                f"(or `python -m services.llm.train --home {settings.home}`)")
    return None


class LLMClient(PartClient):
    what = "LLM replica"

    def models(self) -> dict[str, Any]:
        return self.call("GET", "/v1/models")

    def engine(self) -> dict[str, Any]:
        """Scheduler and KV-cache counters (running, waiting, blocks, preemptions)."""
        return self.call("GET", "/v1/engine")

    def complete(self, prompt: str, max_tokens: int = 16, **params: Any) -> dict[str, Any]:
        """A non-streaming completion (what the console's probes may send)."""
        return self.call("POST", "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, **params},
                         timeout=60.0)

    def vllm_metrics(self) -> dict[str, Any]:
        """This replica's server-side figures from its /metrics (vLLM's names), cumulative since it started:
        gauges as they stand, counters as totals, histograms as count, sum, mean and p50/p99 from the buckets."""
        return summarize_vllm(self.metrics())

    def perplexity(self, text: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The perplexity this replica's model gives `text` (completions with `echo` and `logprobs`, no sampling
        beyond one token): exp of minus the mean log-probability of every prompt token after the first."""
        got = self.call("POST", "/v1/completions", {"prompt": text, "max_tokens": 1, "echo": True, "logprobs": 0,
                                                    "temperature": 0}, timeout=timeout_s)
        return perplexity_of(got)

    def stream(self, body: dict[str, Any], timeout_s: float = 60.0) -> Iterator[tuple[float, dict[str, Any]]]:
        """POST /v1/completions with `stream: true` (to a replica, or the gateway: the same OpenAI shape); yields
        (seconds since the request was sent, chunk) per server-sent event until `[DONE]`."""
        yield from stream_completion(self.http, self.url, body, self.name, timeout_s)


def stream_completion(http: httpx.Client, base_url: str, body: dict[str, Any], who: str,
                      timeout_s: float = 60.0) -> Iterator[tuple[float, dict[str, Any]]]:
    """The OpenAI completions stream of `base_url` (an LLM replica or the gateway), as (seconds, chunk) pairs."""
    t0 = time.monotonic()
    try:
        with http.stream("POST", base_url.rstrip("/") + "/v1/completions", json={**body, "stream": True},
                         timeout=timeout_s) as resp:
            if resp.status_code != 200:
                resp.read()
                raise PartError(f"{who} refused POST /v1/completions: {resp.status_code} {detail_of(resp)}",
                                resp.status_code, resp.text)
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise PartError(f"{who} ended the stream with an error: {chunk['error']}", 502)
                yield time.monotonic() - t0, chunk
    except httpx.HTTPError as exc:
        raise PartError(f"{who} at {base_url} did not answer the stream: {exc}") from exc


def perplexity_of(completion: dict[str, Any]) -> dict[str, Any]:
    """{"perplexity", "tokens", "mean_logprob"} of the echoed prompt of a completions answer."""
    choice = (completion.get("choices") or [{}])[0]
    lps = [lp for lp in ((choice.get("logprobs") or {}).get("token_logprobs") or []) if lp is not None]
    usage = completion.get("usage") or {}
    # the echoed list holds the prompt's tokens then the one generated: score the prompt's only
    prompt_n = int(usage.get("prompt_tokens") or len(lps) + 1) - 1
    lps = lps[:prompt_n] if prompt_n > 0 else lps
    if not lps:
        raise PartError("the replica returned no log-probabilities for the prompt", 502)
    mean = sum(lps) / len(lps)
    return {"perplexity": math.exp(-mean), "tokens": len(lps), "mean_logprob": mean}


HISTOGRAMS = {"vllm:time_to_first_token_seconds": "ttft", "vllm:inter_token_latency_seconds": "itl",
              "vllm:e2e_request_latency_seconds": "e2e", "vllm:request_queue_time_seconds": "queue_time"}
GAUGES = {"vllm:num_requests_running": "num_requests_running", "vllm:num_requests_waiting": "num_requests_waiting",
          "vllm:kv_cache_usage_perc": "kv_cache_usage", "llm_kv_blocks_used": "kv_blocks_used",
          "llm_kv_blocks_total": "kv_blocks_total", "llm_ready": "ready",
          "process_resident_memory_bytes": "rss_bytes"}
PROMPT_LEN = "vllm:request_prompt_tokens"
COUNTERS = {"vllm:num_preemptions_total": "preemptions", "vllm:prefix_cache_queries_total": "prefix_cache_queries",
            "vllm:prefix_cache_hits_total": "prefix_cache_hits", "vllm:prompt_tokens_total": "prompt_tokens",
            "vllm:generation_tokens_total": "generation_tokens", "vllm:spec_decode_num_drafts_total": "spec_drafts",
            "vllm:spec_decode_num_draft_tokens_total": "spec_draft_tokens",
            "vllm:spec_decode_num_accepted_tokens_total": "spec_accepted_tokens",
            "llm_engine_steps_total": "engine_steps"}


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = upper, count
    return lower


def summarize_vllm(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    finished: dict[str, float] = {}
    rejected: dict[str, float] = {}
    prompt_rows: list[tuple[float, float]] = []
    prompt_sum = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in GAUGES:
                out[GAUGES[s.name]] = s.value
            elif s.name in COUNTERS:
                out[COUNTERS[s.name]] = s.value
            elif s.name == "vllm:request_success_total":
                finished[s.labels.get("finished_reason", "?")] = s.value
            elif s.name == "llm_rejected_total":
                rejected[s.labels.get("reason", "?")] = s.value
            elif s.name.endswith("_bucket") and s.name[:-7] in HISTOGRAMS:
                buckets.setdefault(HISTOGRAMS[s.name[:-7]], []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum") and s.name[:-4] in HISTOGRAMS:
                sums[HISTOGRAMS[s.name[:-4]]] = s.value
            elif s.name == PROMPT_LEN + "_bucket":
                prompt_rows.append((float(s.labels["le"]), s.value))
            elif s.name == PROMPT_LEN + "_sum":
                prompt_sum = s.value
    for key, rows in buckets.items():
        rows.sort()
        count = rows[-1][1] if rows else 0.0
        p50, p99 = _quantile(rows, 0.5), _quantile(rows, 0.99)
        out[key] = {"count": count, "mean_ms": 1000 * sums.get(key, 0.0) / count if count else None,
                    "p50_ms": None if p50 is None else 1000 * p50, "p99_ms": None if p99 is None else 1000 * p99}
    prompt_rows.sort()
    prompts = prompt_rows[-1][1] if prompt_rows else 0.0
    # Prompt lengths in tokens (refused prompts included): how close the prompts come to the model's context.
    out["prompt_len"] = {"count": prompts, "mean": prompt_sum / prompts if prompts else None,
                         "p50": _quantile(prompt_rows, 0.5), "p99": _quantile(prompt_rows, 0.99)}
    total = sum(finished.values())
    out["finished"] = finished
    out["finish_reason"] = {k: v / total for k, v in finished.items()} if total else {}
    out["rejected"] = rejected
    queries = out.get("prefix_cache_queries") or 0.0
    out["prefix_cache_hit_rate"] = (out.get("prefix_cache_hits") or 0.0) / queries if queries else None
    drafted = out.get("spec_draft_tokens") or 0.0
    out["spec_acceptance_rate"] = (out.get("spec_accepted_tokens") or 0.0) / drafted if drafted else None
    return out


PART = register(Part(
    name=NAME,
    module="services.llm",
    doc="an LLM replica (OpenAI-compatible streaming server); the LLM track runs llm-1 .. llm-N",
    replicated=True,
    # Offsets 67..82 are free (docs/architecture.md, "Adding a part"): hops base+67.., replicas base+75..
    max_replicas=8,
    port_offset=74,
    proxy_offset=66,
    args=_args,
    preflight=_preflight,
    tracks=frozenset({TRACK}),
    # With the model replicas: slow to become ready (torch import, weights, warm-up).
    tier=0,
    memory_limit=768 * MiB,
    status_rank=25,
    metrics_prefix="llm",
    settable=frozenset({
        "num_kv_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
        "enable_prefix_caching", "speculative_enabled", "num_speculative_tokens", "speculative_draft",
        "cancel_on_disconnect",
        "max_queue", "default_temperature", "default_top_p", "default_max_tokens", "default_stop",
        "torch_threads", "stream_interval", "readiness",
    }),
    dials=(Dial(caller=GATEWAY, flag="--llm", config_key="llm_replicas"),),
    map=MapPlace("downstream", rank=30),
    compose_retries=60,
    compose_extra={"depends_on": {"models": {"condition": "service_completed_successfully"}},
                   "profiles": [TRACK]},
    client=LLMClient,
    config_model="services.llm.config:LLMConfig",
))
