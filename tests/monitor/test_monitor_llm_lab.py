"""The monitor on the LLM track inside the real lab: `faultline up -d --track llm` (one replica), real streams through
the gateway's public proxy, then `faultline metrics --json` carries every LLM figure, and a latency toxic on the
`llm-1` hop raises the TTFT the gateway sees while the replica's own TTFT stays flat."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit import StackHandle, faultline, llm_track, registry_with_llm, wait_until

from lab import parts

pytestmark = [pytest.mark.timeout(420)]

LLM = parts.replica_part("llm").instance(1)
TOXIC = "monitor-llm-latency"
SERVER_KEYS = ("ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms", "output_tokens_per_s", "kv_cache_usage",
               "num_requests_waiting", "preemptions_per_s", "prefix_cache_hit_rate", "finish_reason")
GATEWAY_KEYS = ("llm_rps", "llm_ttft_p50_ms", "llm_ttft_p99_ms", "rate_limited_rate", "client_ttft_p99_ms",
                "client_itl_p99_ms", "client_output_tokens_per_s", "goodput_ratio")


@pytest.fixture(scope="module")
def llm_stack(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    registry = registry_with_llm(trained_registry, tmp_path_factory.mktemp("llm-registry"))
    with llm_track(registry, tmp_path_factory.mktemp("llm-mon-lab"), llm_replicas=1) as handle:
        yield handle


class Streams:
    """Streamed completions through the gateway's public proxy, one after another, until stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.sent, self.failed = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        body = {"prompt": "And God said", "max_tokens": 24, "stream": True}
        with httpx.Client(timeout=60.0, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("POST", f"{self.url}/v1/completions", json=body) as resp:
                        for _ in resp.iter_lines():
                            pass
                        self.sent += 1
                except httpx.HTTPError:
                    self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def metrics(stack: StackHandle) -> dict[str, Any]:
    proc = faultline("metrics", "--json", "--lab-url", stack.lab_url, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_metrics_json_has_the_llm_figures_and_a_hop_toxic_raises_gateway_ttft(llm_stack: StackHandle) -> None:
    streams = Streams(llm_stack.public_url)
    netproxy = llm_stack.status()["netproxy_url"]
    try:
        def ready() -> dict[str, Any] | None:
            m = metrics(llm_stack)
            s, g = m["services"].get(LLM, {}), m["services"].get("gateway", {})
            full = s.get("ttft_p99_ms") is not None and g.get("llm_ttft_p50_ms") is not None
            return m if full else None

        m = wait_until(ready, 90, interval=1.0, what="LLM figures in faultline metrics --json")
        s, g = m["services"][LLM], m["services"]["gateway"]
        for key in SERVER_KEYS:
            assert key in s, key
        for key in GATEWAY_KEYS:  # client figures are null without the load generator's LLM users
            assert key in g, key
        assert s["output_tokens_per_s"] > 0 and 0 <= s["kv_cache_usage"] <= 1
        assert s["finish_reason"]["length"] is not None
        assert g["rate_limited_rate"] == 0 and g["llm_rps"] > 0
        assert m["llm"]["replicas"] == [LLM]
        base_gateway, base_server = g["llm_ttft_p50_ms"], s["ttft_p50_ms"]

        r = httpx.post(f"{netproxy}/proxies/{LLM}/toxics", timeout=10, trust_env=False,
                       json={"name": TOXIC, "type": "latency", "stream": "downstream",
                             "attributes": {"latency": 600, "jitter": 0}})
        assert r.status_code == 200, r.text

        def slow() -> dict[str, Any] | None:
            m = metrics(llm_stack)
            g = m["services"]["gateway"]
            return m if (g.get("llm_ttft_p50_ms") or 0) > base_gateway + 400 else None

        m = wait_until(slow, 60, interval=1.0, what="the gateway's TTFT rising behind the toxic")
        # the replica produced its first tokens as fast as before: the delay is on the hop, which only the callers see
        assert m["services"][LLM]["ttft_p50_ms"] < base_server + 300, (base_server, m["services"][LLM])
    finally:
        httpx.delete(f"{netproxy}/proxies/{LLM}/toxics/{TOXIC}", timeout=10, trust_env=False)
        streams.stop()
    assert streams.sent > 0
