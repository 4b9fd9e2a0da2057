"""Finding 3 of issue 12: slow refusals. `POST /api/traffic {"rps": 0.5, "profile": "nope"}` answered 409 only after
60 s (the load generator was started with the unknown profile, crash-looped, and the lab waited for it to be
ready) and left it crash-looping. Every refusal must be quick, name the valid choices, and change nothing: here
each one is timed, and the stack's state (processes, restarts, live configs, registry stages, traffic) is compared
before and after. Also issue 11's rules: one traffic rate bound, one place for what an attempt forbids."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from lab.rules import DURING_ATTEMPT, MAX_TRAFFIC_RPS, RuleError, attempt_refusal, check_traffic
from services.loadgen.profiles import BUILTIN_PROFILES

QUICK_S = 1.0
PROFILES = tuple(BUILTIN_PROFILES)


def snapshot(stack: Any) -> dict[str, Any]:
    """What a refusal must not change: every process and its restarts, live configs, stages, traffic."""
    status = stack.status()
    services = {s["name"]: (s["pid"], s["restarts"], s["state"], tuple(s.get("argv") or ()))
                for s in status["services"]}
    configs = {}
    for s in status["services"]:
        if s["name"] in ("netproxy", "loadgen"):
            continue
        r = httpx.get(f"http://127.0.0.1:{s['port']}/admin/config", timeout=10, trust_env=False)
        configs[s["name"]] = r.json()
    registry = next(s for s in status["services"] if s["name"] == "registry")
    models = httpx.get(f"http://127.0.0.1:{registry['port']}/v1/models", timeout=10, trust_env=False).json()
    traffic = stack.client.get(stack.lab_url + "/api/traffic").json()
    traffic_view = {k: traffic.get(k) for k in ("running", "profile", "base_rps", "feedback_delay_s")}
    return {"services": services, "configs": configs, "stages": {m["version"]: m["stage"] for m in models},
            "traffic": traffic_view}


def timed(call: Any) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = call()
    return r, time.monotonic() - t0


def test_an_unknown_traffic_profile_is_refused_at_once_and_starts_nothing(stack: Any) -> None:
    was = stack.client.get(stack.lab_url + "/api/traffic").json()
    if was["running"]:  # another test on this worker's stack left its load generator: stopped here, put back after
        assert stack.client.delete(stack.lab_url + "/api/traffic", timeout=60).status_code == 200
    try:
        _refused_and_nothing_started(stack)
    finally:
        if was["running"]:
            body = {"rps": was["base_rps"], "profile": was["profile"], "feedback_delay_s": was["feedback_delay_s"]}
            r = stack.client.post(stack.lab_url + "/api/traffic", json=body, timeout=120)
            assert r.status_code == 200, r.text


def _refused_and_nothing_started(stack: Any) -> None:
    before = snapshot(stack)
    r, took = timed(lambda: stack.client.post(stack.lab_url + "/api/traffic", json={"rps": 0.5, "profile": "nope"}))
    assert r.status_code == 422 and took < QUICK_S, (r.status_code, took, r.text)
    detail = r.json()["detail"]
    assert "unknown traffic profile 'nope'" in detail and all(p in detail for p in PROFILES), detail
    r, took = timed(lambda: stack.client.post(stack.lab_url + "/api/traffic", json={"rps": MAX_TRAFFIC_RPS + 1}))
    assert r.status_code == 422 and took < QUICK_S
    assert "loadgen" not in [s["name"] for s in stack.status()["services"]]
    # the CLI and the console go through the same check
    cli = stack.cli("traffic", "--rps", "0.5", "--profile", "nope", timeout=60)
    assert cli.returncode == 1 and "known profiles: baseline" in cli.stderr, cli.stderr
    r, took = timed(lambda: stack.client.post(stack.lab_url + "/api/console/traffic", json={"profile": "nope"}))
    assert r.status_code == 422 and took < QUICK_S and "baseline" in r.json()["detail"]
    r = stack.client.post(stack.lab_url + "/api/console/traffic", json={"rps": MAX_TRAFFIC_RPS + 1})
    assert r.status_code == 422 and str(MAX_TRAFFIC_RPS) in r.json()["detail"]
    time.sleep(1.0)  # a load generator started by mistake would show up (and crash) by now
    assert snapshot(stack) == before


def test_a_running_load_generator_is_left_as_it_was(stack: Any) -> None:
    was_running = stack.client.get(stack.lab_url + "/api/traffic").json()["running"]
    r = stack.client.post(stack.lab_url + "/api/traffic", json={"rps": 0, "profile": "baseline"}, timeout=120)
    assert r.status_code == 200, r.text
    try:
        before = snapshot(stack)
        for body in ({"rps": 0.5, "profile": "nope"}, {"rps": MAX_TRAFFIC_RPS + 1}, {"rps": 1, "seed": -1},
                     {"rps": 1, "feedback_delay_s": 4000}):
            r, took = timed(lambda b=body: stack.client.post(stack.lab_url + "/api/traffic", json=b))
            assert r.status_code == 422 and took < QUICK_S, (body, r.status_code, took, r.text)
        r = stack.client.post(stack.lab_url + "/api/traffic", json={"rps": 0.5, "profile": "nope"})
        assert all(p in r.json()["detail"] for p in PROFILES)
        assert snapshot(stack) == before
    finally:
        if not was_running:
            stack.client.delete(stack.lab_url + "/api/traffic", timeout=60)


# op, args, status, words the refusal must contain (the valid choices)
CONSOLE_REFUSALS = [
    ("drain", {"replica": "model-9"}, 404, ["model-1", "model-2"]),
    ("undrain", {"replica": "model-9"}, 404, ["model-1", "model-2"]),
    ("drain", {"replica": "gateway"}, 422, ["model-1"]),
    ("restart", {"service": "nope"}, 422, ["gateway", "feature-store", "registry"]),
    ("restart", {"service": "model-9"}, 404, ["model-1", "model-2"]),
    ("scale", {"replicas": 99}, 422, ["replicas"]),
    ("scale", {"replicas": 7}, 422, ["between 1 and 6"]),
    ("deploy", {"version": "v999"}, 404, ["v1", "v2"]),
    ("deploy", {"version": "nope"}, 422, ["v1"]),
    ("deploy", {"version": "v2", "canary": 1.5}, 422, ["canary"]),
    ("rollback", {"version": "v999"}, 404, ["v1", "v2"]),
    ("promote", {"version": "v999"}, 404, ["v1", "v2"]),
    ("config_set", {"service": "gateway", "key": "nope", "value": 1}, 422, ["max_retries", "model_timeout_ms"]),
    ("config_set", {"service": "gateway", "key": "replicas", "value": {}}, 422, ["max_retries"]),
    ("config_set", {"service": "gateway", "key": "max_retries", "value": "lots"}, 422, ["max_retries"]),
    ("config_set", {"service": "model-1", "key": "readiness", "value": "maybe"}, 422, ["readiness"]),
    ("config_set", {"service": "model-9", "key": "max_queue", "value": 1}, 404, ["model-1"]),
    ("config_show", {"service": "model-9"}, 404, ["model-1"]),
    ("metrics", {"service": "model-9"}, 404, ["model-1"]),
    ("logs", {"service": "model-9"}, 404, ["model-1"]),
    ("kill", {"pid": 1}, 403, []),
    ("kill", {"pid": 999_999_999}, 403, []),
    ("traffic", {"profile": "nope"}, 422, ["baseline", "surge"]),
    ("drift", {"feature": "nope"}, 422, ["amount"]),
    ("trace", {"limit": 1000}, 422, ["limit"]),
]


def test_console_refusals_are_quick_name_the_choices_and_change_nothing(stack: Any) -> None:
    before = snapshot(stack)
    slow, wrong = [], []
    for op, args, status, words in CONSOLE_REFUSALS:
        r, took = timed(lambda o=op, a=args: stack.client.post(f"{stack.lab_url}/api/console/{o}", json=a))
        detail = r.json().get("detail", r.text) if r.headers.get("content-type", "").startswith("application/json") \
            else r.text
        if took >= QUICK_S:
            slow.append((op, args, round(took, 2)))
        if r.status_code != status or not all(w in str(detail) for w in words):
            wrong.append((op, args, r.status_code, detail))
    assert not wrong, wrong
    assert not slow, slow
    assert snapshot(stack) == before


def test_the_rules_are_one_function_each() -> None:
    check_traffic(MAX_TRAFFIC_RPS, "surge", PROFILES)
    for rps in (-1, MAX_TRAFFIC_RPS + 0.5, float("nan"), True, "10"):
        with pytest.raises(RuleError, match="rps"):
            check_traffic(rps, None, PROFILES)
    with pytest.raises(RuleError, match="known profiles: baseline, unit-change"):
        check_traffic(1, "nope", PROFILES)
    assert all(attempt_refusal(action, None) is None for action in DURING_ATTEMPT)
    assert "attempt a1 is running: changing the traffic is refused" in (attempt_refusal("traffic", "a1") or "")
    with pytest.raises(KeyError):
        attempt_refusal("something else", "a1")


def test_a_bad_value_for_a_service_that_does_not_answer_is_refused_before_its_start_up_config(stack: Any) -> None:
    """Such a value used to go into the start-up `--config`, and the service was started on it: a crash loop."""
    lab = stack.lab_url
    assert stack.client.post(lab + "/api/services/model-2/stop", timeout=60).status_code == 200
    try:
        before = stack.service("model-2")
        r, took = timed(lambda: stack.client.post(lab + "/api/console/config_set", json={
            "service": "model-2", "key": "max_wait_ms", "value": "slow"}))
        assert r.status_code == 422 and took < QUICK_S, (r.status_code, took, r.text)
        assert "did not answer" in r.json()["detail"] and "max_wait_ms" in r.json()["detail"]
        after = stack.service("model-2")
        assert (after["argv"], after["pid"], after["state"]) == (before["argv"], None, before["state"])
    finally:
        stack.client.post(lab + "/api/services/model-2/start", timeout=60)
        deadline = time.monotonic() + 120
        while not stack.service("model-2")["ready"]:
            assert time.monotonic() < deadline, "model-2 did not come back"
            time.sleep(0.3)
