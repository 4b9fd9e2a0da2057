"""The real locust process against a real recording peer: pacing, runtime changes, profiles, late feedback.

One load generator serves the module's tests in order (starting locust costs a couple of seconds of CPU on a
shared machine); each test sets the rate and profile it needs. Rates are measured at the peer, from its own
receive times, and compared with what the load generator and locust itself report.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lgharness import Loadgen, Peer, free_port, loadgen_argv, run_loadgen, start_loadgen, stop_process, wait_until

from lab.parts.loadgen import LoadgenClient, LoadgenError

# The load generator is held to its rate (within 20-25 %) by a peer measuring it: under pytest-xdist these tests run
# with the machine to themselves (tests/cpulock.py).
pytestmark = pytest.mark.exclusive

FEEDBACK_DELAY_S = 1.0


@pytest.fixture(scope="module")
def lg(peer: Peer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loadgen]:
    handle = start_loadgen(peer.url, 20, tmp_path_factory.mktemp("loadgen"), feedback_delay_s=FEEDBACK_DELAY_S, seed=42)
    try:
        yield handle
    finally:
        code = handle.stop()
        assert code == 0, handle.output()[-3000:]


def peer_rate(peer: Peer, seconds: float) -> tuple[float, list[dict]]:
    """Requests/s the peer received over the next `seconds`, and those requests."""
    n0, _ = peer.counts()
    t0 = time.monotonic()
    time.sleep(seconds)
    got = peer.log(since_score=n0)
    n1 = got["n_scores"]
    return (n1 - n0) / (time.monotonic() - t0), got["scores"]


def pause_and_drain(lg: Loadgen) -> dict:
    """Rate 0, then wait until nothing moves: no request in flight, no label pending."""
    lg.client.set_rate(0)
    seen: list[dict] = []

    def quiet() -> dict | None:
        s = lg.client.state()
        idle = s["inflight"] == 0 and s["feedback"]["pending"] == 0
        settled = idle and bool(seen) and seen[-1]["requests"] == s["requests"]
        seen.append(s)
        return s if settled else None

    return wait_until(quiet, timeout=30, interval=0.25)


def test_steady_rate_is_kept_and_counted_the_same_everywhere(lg: Loadgen, peer: Peer) -> None:
    lg.client.configure(rps=30, profile="baseline")
    time.sleep(2)
    rate, _ = peer_rate(peer, 6)
    state = lg.client.state()
    assert 30 * 0.8 <= rate <= 30 * 1.2, rate
    assert 30 * 0.8 <= state["achieved_rps"] <= 30 * 1.2, state
    assert state["target_rps"] == 30 and state["profile"] == "baseline"
    assert state["p50_ms"] is not None and state["p99_ms"] is not None

    # locust's own statistics (what the learner sees in its web UI) agree with the load generator's state.
    stats = httpx.get(lg.url + "/stats/requests", timeout=5).json()
    score = next(s for s in stats["stats"] if s["name"] == "/v1/score")
    assert 30 * 0.75 <= score["current_rps"] <= 30 * 1.25, score

    drained = pause_and_drain(lg)
    sent = drained["requests"]["ok"] + drained["requests"]["failed"]
    n_scores, _ = peer.counts()
    # With traffic paused and nothing in flight the three counts must be identical. Locust memoises
    # /stats/requests for 2 s (longer when it is slow to build), so its count is read once that has passed.
    counted: list[int] = []

    def locust_caught_up() -> bool:
        stats = httpx.get(lg.url + "/stats/requests", timeout=5).json()
        counted.append(next(s for s in stats["stats"] if s["name"] == "/v1/score")["num_requests"])
        return counted[-1] == sent

    with contextlib.suppress(AssertionError):  # the assert below says what differed
        wait_until(locust_caught_up, timeout=10, interval=0.5)
    assert counted[-1] == sent == n_scores, (counted, sent, n_scores)
    assert drained["requests"]["failed"] == 0


def test_rate_changes_at_runtime_without_restart(lg: Loadgen, peer: Peer) -> None:
    pid = lg.proc.pid
    state = lg.client.set_rate(120)
    assert state["target_rps"] == 120
    time.sleep(2)
    fast, _ = peer_rate(peer, 5)
    assert 120 * 0.8 <= fast <= 120 * 1.2, fast
    lg.client.set_rate(10)
    time.sleep(1.5)
    slow, _ = peer_rate(peer, 5)
    assert 10 * 0.7 <= slow <= 10 * 1.3, slow
    assert lg.proc.poll() is None and lg.proc.pid == pid
    assert lg.client.state()["users"] >= 30  # grew for 120 rps (0.25 users per rps), never shrinks


def _rows_under(lg: Loadgen, peer: Peer, profile: str, rps: float, seconds: float) -> tuple[float, list[dict]]:
    lg.client.configure(rps=rps, profile=profile)
    time.sleep(0.5)  # requests built before the switch may still be on the wire
    rate, scores = peer_rate(peer, seconds)
    return rate, [s["body"] for s in scores]


def test_profiles_shape_the_traffic(lg: Loadgen, peer: Peer) -> None:
    _, base = _rows_under(lg, peer, "baseline", 100, 2.5)
    _, cents = _rows_under(lg, peer, "unit-change", 100, 2.5)
    assert len(base) > 150 and len(cents) > 150
    ratio = statistics.median(r["amount"] for r in cents) / statistics.median(r["amount"] for r in base)
    assert 50 < ratio < 200, ratio

    _, nulls = _rows_under(lg, peer, "null-spike", 100, 3)
    share = sum(r["device_age_days"] is None for r in nulls) / len(nulls)
    assert 0.3 < share < 0.5, share
    assert sum(r["device_age_days"] is None for r in base) / len(base) < 0.05

    _, newcat = _rows_under(lg, peer, "new-category", 100, 3)
    share = sum(r["merchant_category"] == "crypto_exchange" for r in newcat) / len(newcat)
    assert 0.15 < share < 0.35, share
    assert not any(r["merchant_category"] == "crypto_exchange" for r in base)

    surge_rate, _ = _rows_under(lg, peer, "surge", 15, 4)
    state = lg.client.state()
    assert state["target_rps"] == 60 and state["base_rps"] == 15 and state["rate_multiplier"] == 4
    assert 60 * 0.75 <= surge_rate <= 60 * 1.25, surge_rate


def test_scenario_profiles_can_be_added_at_runtime(lg: Loadgen, peer: Peer) -> None:
    assert lg.client.add_profiles({"half-cents": {"shift": {"unit_scale": 50}, "description": "test"}}) == [
        "half-cents"
    ]
    assert lg.client.profiles()["half-cents"]["shift"]["unit_scale"] == 50.0
    _, rows = _rows_under(lg, peer, "half-cents", 60, 2)
    _, base = _rows_under(lg, peer, "baseline", 60, 2)
    ratio = statistics.median(r["amount"] for r in rows) / statistics.median(r["amount"] for r in base)
    assert 25 < ratio < 100, ratio
    with pytest.raises(LoadgenError) as err:
        lg.client.add_profiles({"broken": {"shift": {"unit_scal": 50}}})
    assert err.value.status == 422 and "unit_scal" in str(err.value)


def test_feedback_arrives_late_is_retried_and_none_is_lost(lg: Loadgen, peer: Peer) -> None:
    drained = pause_and_drain(lg)
    before = drained["feedback"]
    n_scores, n_feedback = peer.counts()
    # Every 7th transaction's first feedback attempt fails (503); every 50th is rejected for good (404).
    peer.configure(feedback_fail_first=7, feedback_reject_every=50)
    try:
        lg.client.configure(rps=60, profile="baseline")
        time.sleep(4)
        after = pause_and_drain(lg)
    finally:
        peer.configure(feedback_fail_first=0, feedback_reject_every=0)
    log = peer.log(since_score=n_scores, since_feedback=n_feedback)
    scored = {s["body"]["transaction_id"]: (i + n_scores, s["t"]) for i, s in enumerate(log["scores"])}
    assert len(scored) > 150

    first: dict[str, float] = {}
    accepted: dict[str, int] = {}
    for f in log["feedback"]:
        first.setdefault(f["transaction_id"], f["t"])
        if f["status"] == 202:
            accepted[f["transaction_id"]] = accepted.get(f["transaction_id"], 0) + 1
    assert set(first) == set(scored)  # every scored transaction's label was sent
    rejected = {t for t, (i, _) in scored.items() if i % 50 == 0}
    retried = {t for t, (i, _) in scored.items() if i % 7 == 0} - rejected
    assert set(accepted) == set(scored) - rejected
    assert all(n == 1 for n in accepted.values())  # delivered exactly once
    lags = [first[t] - ts for t, (_, ts) in scored.items()]
    assert min(lags) >= FEEDBACK_DELAY_S * 0.9, min(lags)
    assert statistics.median(lags) < FEEDBACK_DELAY_S + 1.0, statistics.median(lags)

    fb = after["feedback"]
    assert fb["sent"] - before["sent"] == len(accepted)
    assert fb["dropped"] - before["dropped"] == len(rejected) > 0
    assert fb["retries"] - before["retries"] == len(retried) > 0
    assert fb["failed"] == 0 and fb["pending"] == 0
    labels = [f["label"] for f in log["feedback"]]
    assert set(labels) <= {0, 1} and 0 < sum(labels) < 0.3 * len(labels)


def test_control_api_refuses_bad_input_and_changes_nothing(lg: Loadgen) -> None:
    lg.client.configure(rps=5, profile="baseline")
    for path, body, status, words in [
        ("/control/rate", {"rps": -1}, 422, "rps must be between 0"),
        ("/control/rate", {"rps": "fast"}, 422, "rps must be a number"),
        ("/control/rate", {"speed": 3}, 400, "rps"),
        ("/control/profile", {"name": "nope"}, 404, "unknown profile 'nope'"),
        ("/control/profile", {}, 400, "name"),
        ("/control", {"rps": 50, "profile": "nope"}, 404, "unknown profile"),
        ("/control", {"rps": 50, "feedback_delay_s": -2}, 422, "feedback_delay_s"),
        ("/control", {"rps": 50, "turbo": True}, 422, "unknown field(s) turbo"),
        ("/control/profiles", {"x": {"rate_multiplier": 0}}, 422, "rate_multiplier"),
    ]:
        r = httpx.post(lg.url + path, json=body, timeout=5)
        assert r.status_code == status, (path, body, r.text)
        assert words in r.json()["detail"], (path, r.json())
    r = httpx.post(lg.url + "/control/rate", content=b"{not json", timeout=5)
    assert r.status_code == 400 and "JSON object" in r.json()["detail"]
    state = lg.client.state()
    assert state["base_rps"] == 5 and state["profile"] == "baseline" and state["feedback"]["delay_s"] == 1.0


def test_stop_in_locust_ui_is_visible_and_a_new_rate_restarts(lg: Loadgen, peer: Peer) -> None:
    lg.client.configure(rps=20, profile="baseline")
    assert httpx.post(lg.url + "/stop", timeout=10).status_code == 200
    wait_until(lambda: lg.client.state()["runner_state"] == "stopped", timeout=15)
    ready = httpx.get(lg.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and "stopped" in ready.json()["reason"]
    lg.client.set_rate(20)
    wait_until(lambda: lg.client.state()["runner_state"] == "running", timeout=15)
    time.sleep(1)
    rate, _ = peer_rate(peer, 3)
    assert 20 * 0.7 <= rate <= 20 * 1.3, rate
    assert httpx.get(lg.url + "/readyz", timeout=5).status_code == 200


def test_web_ui_and_service_routes(lg: Loadgen) -> None:
    lg.client.configure(rps=5, profile="baseline")
    ui = httpx.get(lg.url + "/", timeout=5)
    assert ui.status_code == 200 and "locust" in ui.text.lower()
    assert httpx.get(lg.url + "/healthz", timeout=5).json()["status"] == "ok"
    assert httpx.get(lg.url + "/readyz", timeout=5).status_code == 200
    metrics = httpx.get(lg.url + "/metrics", timeout=5).text
    for name in (
        "loadgen_target_rps 5.0",
        "loadgen_achieved_rps",
        'loadgen_requests_total{code="200"}',
        'loadgen_feedback_total{outcome="sent"}',
        'loadgen_profile{profile="baseline"} 1.0',
        "process_resident_memory_bytes",
    ):
        assert name in metrics, name


def test_sigterm_delivers_pending_labels_before_exit(peer: Peer, tmp_path: Path) -> None:
    # Started on a scenario profile given as a YAML file (ints where the built-ins have floats).
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("cents-only:\n  shift: {unit_scale: 100}\n  description: from a file\n")
    other = start_loadgen(peer.url, 40, tmp_path, profile="cents-only", feedback_delay_s=60, profiles_file=profiles)
    tag = other.client.state()["run_tag"]
    time.sleep(2)
    assert other.client.state()["feedback"]["sent"] == 0  # labels are still waiting out their delay
    assert other.stop() == 0
    log = peer.log()
    mine = [s["body"] for s in log["scores"] if s["body"]["transaction_id"].startswith(tag)]
    scored = {b["transaction_id"] for b in mine}
    labelled = {f["transaction_id"] for f in log["feedback"] if f["transaction_id"].startswith(tag)}
    assert len(scored) >= 40 and labelled == scored
    assert statistics.median(b["amount"] for b in mine) > 1000  # cents: the baseline median is ~50
    assert "undelivered=0" in other.output()


def test_bad_command_lines_fail_fast_with_a_message(peer: Peer, tmp_path: Path) -> None:
    port = free_port()
    cases = [
        (["--profile", "nope"], 2, "unknown profile 'nope'"),
        (["--target", "http://10.1.2.3:8100"], 2, "loopback"),
        (["--rps", "-5"], 2, "rps must be between 0"),
    ]
    for extra, code, words in cases:
        argv = [*loadgen_argv(peer.url, 1, "baseline", port), *extra]  # the last --profile/--target/--rps wins
        proc = run_loadgen(argv, tmp_path / "bad.log")
        assert proc.wait(30) == code, (extra, (tmp_path / "bad.log").read_text())
        assert words in (tmp_path / "bad.log").read_text(), extra
    # The web port is taken (by the peer itself): a clear error, not a traceback in a greenlet.
    busy = int(peer.url.rsplit(":", 1)[1])
    argv = loadgen_argv(peer.url, 1, "baseline", busy)
    proc = run_loadgen(argv, tmp_path / "busy.log")
    try:
        assert proc.wait(30) == 1
    finally:
        stop_process(proc)
    assert f"cannot listen on 127.0.0.1:{busy}" in (tmp_path / "busy.log").read_text()


def test_slow_answers_grow_the_pool_and_saturation_is_reported(lg: Loadgen, peer: Peer, tmp_path: Path) -> None:
    peer.configure(score_delay_ms=400)
    try:
        # 40 rps x 0.4 s needs ~16 requests in flight; the pool starts at 10 for 40 rps and must grow.
        lg.client.configure(rps=40, profile="baseline")
        time.sleep(5)
        rate, _ = peer_rate(peer, 4)
        assert 40 * 0.75 <= rate <= 40 * 1.25, rate
        assert lg.client.state()["users"] >= 16

        # A load generator capped at 4 users can only do 4 / 0.4 s = 10 rps: it must say so, not pretend.
        capped = start_loadgen(peer.url, 40, tmp_path, max_users=4, feedback_delay_s=0.5)
        try:
            time.sleep(5)
            state = capped.client.state()
        finally:
            capped.stop()
    finally:
        peer.configure(score_delay_ms=0)
        pause_and_drain(lg)
    assert state["target_rps"] == 40 and state["users"] == 4
    assert 5 <= state["achieved_rps"] <= 12, state
    assert state["permits"]["missed"] > 50, state["permits"]


@pytest.mark.slow
def test_keeps_200_rps(lg: Loadgen, peer: Peer) -> None:
    """The issue's performance bar: 200 rps held on this 2-core machine (other work shares the CPU)."""
    lg.client.configure(rps=200, profile="baseline")
    time.sleep(3)
    rate, _ = peer_rate(peer, 8)
    state = lg.client.state()
    print(
        f"\n200 rps: peer measured {rate:.1f} rps, loadgen achieved {state['achieved_rps']} rps, "
        f"users {state['users']}, missed permits {state['permits']['missed']}, p99 {state['p99_ms']} ms"
    )
    assert rate >= 200 * 0.9, rate
    assert state["achieved_rps"] >= 200 * 0.9, state
    pause_and_drain(lg)


def test_client_reports_unreachable_loadgen() -> None:
    with LoadgenClient(f"http://127.0.0.1:{free_port()}", timeout_s=1) as client:
        assert not client.ready()
        with pytest.raises(LoadgenError, match="unreachable"):
            client.state()
