"""The load generator on the LLM track: one `faultline up -d --track llm` stack (one replica) for the module, driven
by the real CLI and lab API; the real locust process streams chats through the gateway's public proxy.

- `faultline traffic --track llm --rps N --profile chat`: the clients' TTFT, ITL, e2e and token figures appear on
  the load generator's /metrics and agree with the gateway's own count; a fraud profile, `--track fraud` on an
  LLM-only stack and `--track all` are refused with messages.
- `abandon`: clients hang up after a few tokens and the replica really aborts (`vllm:request_success_total
  {finished_reason="abort"}` rises).
- The retry policy against the gateway's rate limit: from rest, `immediate` retries hit the limit far more often
  per second than `honour-retry-after`, and the gateway counts the same 429s the clients do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kit import StackHandle, llm_track, registry_with_llm, wait_until
from prometheus_client.parser import text_string_to_metric_families

from lab import parts

pytestmark = [pytest.mark.stack, pytest.mark.slow]

LLM_1 = parts.replica_part("llm").instance(1)


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def llm_stack(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    registry = registry_with_llm(trained_registry, tmp_path_factory.mktemp("llm-registry"))
    with llm_track(registry, tmp_path_factory.mktemp("llm-load"), llm_replicas=1) as handle:
        yield handle


def traffic(stack: StackHandle, *args: str) -> dict:
    proc = stack.cli("traffic", *args, "--json", timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def loadgen_url(stack: StackHandle) -> str:
    return stack.topology.service_url("loadgen")


def test_traffic_cli_streams_and_exports_client_figures(llm_stack: StackHandle) -> None:
    for args, says in ((("--rps", "2", "--profile", "baseline"), "chat"),
                       (("--rps", "2", "--track", "fraud"), "--track fraud"),
                       (("--rps", "2", "--track", "all"), "one track at a time")):
        proc = llm_stack.cli("traffic", *args, timeout=60)
        assert proc.returncode != 0 and says in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)

    state = traffic(llm_stack, "--track", "llm", "--rps", "4", "--profile", "chat")
    assert state["track"] == "llm" and state["profile"] == "chat" and state["target_rps"] == 4
    lg = loadgen_url(llm_stack)
    gateway = llm_stack.topology.service_url("gateway")
    wait_until(lambda: metric(lg, "faultline_llm_client_requests_total", outcome="ok") >= 20, timeout=90,
               what="20 streamed chats answered")
    done = metric(lg, "faultline_llm_client_e2e_seconds_count")
    assert done >= 20
    # A first token for most answers: an answer may be empty, the model sampling its end-of-text token at once
    # (about 1 in 7 chats at the version's temperature 0.7), so 8 answers with 3 empty happened; 20 with half empty
    # would be a bug.
    assert metric(lg, "faultline_llm_client_ttft_seconds_count") >= 0.5 * done
    assert metric(lg, "faultline_llm_client_itl_seconds_count") > done  # several chunks per answer
    assert metric(lg, "faultline_llm_client_output_tokens_total") >= 2 * done
    assert 0 < metric(lg, "faultline_llm_client_ttft_seconds_sum") < metric(lg, "faultline_llm_client_e2e_seconds_sum")
    assert metric(lg, "faultline_llm_client_requests_total", outcome="error") == 0
    # The gateway saw (at least) every answered chat the clients counted, as 200s on the chat route (it counts a
    # stream once its relay has finished, a moment after the client read the last chunk: wait for that moment).
    wait_until(lambda: metric(gateway, "gateway_llm_requests_total", route="chat_completions", code="200") >= done,
               timeout=10, what=f"the gateway counting the {done:g} chats the clients counted")
    # The canary set: held-out prompts with their reference continuations.
    canary = httpx.get(lg + "/control/canary", timeout=10).json()
    assert canary["split"] == "held-out" and len(canary["canaries"]) >= 8
    assert all(c["prompt"] and c["reference"].strip() for c in canary["canaries"])


def test_abandon_really_disconnects(llm_stack: StackHandle) -> None:
    replica = llm_stack.topology.service_url(LLM_1)
    lg = loadgen_url(llm_stack)
    aborts = metric(replica, "vllm:request_success_total", finished_reason="abort")
    abandoned = metric(lg, "faultline_llm_client_requests_total", outcome="abandoned")
    state = traffic(llm_stack, "--profile", "abandon", "--rps", "3")
    assert state["track"] == "llm" and state["profile"] == "abandon"
    wait_until(lambda: metric(replica, "vllm:request_success_total", finished_reason="abort") >= aborts + 3,
               timeout=60, what="the replica aborting 3 abandoned streams")
    assert metric(lg, "faultline_llm_client_requests_total", outcome="abandoned") >= abandoned + 3


def _rate_limited_per_s(llm_stack: StackHandle, policy: str, window_s: float = 4.0) -> tuple[float, float, float]:
    """From rest (no request in flight, no retry waiting), `policy` at 2 requests/s: (client 429s/s, gateway
    429s/s, retries/s) over its first `window_s` seconds. From rest, because in a steady state both policies end up
    making as many attempts per request; what differs is when: at once, or after Retry-After."""
    lg = loadgen_url(llm_stack)
    gateway = llm_stack.topology.service_url("gateway")
    state = traffic(llm_stack, "--rps", "0", "--profile", "chat", "--retry-policy", policy, "--retries", "3")
    assert (state["retry_policy"], state["retries"]) == (policy, 3)
    wait_until(lambda: httpx.get(lg + "/control/state", timeout=10).json()["inflight"] == 0, timeout=60,
               what="no LLM request in flight or waiting to retry")
    c0 = metric(lg, "faultline_llm_client_requests_total", outcome="rate_limited")
    g0 = metric(gateway, "gateway_llm_rate_limited_total")
    r0 = metric(lg, "faultline_llm_client_retries_total")
    started = time.monotonic()
    r = httpx.post(lg + "/control/rate", json={"rps": 2}, timeout=10)  # the load generator's own API: no delay
    assert r.status_code == 200, r.text
    time.sleep(max(0.0, window_s - (time.monotonic() - started)))
    c1 = metric(lg, "faultline_llm_client_requests_total", outcome="rate_limited")
    g1 = metric(gateway, "gateway_llm_rate_limited_total")
    r1 = metric(lg, "faultline_llm_client_retries_total")
    elapsed = time.monotonic() - started
    return (c1 - c0) / elapsed, (g1 - g0) / elapsed, (r1 - r0) / elapsed


def test_retry_policy_immediate_storms_where_honour_retry_after_waits(llm_stack: StackHandle) -> None:
    gateway = llm_stack.topology.service_url("gateway")
    before = httpx.get(gateway + "/admin/config", timeout=10).json()
    # 0.25 requests/s for the load generator's one API key: Retry-After up to 4 s.
    r = httpx.patch(gateway + "/admin/config", json={"llm_rate_limit_rps": 0.25, "llm_rate_limit_burst": 1},
                    timeout=10)
    assert r.status_code == 200, r.text
    try:
        storm, storm_gw, storm_retries = _rate_limited_per_s(llm_stack, "immediate")
        calm, calm_gw, calm_retries = _rate_limited_per_s(llm_stack, "honour-retry-after")
    finally:
        httpx.patch(gateway + "/admin/config", json={k: before[k] for k in ("llm_rate_limit_rps",
                                                                              "llm_rate_limit_burst")}, timeout=10)
        llm_stack.cli("traffic", "--stop", timeout=60)
    # immediate: ~2 requests/s x 4 attempts at once, nearly all refused; honour: the retries wait Retry-After.
    assert storm >= 3.0, (storm, calm)
    assert calm < 0.5 * storm and calm_retries < 0.5 * storm_retries, (storm, calm, storm_retries, calm_retries)
    # The clients' count is the gateway's (this load generator is its only LLM client).
    for client, gw in ((storm, storm_gw), (calm, calm_gw)):
        assert abs(client - gw) <= max(1.0, 0.25 * gw), (client, gw)
