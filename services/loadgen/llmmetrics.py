"""The LLM clients' own figures, as the load generator's /metrics exports them (names shared with the monitor).

  faultline_llm_client_ttft_seconds          histogram, request sent -> first streamed token
  faultline_llm_client_itl_seconds           histogram, gap between streamed token chunks
  faultline_llm_client_e2e_seconds           histogram, request sent -> [DONE] (completed streams only)
  faultline_llm_client_output_tokens_total   tokens received (usage when the stream ends, else chunks counted)
  faultline_llm_client_requests_total{outcome="ok|error|rate_limited|abandoned"}   one per HTTP attempt
  faultline_llm_client_retries_total         attempts repeated under the retry policy
Measured on the client, so they include the gateway, every hop's toxics and the client's own queueing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

OUTCOMES = ("ok", "error", "rate_limited", "abandoned")
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class LLMClientMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram("faultline_llm_client_ttft_seconds", "Client-side time to first token.",
                              buckets=TTFT_BUCKETS, registry=registry)
        self.itl = Histogram("faultline_llm_client_itl_seconds", "Client-side inter-token latency (per chunk).",
                             buckets=ITL_BUCKETS, registry=registry)
        self.e2e = Histogram("faultline_llm_client_e2e_seconds", "Client-side latency of completed streams.",
                             buckets=E2E_BUCKETS, registry=registry)
        self.output_tokens = Counter("faultline_llm_client_output_tokens", "Output tokens received by the clients.",
                                     registry=registry)
        self.requests = Counter("faultline_llm_client_requests", "LLM requests (HTTP attempts) by outcome.",
                                ["outcome"], registry=registry)
        self.retries = Counter("faultline_llm_client_retries", "Attempts repeated under the retry policy.",
                               registry=registry)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
