"""The monitor's LLM signals against real LLM replicas (a tiny GPT trained by the real trainer, `v1` on llm-1 and its
int8 variant on llm-2) under real streaming requests: the per-replica figures, a tiny KV cache raising preemptions
and KV usage, the finish reasons, the canary perplexity per replica and per version, and the LLM probe kinds.
Monitor time is a test clock that moves one "second" per tick while the streams run for real."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from kit import REPO, ServiceProc, child_env, start_service, wait_until
from monhelpers import FakeClock
from pydantic import TypeAdapter

from lab.attempt.probes import _windowed_values
from lab.monitor import Monitor, MonitorConfig, SLOSpec
from lab.monitor.llm import probe_value
from lab.monitor.text import format_metrics
from lab.scenario.probes import Probe

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]

TRAIN_ARGS = ["--tiny", "--seconds", "0", "--steps", "150", "--draft-seconds", "0", "--draft-steps", "100",
              "--batch", "8"]
PROMPT = "And God said unto Moses, "
PROBES = TypeAdapter(Probe)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProc]]:
    home = tmp_path_factory.mktemp("llm-mon-home")
    proc = subprocess.run([sys.executable, "-m", "services.llm.train", "--home", str(home), *TRAIN_ARGS],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = tmp_path_factory.mktemp("llm-mon-logs")
    procs = {name: start_service(name, logs, registry=home / "registry", wait=False, extra=["--version", version])
             for name, version in (("llm-1", "v1"), ("llm-2", "v1-int8"))}
    try:
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def stream(url: str, max_tokens: int) -> int:
    """One streamed completion; the number of content chunks read."""
    chunks = 0
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "seed": 1, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120.0, trust_env=False) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
    return chunks


def drive(url: str, n: int, max_tokens: int) -> None:
    stream(url, max_tokens)  # one first: its full prompt blocks are then in the prefix cache
    with ThreadPoolExecutor(n) as pool:
        assert all(c > 0 for c in pool.map(lambda _: stream(url, max_tokens), range(n)))


async def under_load(mon: Monitor, clock: FakeClock, work: Callable[[], None]) -> dict[str, Any]:
    """Tick (one monitor second each, ~4 real ticks a second) while `work` runs in a thread; the last snapshot."""
    await mon.tick()
    task = asyncio.ensure_future(asyncio.to_thread(work))
    while not task.done():
        await asyncio.sleep(0.25)
        clock.advance(1.0)
        await mon.tick()
    await task
    clock.advance(1.0)
    return await mon.tick()


def idle(procs: dict[str, ServiceProc]) -> None:
    """Wait until no request runs or waits (a canary an earlier monitor left behind finishes first)."""
    def done() -> bool:
        return all((e := p.client.get("/v1/engine").json())["running"] == 0 and e["waiting"] == 0
                   for p in procs.values())
    wait_until(done, 60, interval=0.2, what="idle replicas")


def monitor(procs: dict[str, ServiceProc], clock: FakeClock, slos: list[SLOSpec] | None = None) -> Monitor:
    idle(procs)
    # one window covers the whole run
    return Monitor(lambda: {n: p.url for n, p in procs.items()}, clock=clock, slos=slos or [],
                   config=MonitorConfig(window_s=3000, canary_interval_s=3600))


def probe(mon: Monitor, clock: FakeClock, **spec: Any) -> Any:
    return probe_value(mon, PROBES.validate_python({"id": "p", "tolerance": {"min": 0}, **spec}), 3000, clock.now)


async def test_replica_figures_then_a_tiny_kv_cache(replicas: dict[str, ServiceProc], clock: FakeClock) -> None:
    llm1 = replicas["llm-1"]
    mon = monitor({"llm-1": llm1}, clock)
    # 10 ms per engine step (the replica's slow-accelerator knob): the streams last ~1 s, so the 4-a-second scrapes
    # see blocks in use; at full speed the tiny model can finish all 13 between two scrapes (CI read a max of 0)
    llm1.client.patch("/admin/config", json={"step_delay_ms": 10}).raise_for_status()
    try:
        snap = await under_load(mon, clock, lambda: drive(llm1.url, 12, 80))
        e = snap["services"]["llm-1"]
        assert e["up"] is True and e["scrape_error"] is None
        assert e["requests"] == 13  # the monitor's own canary (sent at the first tick) is not counted
        assert 0 < e["ttft_p50_ms"] <= e["ttft_p99_ms"]
        assert 0 < e["itl_p50_ms"] <= e["itl_p99_ms"]
        assert e["output_tokens_per_s"] > 0
        assert e["num_requests_waiting"] == 0 and e["num_requests_running"] == 0
        assert 0 < e["kv_cache_usage_max"] < 0.5 and e["kv_cache_usage"] is not None
        assert e["preemptions_per_s"] == 0
        assert e["prefix_cache_hit_rate"] > 0  # the same prompt: the first one's blocks are shared
        shares = e["finish_reason"]
        assert set(shares) >= {"stop", "length", "abort"} and sum(shares.values()) == pytest.approx(1.0)
        assert shares["abort"] == 0
        assert snap["llm"]["replicas"] == ["llm-1"] and snap["llm"]["ttft_p99_ms"] == e["ttft_p99_ms"]
        assert snap["llm"]["goodput_source"] == "server" and 0 <= snap["llm"]["goodput_ratio"] <= 1
        assert "llm-1.ttft_p99_ms" in mon.series_names() and "llm-1.finish_reason.length" in mon.series_names()
        assert probe(mon, clock, kind="preemption_rate") == 0
        assert probe(mon, clock, kind="ttft_p99_ms", target="llm-1") == e["ttft_p99_ms"]
        assert probe(mon, clock, kind="finish_reason_share", reason="abort") == 0
        healthy_usage = e["kv_cache_usage_max"]
    finally:
        await mon.stop()
        llm1.client.patch("/admin/config", json={"step_delay_ms": 0}).raise_for_status()

    # 16 blocks of 16 tokens hold about two of these requests: the rest wait, and running ones are preempted
    r = llm1.client.patch("/admin/config", json={"num_kv_blocks": 16, "step_delay_ms": 10})  # as above
    assert r.status_code == 200, r.text
    slos = [SLOSpec(name="ttft", kind="ttft_p99", target="llm-1", threshold=1.0, window_s=3000),
            SLOSpec(name="itl", kind="itl_p99", target="all", threshold=1e6, window_s=3000)]
    mon = monitor({"llm-1": llm1}, clock, slos)
    try:
        snap = await under_load(mon, clock, lambda: drive(llm1.url, 12, 80))
        e = snap["services"]["llm-1"]
        assert e["preemptions_per_s"] > 0
        # the LLM SLO kinds, measured as the probes are: a 1 ms TTFT objective breaks, a 1,000 s ITL one holds
        states = {x["name"]: x for x in mon.slo()["slos"]}
        assert states["ttft"]["state"] == "violated" and states["ttft"]["value"] > states["ttft"]["threshold"]
        assert states["itl"]["state"] == "ok"
        assert e["kv_cache_usage_max"] > max(0.4, 2 * healthy_usage)  # sampled by the scrapes: full between them
        assert e["kv_blocks_total"] == 16
        assert len(mon.series("llm-1.kv_cache_usage")) == len(mon.series("llm-1.num_requests_waiting")) > 1
        assert probe(mon, clock, kind="preemption_rate") > 0
        # as an attempt measures a scenario's steady state (lab/attempt/probes.py), on the probe's own window
        pre = PROBES.validate_python({"id": "pre", "kind": "preemption_rate", "window_s": 3000,
                                      "tolerance": {"max": 0}})
        assert _windowed_values(mon, [pre], 1.0, {})["pre"] > 0
        assert probe(mon, clock, kind="kv_cache_usage", target="llm-1") == e["kv_cache_usage_max"]
    finally:
        await mon.stop()
        llm1.client.patch("/admin/config", json={"num_kv_blocks": 512, "step_delay_ms": 0}).raise_for_status()


async def test_canary_perplexity_per_replica_and_version(replicas: dict[str, ServiceProc],
                                                         clock: FakeClock) -> None:
    mon = monitor(replicas, clock)
    try:
        await mon.tick()  # the first tick sends the canaries (then every canary_interval_s)
        got = await mon.settle_canaries()
        clock.advance(1.0)
        snap = await mon.tick()
        v1, int8 = got["llm-1"], got["llm-2"]
        assert v1["error"] is None and int8["error"] is None, (v1, int8)
        assert v1["version"] == "v1" and int8["version"] == "v1-int8"
        assert v1["tokens"] == int8["tokens"] > 100  # every byte of the held-out verse after BOS
        assert 1.0 < v1["perplexity"] < 258  # better than chance over 258 tokens
        assert int8["perplexity"] == pytest.approx(v1["perplexity"], rel=0.05), (v1, int8)
        e = snap["services"]["llm-1"]
        assert e["canary_perplexity"] == v1["perplexity"] and e["version"] == "v1"
        versions = snap["llm"]["versions"]
        assert versions["v1"] == {"replicas": ["llm-1"], "canary_perplexity": v1["perplexity"]}
        assert versions["v1-int8"]["replicas"] == ["llm-2"]
        # the canary's own finish is not traffic: no request finished besides it
        assert e["requests"] == 0 and e["finish_reason"]["length"] is None
        assert [p[1] for p in mon.series("llm-2.canary_perplexity")] == [int8["perplexity"]]
        assert probe(mon, clock, kind="canary_perplexity") == max(v1["perplexity"], int8["perplexity"])
        assert probe(mon, clock, kind="canary_perplexity", target="llm-1") == v1["perplexity"]
        ppl = PROBES.validate_python({"id": "ppl", "kind": "canary_perplexity", "tolerance": {"max": 1000}})
        assert _windowed_values(mon, [ppl], 1.0, {})["ppl"] == max(v1["perplexity"], int8["perplexity"])
        text = format_metrics(mon.metrics())
        assert "LLM version v1-int8: llm-2, canary perplexity" in text and f"{v1['perplexity']:.2f}" in text
        print(f"canary perplexity: v1 {v1['perplexity']}, v1-int8 {int8['perplexity']}")
        again = await mon.run_canaries()  # the same text on the same weights: the same figure (to batching's noise)
        assert again["llm-2"]["perplexity"] == pytest.approx(int8["perplexity"], rel=1e-3)
    finally:
        await mon.stop()


def test_llm_probe_kinds_validate() -> None:
    ok = PROBES.validate_python({"id": "a", "kind": "ttft_gap_ms", "q": 0.5, "tolerance": {"max": 200}})
    assert ok.kind == "ttft_gap_ms"
    for bad, words in [
        ({"kind": "itl_p99_ms", "target": "gateway"}, "unknown target 'gateway'"),
        ({"kind": "rate_limited_rate", "target": "llm-1"}, "measured at gateway or loadgen"),
        ({"kind": "ttft_p99_ms", "target": "model-1"}, "unknown target"),
        ({"kind": "finish_reason_share", "reason": "eos"}, "reason"),
        ({"kind": "kv_cache_usage", "tolerance": {"max": 1.5}}, "between 0 and 1"),
    ]:
        with pytest.raises(ValueError, match=words):
            PROBES.validate_python({"id": "b", "tolerance": {"max": 1}, **bad})


def test_client_figures_and_goodput_from_the_agreed_metric_names() -> None:
    """The load generator's `faultline_llm_client_*` (names agreed in issue 16), exported by prometheus_client as the
    load generator will, read through the monitor's parser and rings: client TTFT/ITL, outcomes, goodput."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from lab.monitor import prom
    from lab.monitor.llm import client_signals, goodput
    from lab.monitor.series import ScrapeRing
    from lab.monitor.signals import window

    reg = CollectorRegistry()
    buckets = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    ttft = Histogram("faultline_llm_client_ttft_seconds", "ttft", buckets=buckets, registry=reg)
    itl = Histogram("faultline_llm_client_itl_seconds", "itl", buckets=buckets, registry=reg)
    Histogram("faultline_llm_client_e2e_seconds", "e2e", buckets=buckets, registry=reg)
    tokens = Counter("faultline_llm_client_output_tokens", "tokens", registry=reg)
    requests = Counter("faultline_llm_client_requests", "requests", ["outcome"], registry=reg)
    ring = ScrapeRing(10)
    ring.add(0.0, prom.parse(generate_latest(reg).decode()).samples)
    for s in [0.2] * 6 + [2.0] * 2:  # 8 answered: 6 with TTFT <= 1 s
        ttft.observe(s)
        requests.labels("ok").inc()
    for _ in range(2):
        requests.labels("rate_limited").inc()
    requests.labels("abandoned").inc()  # the client's own choice: not counted against goodput
    for _ in range(90):
        itl.observe(0.04)
    for _ in range(10):
        itl.observe(0.4)
    tokens.inc(800)
    ring.add(10.0, prom.parse(generate_latest(reg).decode()).samples)
    w = window(ring, 10.0, 10.0)
    c = client_signals(w)
    assert c["client_rps"] == pytest.approx(1.1)
    assert c["client_output_tokens_per_s"] == pytest.approx(80.0)
    assert c["client_rate_limited_rate"] == pytest.approx(2 / 11)
    assert c["client_outcomes"]["ok"] == pytest.approx(8 / 11) and c["client_outcomes"]["error"] == 0
    assert 100 < c["client_ttft_p50_ms"] <= 200 and c["client_ttft_p99_ms"] > 1000
    assert c["client_itl_p99_ms"] > 200
    g = goodput(w, [], None)
    assert g["goodput_source"] == "client"
    # answered 8/10 (abandoned left out) x TTFT <= 1 s 6/8 x gaps <= 200 ms 90/100
    assert g["goodput_ratio"] == pytest.approx(0.8 * 0.75 * 0.9)
    assert client_signals(None)["client_ttft_p99_ms"] is None


def test_llm_status_share_counts_the_gateway_llm_answers_by_code_or_class() -> None:
    """`llm_status_share` (the LLM routes' share of a status at the gateway, e.g. 400s from prompts over the context),
    read from `gateway_llm_requests_total` as the gateway exports it, through the monitor's parser and rings."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from lab.monitor import prom
    from lab.monitor.series import ScrapeRing

    reg = CollectorRegistry()
    requests = Counter("gateway_llm_requests", "requests", ["route", "replica", "code"], registry=reg)
    ring = ScrapeRing(10)
    ring.add(0.0, prom.parse(generate_latest(reg).decode()).samples)
    for code, n in (("200", 14), ("400", 5), ("429", 1)):
        requests.labels("chat_completions", "llm-1", code).inc(n)
    ring.add(10.0, prom.parse(generate_latest(reg).decode()).samples)
    mon = SimpleNamespace(rings={"gateway": ring})

    def share(status: str) -> Any:
        p = PROBES.validate_python({"id": "p", "kind": "llm_status_share", "status": status,
                                    "tolerance": {"max": 0.05}})
        return probe_value(mon, p, 10.0, 10.0)

    assert share("400") == pytest.approx(5 / 20)
    assert share("4xx") == pytest.approx(6 / 20)
    assert share("2xx") == pytest.approx(14 / 20) and share("503") == 0
    assert probe_value(SimpleNamespace(rings={}), PROBES.validate_python(
        {"id": "p", "kind": "llm_status_share", "status": "400", "tolerance": {"max": 1}}), 10.0, 10.0) is None
    with pytest.raises(ValueError, match="String should match pattern"):
        PROBES.validate_python({"id": "p", "kind": "llm_status_share", "status": "4x0", "tolerance": {"max": 1}})


async def test_a_restarted_replica_gets_a_fresh_canary_at_the_next_tick(replicas: dict[str, ServiceProc],
                                                                        clock: FakeClock) -> None:
    """A rollout restarts a replica on another version: its canary must not wait for the next interval (an hour
    here), or the latest figure would still be the previous process's when a fix is judged."""
    mon = monitor(replicas, clock)
    llm2 = replicas["llm-2"]
    argv = list(llm2.argv)
    try:
        await mon.tick()
        assert (await mon.settle_canaries())["llm-2"]["version"] == "v1-int8"
        llm2.stop()
        llm2.argv = [*argv, "--version", "v1"]  # the last --version counts
        llm2.start()
        for _ in range(10):  # the restart is seen at the first scrape that answers, the canary at the next tick
            clock.advance(1.0)
            await mon.tick()
            got = await mon.settle_canaries()
            if got["llm-2"]["version"] == "v1":
                break
        assert got["llm-2"]["version"] == "v1" and got["llm-2"]["perplexity"] is not None, got["llm-2"]
        assert got["llm-1"]["at"] < got["llm-2"]["at"]  # only the restarted replica was asked again
    finally:
        await mon.stop()
        llm2.stop()
        llm2.argv = argv
        llm2.start()


def abandon(url: str, n: int) -> None:
    """`n` streams, each dropped after its first chunk: the replica aborts them (cancel on disconnect)."""
    body = {"prompt": "And God said", "max_tokens": 100, "temperature": 0, "stream": True}
    for _ in range(n):
        with httpx.Client(timeout=30, trust_env=False) as client, \
                client.stream("POST", f"{url}/v1/completions", json=body) as r:
            assert r.status_code == 200
            next(r.iter_lines())


async def test_finish_reason_share_each_replica_reports_the_worst_one(replicas: dict[str, ServiceProc],
                                                                     clock: FakeClock) -> None:
    """Pooled, the aborts on llm-2 lift the whole track's abort share; `each_replica` holds every replica to the
    floor and reports llm-1's share (none aborted), without naming either replica."""
    idle(replicas)
    mon = monitor(replicas, clock)
    try:
        def work() -> None:
            drive(replicas["llm-1"].url, 4, 8)
            abandon(replicas["llm-2"].url, 4)
            idle(replicas)

        await under_load(mon, clock, work)
        pooled = probe(mon, clock, kind="finish_reason_share", reason="abort")
        worst_floor = probe(mon, clock, kind="finish_reason_share", reason="abort", each_replica=True)
        assert pooled is not None and pooled > 0.2, pooled
        assert worst_floor == 0
        spec = {"id": "p", "kind": "finish_reason_share", "reason": "abort", "each_replica": True,
                "tolerance": {"max": 1}}
        worst_ceiling = probe_value(mon, PROBES.validate_python(spec), 3000, clock.now)
        assert worst_ceiling is not None and worst_ceiling > pooled  # llm-2's own share, all of its requests
    finally:
        await mon.stop()
    with pytest.raises(ValueError, match="leave `target` out"):
        PROBES.validate_python({"id": "b", "kind": "finish_reason_share", "reason": "abort", "each_replica": True,
                                "target": "llm-1", "tolerance": {"min": 0.1}})
