"""Hostile input on the LLM track's OpenAI routes, on the replica and through a real gateway in front of it
(issues 9 and 15: any bad input is an OpenAI-shaped 4xx, never a 500, a hang or a dead replica).

Unknown paths and wrong methods under the OpenAI routes answer in OpenAI's error shape too (clients parse
`error.message`, not FastAPI's `detail`); `GET /v1/models/{id}` (OpenAI's "retrieve model") answers the served
version or a 404 `model_not_found`; the gateway passes every refusal through unchanged; bodies that are not JSON
(NaN, non-UTF-8, 10 MB) are refused; a client hanging up mid-stream leaves nothing running anywhere.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from kit import ServiceProc, wait_until
from test_llm_api import UNCHECKED_BEFORE, assert_openai_error


@pytest.fixture(params=["replica", "gateway"])
def front(request: pytest.FixtureRequest, server) -> ServiceProc:
    """The replica itself, then the gateway in front of it: both must answer alike."""
    return server if request.param == "replica" else request.getfixturevalue("gateway")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/completions", 405), ("PUT", "/v1/chat/completions", 405), ("DELETE", "/v1/models", 405),
    ("POST", "/v1/models", 405), ("GET", "/v1/files", 404), ("POST", "/v1/embeddings", 404),
    ("POST", "/v1/completions/", 404), ("POST", "/v1/chat/completions/", 404)])
def test_wrong_methods_and_unknown_openai_paths_are_openai_shaped(front: ServiceProc, method: str, path: str,
                                                                  status: int) -> None:
    r = front.client.request(method, path, json={"prompt": "x"} if method in ("POST", "PUT") else None)
    err = assert_openai_error(r, status)
    assert path in err["message"], err
    if status == 405:
        assert r.headers.get("allow"), r.headers


def test_retrieve_model_answers_the_served_version_or_404(front: ServiceProc, server) -> None:
    served = server.client.get("/v1/models").json()["data"][0]
    r = front.client.get(f"/v1/models/{served['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == served["id"] and r.json()["object"] == "model"
    for name in ("gpt-4", "..%2F..%2Fetc%2Fpasswd", "x" * 300):
        err = assert_openai_error(front.client.get(f"/v1/models/{name}"), 404, "model")
        assert err["code"] == "model_not_found" and "root:" not in err["message"], err


@pytest.mark.parametrize(("path", "body", "param", "code"), UNCHECKED_BEFORE[::3])
def test_the_gateway_passes_refusals_through(gateway: ServiceProc, server, path: str, body: dict, param: str,
                                             code: str | None) -> None:
    direct = server.client.post(path, json=body)
    through = gateway.client.post(path, json=body)
    assert_openai_error(through, 400, param)
    assert through.json() == direct.json()


@pytest.mark.parametrize("raw", [b'{"prompt": "x", "temperature": NaN}', b'{"prompt": "x", "max_tokens": Infinity}',
                                 b'{"prompt": "\xff\xfe"}', b"", b"null", b'{"prompt": "\\ud800"}'],
                         ids=["nan", "infinity", "not-utf8", "empty", "null", "lone-surrogate"])
def test_bodies_that_are_not_json_objects_are_a_400(front: ServiceProc, raw: bytes) -> None:
    r = front.client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


def test_a_10mb_body_is_a_413(front: ServiceProc) -> None:
    body = json.dumps({"prompt": "a" * (10 * 1024 * 1024)})
    r = front.client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert assert_openai_error(r, 413)["code"] == "body_too_large"
    # under the limit, a long prompt is the context's refusal
    r = front.client.post("/v1/completions", json={"prompt": "a" * 500_000})
    assert assert_openai_error(r, 400, "prompt")["code"] == "context_length_exceeded"


def _hang_up_mid_stream(port: int, path: str, body: dict) -> bytes:
    """Send a streamed request, read its first bytes, close the socket without reading the rest."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return s.recv(512)


def test_clients_hanging_up_mid_stream_leave_nothing_running(gateway: ServiceProc, server) -> None:
    server.patch(step_delay_ms=60)  # 90 tokens take over 5 s: the hang-ups come long before the end
    chat = {"messages": [{"role": "user", "content": "Tell a story"}], "max_tokens": 90, "stream": True}
    prompt = {"prompt": "Once", "max_tokens": 90, "stream": True}
    for port in (gateway.port, server.port):
        for path, body in (("/v1/chat/completions", chat), ("/v1/completions", prompt)):
            for _ in range(3):
                assert _hang_up_mid_stream(port, path, body).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    wait_until(lambda: server.engine()["running"] == 0 and server.engine()["waiting"] == 0, 15,
               what="the hung-up requests aborted")
    assert time.monotonic() - started < 4.0, "ran to max_tokens instead of aborting"
    wait_until(lambda: "gateway_llm_inflight{replica=\"llm-1\"} 0.0" in gateway.client.get("/metrics").text, 10,
               what="the gateway's in-flight count back to 0")
    # both still answer
    assert server.complete("In the beginning", max_tokens=4)["choices"][0]["finish_reason"]
    r = gateway.client.post("/v1/completions", json={"prompt": "In", "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_the_gateway_rewrites_keep_refusals_openai_shaped(gateway: ServiceProc, server) -> None:
    """With every rewrite knob on, the gateway parses the body itself first: bodies it cannot read (nested too
    deeply, not JSON, the wrong shape) still reach the replica as they are and get its OpenAI-shaped 400."""
    knobs = {"llm_trim_history": True, "llm_clamp_max_tokens": True, "llm_system_timestamp": "strip"}
    assert gateway.client.patch("/admin/config", json=knobs).status_code == 200
    try:
        deep = b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        for raw in (deep, b'{"messages": "x"}', b'{"messages": [1, {"role": "user"}]}', b"{",
                    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": NaN}'):
            r = gateway.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            assert_openai_error(r, 400)
    finally:
        assert gateway.client.patch("/admin/config", json={"llm_trim_history": False, "llm_clamp_max_tokens": False,
                                                           "llm_system_timestamp": "keep"}).status_code == 200


def test_a_declared_huge_body_is_refused_before_reading_it(front: ServiceProc) -> None:
    """A Content-Length of 200 MB is a 413 at once: neither the gateway nor the replica waits for the bytes."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=15) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 209715200\r\n\r\n" + b'{"prompt": "')
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"body_too_large"' in answer, answer


@pytest.mark.parametrize("sampling", [{"temperature": 1e-300}, {"temperature": 5e-324}, {"temperature": 1e-9},
                                      {"temperature": 1.0, "top_p": 1e-300}, {"temperature": 1.0, "top_p": 1e-46}],
                         ids=["temperature-1e-300", "temperature-denormal", "temperature-1e-9", "top_p-1e-300",
                              "top_p-1e-46"])
def test_vanishing_temperature_or_top_p_is_greedy_not_garbage(server, sampling: dict) -> None:
    """Positive but tiny values are valid input; as in vLLM they mean greedy decoding (the most likely token).
    Divided by as floats of 32 bits they became 0 or infinity, and the sampler drew nonsense tokens."""
    greedy = server.complete("In the beginning", max_tokens=12)["choices"][0]["text"]
    for seed in (1, 2):
        got = server.complete("In the beginning", max_tokens=12, seed=seed, **sampling)["choices"][0]["text"]
        assert got == greedy, (sampling, got, greedy)


def test_a_refusal_does_not_echo_a_huge_model_name(front: ServiceProc) -> None:
    r = front.client.post("/v1/completions", json={"prompt": "x", "model": "m" * 500_000})
    err = assert_openai_error(r, 404, "model")
    assert err["code"] == "model_not_found" and len(r.content) < 2048, len(r.content)


def _rss(proc: ServiceProc) -> float:
    for line in proc.client.get("/metrics").text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("no process_resident_memory_bytes")


def test_rate_limit_buckets_do_not_hold_huge_api_keys(gateway: ServiceProc) -> None:
    """With the rate limit on, each API key has a bucket (up to 10,000 of them); a key is whatever follows `Bearer`,
    and a header may be a megabyte long. Held as such, 200 such keys were 200 MB more in the gateway."""
    assert gateway.client.patch("/admin/config", json={"llm_rate_limit_rps": 0.001,
                                                       "llm_rate_limit_burst": 1}).status_code == 200
    try:
        before = _rss(gateway)
        body = b'{"prompt": "x", "max_tokens": 1}'
        for i in range(200):
            key = f"{i:06d}".encode() + b"k" * 1_000_000
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as s:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key +
                          b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                          b"\r\nConnection: close\r\n\r\n" + body)
                assert s.recv(12) == b"HTTP/1.1 200", i  # a fresh key: its bucket's one token
        grown = _rss(gateway) - before
        assert grown < 100e6, f"the gateway grew by {grown / 1e6:.0f} MB holding 200 keys"
        # the same key again is the same bucket: refused
        r = gateway.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1},
                                headers={"Authorization": "Bearer " + "000000" + "k" * 1_000_000})
        assert assert_openai_error(r, 429)["code"] == "rate_limit_exceeded"
    finally:
        assert gateway.client.patch("/admin/config", json={"llm_rate_limit_rps": 0}).status_code == 200
