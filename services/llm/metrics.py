"""Prometheus metrics of an LLM replica, under vLLM's names (`vllm:` prefix), so vLLM dashboards carry over.

Counters are exposed with prometheus_client's `_total` suffix (`vllm:num_preemptions_total`), as vLLM's are.
Registered on the default registry, which also carries `process_resident_memory_bytes` (the replica's RSS: a KV
cache is allocated and written when built, so it shows there at once). Besides vLLM's names:
`llm_kv_blocks_used` / `llm_kv_blocks_total` (the leak check), `llm_kv_cache_bytes`, `llm_rejected_total{reason}`,
`llm_engine_steps_total`, `llm_ready`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# token counts: fine near the context of the lab's GPTs (128, 256) so a prompt distribution that creeps up to it shows
TOKEN_BUCKETS = (8, 16, 32, 64, 96, 128, 160, 192, 208, 224, 240, 248, 256, 512, 1024, 2048, 4096)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)

RUNNING = Gauge("vllm:num_requests_running", "Requests in the running batch")
WAITING = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled (preempted ones included)")
KV_USAGE = Gauge("vllm:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1)")
PREEMPTIONS = Counter("vllm:num_preemptions", "Preemptions by recompute")
PREFIX_QUERIES = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache")
PREFIX_HITS = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache")
TTFT = Histogram("vllm:time_to_first_token_seconds", "Arrival to first token", buckets=TTFT_BUCKETS)
ITL = Histogram("vllm:inter_token_latency_seconds", "Time between output token batches", buckets=ITL_BUCKETS)
E2E = Histogram("vllm:e2e_request_latency_seconds", "Arrival to finish", buckets=E2E_BUCKETS)
QUEUE_TIME = Histogram("vllm:request_queue_time_seconds", "Arrival to first scheduled", buckets=E2E_BUCKETS)
PROMPT_TOKENS = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests")
GENERATION_TOKENS = Counter("vllm:generation_tokens", "Generated tokens")
# observed when a request's prompt is tokenised, those refused for overflowing the context included
REQUEST_PROMPT_TOKENS = Histogram("vllm:request_prompt_tokens", "Prompt tokens per request (refused ones too)",
                                  buckets=TOKEN_BUCKETS)
REQUEST_GENERATION_TOKENS = Histogram("vllm:request_generation_tokens", "Generated tokens per finished request",
                                      buckets=TOKEN_BUCKETS)
SUCCESS = Counter("vllm:request_success", "Finished requests by finish reason", ["finished_reason"])
SPEC_DRAFTS = Counter("vllm:spec_decode_num_drafts", "Speculative rounds (one per sequence per step)")
SPEC_DRAFT_TOKENS = Counter("vllm:spec_decode_num_draft_tokens", "Tokens proposed by the draft model")
SPEC_ACCEPTED = Counter("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted by the target")
KV_BLOCKS_USED = Gauge("llm_kv_blocks_used", "KV-cache blocks owned by at least one request")
KV_BLOCKS_TOTAL = Gauge("llm_kv_blocks_total", "KV-cache blocks (num_kv_blocks)")
KV_CACHE_BYTES = Gauge("llm_kv_cache_bytes", "Bytes of the KV caches (target and draft), allocated when built")
REJECTED = Counter("llm_rejected_total", "Requests refused before queueing", ["reason"])
STEPS = Counter("llm_engine_steps_total", "Engine iterations that ran the model")
READY = Gauge("llm_ready", "1 when the model is loaded and warmed")

for _reason in ("stop", "length", "abort"):
    SUCCESS.labels(finished_reason=_reason)
