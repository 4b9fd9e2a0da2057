"""The LLM track of the lab: `faultline up -d --track llm` on free ports (gateway, registry, netproxy, llm-1..2), then
real clients through the gateway's public proxy: the official `openai` package streams a chat completion and gets
text, usage and [DONE]; a plain completion; /v1/models; the per-client rate limit (429 + Retry-After); the stream
timeout (an error event, not a hang); least-outstanding routing spreading concurrent streams over both replicas
(read from each replica's vLLM-named metrics); and the fraud track's gateway answering the LLM routes with an
OpenAI-shaped 503.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from kit import StackHandle, faultline, llm_track, service_argv, start_service, wait_until
from prometheus_client.parser import text_string_to_metric_families

from lab import parts

LLM = parts.replica_part("llm")
REPLICAS = [LLM.instance(n) for n in (1, 2)]
CHAT = [{"role": "user", "content": "In the beginning"}]


@pytest.fixture(scope="module")
def track_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Path:
    """The trained registry with its LLM versions (from `make setup`); without them, a tiny LLM trained here."""
    if (trained_registry / "llm" / "versions" / "v1" / "meta.json").is_file():
        return trained_registry
    llm_registry: Path = request.getfixturevalue("llm_registry")
    combined = tmp_path_factory.mktemp("track-registry") / "registry"
    shutil.copytree(trained_registry, combined)
    shutil.copytree(llm_registry / "llm", combined / "llm")
    return combined


@pytest.fixture(scope="module")
def track(track_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    with llm_track(track_registry, tmp_path_factory.mktemp("llm-track"), llm_replicas=2) as handle:
        yield handle


def _client(track: StackHandle, key: str = "test-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=track.public_url + "/v1", api_key=key, max_retries=0, timeout=60)


def _gateway(track: StackHandle) -> str:
    return track.topology.service_url("gateway")


def _patch(url: str, **changes: object) -> None:
    r = httpx.patch(url + "/admin/config", json=changes, timeout=10)
    assert r.status_code == 200, r.text


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_up_runs_the_llm_track_and_status_lists_it(track: StackHandle) -> None:
    st = track.status()
    names = [s["name"] for s in st["services"]]
    assert st["tracks"] == ["llm"] and st["ready"]
    assert set(REPLICAS) <= set(names) and {"gateway", "registry", "netproxy"} <= set(names)
    fraud = parts.replica_part()
    assert not any(fraud.matches(n) for n in names), "the fraud track's replicas do not run on the LLM track"
    assert {p["name"] for p in st["proxies"]} == {"gateway", *REPLICAS}, "every hop goes through the netproxy"
    out = faultline("status", "--home", str(track.home), check=True).stdout
    assert all(n in out for n in REPLICAS)


def test_scale_sets_llm_replicas_within_bounds_and_nothing_starts_traffic(track: StackHandle) -> None:
    # Traffic on the LLM track (the load generator's streaming users, its refusals) is tested in
    # tests/loadgen/test_loadgen_llm.py; here nothing may start it, or the routing counts below would be off.
    scaled = faultline("scale", "9", "--home", str(track.home))  # scale sets llm-N here: at most 8
    assert scaled.returncode != 0 and "between 1 and 8" in scaled.stderr, scaled.stderr
    assert not track.status()["services"][-1]["name"].startswith("loadgen")


def test_openai_client_streams_a_chat_completion_through_the_gateway(track: StackHandle) -> None:
    # greedy: at the version's temperature the model may sample its end-of-text token at once (an empty answer)
    stream = _client(track).chat.completions.create(model="v1", messages=CHAT, max_tokens=24, temperature=0,
                                                    stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "the stream carried text"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    # The raw stream ends with [DONE] and comes with the headers that keep proxies from buffering it.
    with httpx.stream("POST", track.public_url + "/v1/chat/completions", timeout=60,
                      json={"messages": CHAT, "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no" and r.headers["x-replica"] in REPLICAS
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_plain_completion_and_models(track: StackHandle) -> None:
    client = _client(track)
    done = client.completions.create(model="v1", prompt="And God said", max_tokens=10, temperature=0)
    assert done.choices[0].text and done.usage.completion_tokens == 10
    assert "v1" in [m.id for m in client.models.list().data]
    bad = httpx.post(track.public_url + "/v1/completions", content=b"not json", timeout=30)
    assert bad.status_code == 400 and "error" in bad.json(), "the replica's OpenAI-shaped 4xx passes through"


def test_per_client_rate_limit_answers_429_with_retry_after(track: StackHandle) -> None:
    gateway = _gateway(track)
    _patch(gateway, llm_rate_limit_rps=0.2, llm_rate_limit_burst=2)
    try:
        url = track.public_url + "/v1/models"
        answers = [httpx.get(url, headers={"Authorization": "Bearer limited"}, timeout=30) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        refused = answers[-1]
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "0.2 requests/s" in error["message"]
        other = httpx.get(url, headers={"Authorization": "Bearer someone-else"}, timeout=30)
        assert other.status_code == 200, "the limit is per client"
        with pytest.raises(openai.RateLimitError):
            _client(track, "limited").models.list()
        assert _metric(gateway, "gateway_llm_rate_limited_total") >= 2
    finally:
        _patch(gateway, llm_rate_limit_rps=0.0)


def test_a_stalled_stream_ends_with_an_error_event(track: StackHandle) -> None:
    gateway = _gateway(track)
    replicas = [track.topology.service_url(n) for n in REPLICAS]
    _patch(gateway, llm_stream_timeout_ms=400)
    for url in replicas:
        _patch(url, step_delay_ms=1500)
    try:
        with httpx.stream("POST", track.public_url + "/v1/chat/completions", timeout=30,
                          json={"messages": CHAT, "max_tokens": 50, "stream": True}) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        last = json.loads(events[-1][6:])
        assert last["error"]["code"] == "stream_timeout" and "llm_stream_timeout_ms 400" in last["error"]["message"]
        assert "data: [DONE]" not in events
    finally:
        _patch(gateway, llm_stream_timeout_ms=30000)
        for url in replicas:
            _patch(url, step_delay_ms=0)


def test_a_replica_behind_a_disabled_hop_is_skipped(track: StackHandle) -> None:
    netproxy = track.topology.netproxy_url
    down = REPLICAS[1]
    r = httpx.post(f"{netproxy}/proxies/{down}", json={"enabled": False}, timeout=10)
    assert r.status_code == 200, r.text
    try:
        served = []
        for _ in range(6):
            answer = httpx.post(track.public_url + "/v1/completions", timeout=60,
                                json={"prompt": "And", "max_tokens": 2})
            assert answer.status_code == 200, answer.text
            served.append(answer.headers["x-replica"])
        assert set(served) == {REPLICAS[0]}, served
    finally:
        httpx.post(f"{netproxy}/proxies/{down}", json={"enabled": True}, timeout=10)

    # Once its hop is back, the replica serves again (the gateway skips it for 1 s after a refused connection;
    # the next test's routing counts need both replicas in play).
    def back() -> bool:
        answer = httpx.post(track.public_url + "/v1/completions", timeout=60, json={"prompt": "And", "max_tokens": 2})
        return answer.status_code == 200 and answer.headers["x-replica"] == down

    wait_until(back, timeout=20, what=f"{down} serving again once its hop is enabled")


def test_least_outstanding_routing_spreads_concurrent_streams(track: StackHandle) -> None:
    replicas = {n: track.topology.service_url(n) for n in REPLICAS}
    for url in replicas.values():
        # every stream lasts ~4 s: all eight are outstanding together, even on a busy machine
        _patch(url, step_delay_ms=100)
    errors: list[BaseException] = []
    served_by: list[str] = []
    # no retries: a retried stream would be a ninth request; each stream's replica read off the gateway's
    # X-Replica header (the replicas' success counters also count an earlier test's stream ending late: CI once
    # read 5/5)
    client = _client(track).with_options(max_retries=0)

    def one() -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(model="v1", messages=CHAT, max_tokens=40,
                                                                   stream=True)
            served_by.append(raw.headers["x-replica"])
            for _ in raw.parse():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        def both_running() -> dict[str, float] | None:
            found = {n: _metric(u, "vllm:num_requests_running") for n, u in replicas.items()}
            return found if all(found.values()) else None

        wait_until(both_running, timeout=30, what="both replicas running streams at once")
        for t in threads:
            t.join(120)
    finally:
        for url in replicas.values():
            _patch(url, step_delay_ms=0)
    assert not errors, errors
    served = {n: served_by.count(n) for n in replicas}
    assert len(served_by) == 8 and sorted(served.values()) == [4, 4], \
        f"least outstanding splits eight concurrent streams 4/4: {served_by}"


def test_the_fraud_tracks_gateway_answers_the_llm_routes_with_a_503(tmp_path: Path) -> None:
    # The fraud track's gateway (its argv as the lab writes it: no LLM replicas), with upstreams nobody serves.
    assert "--llm" not in service_argv("gateway", 1, feature_store="http://127.0.0.1:9", models={"m": "http://127.0.0.1:9"})
    gw = start_service("gateway", tmp_path, feature_store="http://127.0.0.1:9",
                       models={parts.replica_part().instance(1): "http://127.0.0.1:9"})
    try:
        for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models")):
            r = httpx.request(method, gw.url + path, json={"messages": CHAT} if method == "POST" else None, timeout=10)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "llm_track_not_running" and "--track llm" in error["message"]
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="v1", messages=CHAT)
        assert caught.value.status_code == 503
    finally:
        gw.stop()
