"""The gateway's LLM knobs of the incident catalog (issue 17), on a real gateway in front of the tiny replica:
stream buffering (`llm_stream_buffer_bytes`: client TTFT rises to the stream's end while the replica's stays
put), `llm_clamp_max_tokens` and `llm_trim_history` (an overflowing chat answered instead of a 400), and
`llm_system_timestamp` (a per-request timestamp at the start of the system prompt: prefix-cache hits return)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kit import ServiceProc

GATEWAY_DEFAULTS = {"llm_stream_buffer_bytes": 0, "llm_clamp_max_tokens": False, "llm_trim_history": False,
                    "llm_system_timestamp": "keep"}


@pytest.fixture
def gw(gateway: ServiceProc, server) -> Iterator[ServiceProc]:
    """The gateway, its knobs back to the defaults after the test (`server` resets the replica)."""
    yield gateway
    r = gateway.client.patch("/admin/config", json=GATEWAY_DEFAULTS)
    assert r.status_code == 200, r.text


def timed_stream(gw: ServiceProc) -> tuple[float, float, int]:
    """(first content, end, reads) of one streamed completion through the gateway, in seconds / counts."""
    body = {"prompt": "And God said", "max_tokens": 40, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first, reads = None, 0
    with gw.client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            reads += 1
            if first is None and b'"text"' in piece:
                first = time.perf_counter() - started
    end = time.perf_counter() - started
    assert first is not None
    return first, end, reads


def test_stream_buffering_delays_the_client_not_the_replica(gw, server) -> None:
    server.patch(step_delay_ms=15)  # 40 steps: the stream lasts >= 0.6 s
    first0, end0, reads0 = timed_stream(gw)
    ttft_sum = server.metric("vllm:time_to_first_token_seconds_sum")
    gw.client.patch("/admin/config", json={"llm_stream_buffer_bytes": 1 << 20})
    first1, end1, reads1 = timed_stream(gw)
    replica_ttft = server.metric("vllm:time_to_first_token_seconds_sum") - ttft_sum
    print(f"unbuffered: first {first0:.3f} s of {end0:.3f} s in {reads0} reads; "
          f"buffered: first {first1:.3f} s of {end1:.3f} s in {reads1} reads; replica TTFT {replica_ttft:.3f} s")
    assert first0 < 0.5 * end0  # text as it comes
    assert first1 > 0.9 * end1  # all at the end: client TTFT ~ e2e
    assert reads1 < reads0
    assert replica_ttft < 0.5 * first1  # the replica's own TTFT did not move with it


def test_clamp_max_tokens_answers_what_overflowed(gw, server) -> None:
    body = {"prompt": "And God said, Let there be light", "max_tokens": 120, "temperature": 0}
    r = gw.client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    gw.client.patch("/admin/config", json={"llm_clamp_max_tokens": True})
    r = gw.client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 128
    r = gw.client.post("/v1/completions", json={**body, "max_tokens": 8})  # one that fits is left alone
    assert r.json()["usage"]["completion_tokens"] <= 8


def test_trim_history_drops_the_oldest_turns(gw, server) -> None:
    system = {"role": "system", "content": "Answer in one verse."}
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: and it was so"}
               for i in range(12)]
    messages = [system, *history, {"role": "user", "content": "And God said"}]
    body = {"messages": messages, "max_tokens": 16, "temperature": 0}
    r = gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    before = server.metric("vllm:request_prompt_tokens_bucket", {"le": "128.0"})
    gw.client.patch("/admin/config", json={"llm_trim_history": True})
    r = gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    prompt = r.json()["usage"]["prompt_tokens"]
    kept = server.client.post("/tokenize", json={"messages": [system, messages[-1]]}).json()["count"]
    assert kept < prompt <= 128 - 16  # some turns kept, the system message and the question among them
    for turns in range(1, len(history) + 1):  # the fewest oldest turns dropped: the newest that fit are all kept
        count = server.client.post("/tokenize", json={"messages": [system, *history[-turns:], messages[-1]]}).json()
        if count["count"] + 16 > 128:
            break
        fitting = count["count"]
    assert prompt == fitting
    assert server.metric("vllm:request_prompt_tokens_bucket", {"le": "128.0"}) == before + 1


def test_system_timestamp_knob_brings_prefix_hits_back(gw, server) -> None:
    system = "You are a careful scribe. Answer in the old style."  # with BOS and "system: ", 3 full blocks

    def hits_of(n: int) -> float:
        h0 = server.metric("vllm:prefix_cache_hits_total")
        for i in range(n):
            messages = [{"role": "system", "content": f"[{time.time_ns()}] {system}"},
                        {"role": "user", "content": f"Question {i}"}]
            r = gw.client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
            assert r.status_code == 200, r.text
        return server.metric("vllm:prefix_cache_hits_total") - h0

    keep = hits_of(4)
    gw.client.patch("/admin/config", json={"llm_system_timestamp": "move_to_end"})
    moved = hits_of(4)
    gw.client.patch("/admin/config", json={"llm_system_timestamp": "strip"})
    stripped = hits_of(4)
    print(f"prefix-cache hit tokens over 4 requests: keep {keep}, move_to_end {moved}, strip {stripped}")
    assert keep <= 4 * 16  # at most the first block: BOS, "system: [" and the timestamp's leading digits
    assert moved >= 3 * 48 and stripped >= 3 * 48  # the shared system prompt's full blocks, after the first
    r = gw.client.patch("/admin/config", json={"llm_system_timestamp": "drop"})
    assert r.status_code == 422
