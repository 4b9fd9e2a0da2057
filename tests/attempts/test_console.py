"""The console on the shared real stack, in the sandbox (no attempt): every investigate operation returns data
and a text, act operations change the stack, and bad requests get clear 4xx answers.

Every test puts back what it changed (the next attempt's baseline reset would too, but sandbox tests must not
lean on it).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from attemptkit import LabApi

from lab.scenario.ops import OP_ARGS

pytestmark = pytest.mark.stack


def test_every_operation_is_listed_with_its_args_schema(api: LabApi) -> None:
    ops = api.call("GET", "/api/console")
    assert [o["op"] for o in ops] == list(OP_ARGS)
    logs = next(o for o in ops if o["op"] == "logs")
    assert logs["kind"] == "investigate" and "service" in logs["args_schema"]["required"]
    assert next(o for o in ops if o["op"] == "drain")["kind"] == "act"


@pytest.mark.parametrize(("op", "args", "key"), [
    ("status", {}, "services"),
    ("logs", {"service": "gateway", "tail": 5}, "lines"),
    ("metrics", {}, "services"),
    ("metrics", {"service": "gateway"}, "p99_ms"),
    ("drift", {}, "features"),
    ("slo", {}, "slos"),
    ("deploys", {}, "versions"),
    ("config_show", {"service": "feature-store"}, "config"),
])
def test_investigate_operations_return_data_and_text(api: LabApi, op: str, args: dict[str, Any], key: str) -> None:
    res = api.console(op, **args)
    # a stack that has just started has no scrape window yet (the monitor needs two scrapes a second apart)
    deadline = time.time() + 30
    while key not in res["data"] and time.time() < deadline:
        time.sleep(0.5)
        res = api.console(op, **args)
    assert key in res["data"], res["data"]
    assert res["text"].strip() and res["summary"]
    assert res["attempt_id"] is None  # the sandbox: nothing journaled


def test_status_and_deploys_show_what_an_engineer_would_see(api: LabApi) -> None:
    st = api.console("status")["data"]
    names = [s["name"] for s in st["services"]]
    assert {"gateway", "feature-store", "model-1", "model-2", "registry"} <= set(names)
    assert "netproxy" not in names and "proxies" not in st  # the lab's plumbing is not the learner's system
    dep = api.console("deploys")["data"]
    stages = {v["version"]: v["stage"] for v in dep["versions"]}
    assert stages["v1"] == "production"
    assert dep["replicas"]["model-1"]["default"] == "v1" and dep["routing"] == {}
    # the gateway decides at the served version's calibrated threshold, which the text table shows
    calibrated = next(v for v in dep["versions"] if v["version"] == "v1")["metrics"]["threshold"]
    assert api.service_config("gateway")["decision_threshold"] == pytest.approx(calibrated)
    text = api.console("deploys")["text"]
    assert "THRESHOLD" in text and f"{calibrated:.3f}" in text
    assert f"gateway decision threshold: {calibrated:g}" in text


def test_logs_grep_and_tail(api: LabApi) -> None:
    lines = api.console("logs", service="gateway", grep="replica", tail=3)["data"]["lines"]
    assert len(lines) <= 3 and all("replica" in ln["line"] for ln in lines)
    assert "regular expression" in api.console("logs", 400, service="gateway", grep="(", regex=True)["detail"]
    api.console("logs", service="gateway", grep="(")  # without regex, a plain substring


def test_trace_sends_real_requests_and_times_each_hop(api: LabApi) -> None:
    res = api.console("trace", limit=3)
    data = res["data"]
    assert data["sent"] >= 12 and data["ok"] == data["sent"]
    assert len(data["slowest"]) == 3
    for r in data["slowest"]:
        assert r["total_ms"] >= r["model_ms"] >= 0 and r["features_ms"] >= 0
        assert r["attempts"] and r["attempts"][0]["replica"] in ("model-1", "model-2")
    assert set(data["by_replica"]) <= {"model-1", "model-2"} and data["by_replica"]
    totals = [r["total_ms"] for r in data["slowest"]]
    assert totals == sorted(totals, reverse=True)


def test_trace_still_traces_while_the_feature_store_is_down(api: LabApi) -> None:
    """trace's transactions come from the feature store (GET /v1/sample); when it is the part that is down, the
    sample it gave before stands in and the trace shows the outage instead of failing."""
    api.console("trace", limit=1)  # the lab also warms this once the stack runs
    api.call("POST", "/api/services/feature-store/stop")
    try:
        data = api.console("trace", limit=2)["data"]
        assert data["sent"] >= 12
        assert all(r.get("fallback") or not r["ok"] for r in data["slowest"]), data["slowest"]
    finally:
        api.call("POST", "/api/services/feature-store/start")
        deadline = time.monotonic() + 60
        while not next(s for s in api.call("GET", "/api/status")["services"] if s["name"] == "feature-store")["ready"]:
            assert time.monotonic() < deadline, "feature-store not ready again"
            time.sleep(0.2)


def test_sandbox_faults_stay_hidden_from_status(api: LabApi) -> None:
    api.call("POST", "/api/faults", {"id": "hidden-net", "kind": "network", "action": "toxic", "target": "model-1",
                                     "params": {"type": "latency", "latency": 5}}, 201)
    try:
        res = api.console("status")
        text = json.dumps(res)
        assert "hidden-net" not in text and "toxic" not in text and "fl_" not in text
    finally:
        api.call("DELETE", "/api/faults/hidden-net")


def test_kill_ends_a_scenario_process_and_refuses_any_other(api: LabApi) -> None:
    api.call("POST", "/api/faults", {"id": "test-hog", "kind": "cpu", "action": "hog",
                                     "params": {"cores": 1, "duty": 0.1}}, 201)
    try:
        procs = api.console("status")["data"]["processes"]
        assert len(procs) == 1 and "hog" in procs[0]["command"]
        gateway_pid = next(s["pid"] for s in api.console("status")["data"]["services"] if s["name"] == "gateway")
        for pid in (gateway_pid, os.getpid(), 1):
            refused = api.console("kill", 403, pid=pid)
            assert f"pid {pid} was not started by the scenario" in refused["detail"]
        killed = api.console("kill", pid=procs[0]["pid"])
        assert killed["data"]["pid"] == procs[0]["pid"]
    finally:
        api.call("DELETE", "/api/faults/test-hog")
    assert api.console("status")["data"]["processes"] == []


def test_config_set_changes_the_live_config_and_keeps_it_for_restarts(api: LabApi) -> None:
    before = api.service_config("gateway")["model_timeout_ms"]
    try:
        res = api.console("config_set", service="gateway", key="model_timeout_ms", value=800)
        assert res["data"] == {"service": "gateway", "key": "model_timeout_ms", "before": before, "value": 800.0,
                               "live": True}
        assert api.service_config("gateway")["model_timeout_ms"] == 800.0
        argv = next(s["argv"] for s in api.stack.status()["services"] if s["name"] == "gateway")
        assert '"model_timeout_ms":800' in argv[argv.index("--config") + 1]
        shown = api.console("config_show", service="gateway")["data"]
        assert shown["config"]["model_timeout_ms"] == 800.0 and "model_timeout_ms" in shown["settable"]
    finally:
        api.console("config_set", service="gateway", key="model_timeout_ms", value=before)


@pytest.mark.parametrize(("args", "status", "needle"), [
    ({"service": "gateway", "key": "model_timeout_ms", "value": -5}, 422, "model_timeout_ms"),
    ({"service": "gateway", "key": "model_timeout_ms", "value": "fast"}, 422, "model_timeout_ms"),
    ({"service": "gateway", "key": "replicas", "value": {}}, 422, "cannot be set on gateway"),
    ({"service": "feature-store", "key": "latency_ms", "value": 0}, 422, "cannot be set on feature-store"),
    ({"service": "model-9", "key": "max_batch_size", "value": 8}, 404, "no service 'model-9'"),
    ({"service": "postgres", "key": "x", "value": 1}, 422, "unknown service"),
    ({"service": "gateway", "key": "Bad-Key", "value": 1}, 422, "key"),
])
def test_config_set_refuses_bad_input_clearly(api: LabApi, args: dict[str, Any], status: int, needle: str) -> None:
    assert needle in api.console("config_set", status, **args)["detail"]


def test_drain_and_undrain(api: LabApi) -> None:
    res = api.console("drain", replica="model-1")
    assert res["data"]["serving"] == ["model-2"]
    assert api.service_config("gateway")["drained"] == ["model-1"]
    res = api.console("undrain", replica="model-1")
    assert api.service_config("gateway")["drained"] == [] and res["data"]["serving"] == ["model-1", "model-2"]
    assert "no replica 'model-7'" in api.console("drain", 404, replica="model-7")["detail"]


def test_canary_then_rollback(api: LabApi) -> None:
    try:
        res = api.console("deploy", version="v2", canary=0.25)
        assert res["data"]["routing"] == {"v1": 0.75, "v2": 0.25}
        assert api.service_config("gateway")["routing"] == {"v1": 0.75, "v2": 0.25}
        # the split is in the gateway's start-up config too: a restart keeps the canary
        api.console("restart", service="gateway")
        assert api.service_config("gateway")["routing"] == {"v1": 0.75, "v2": 0.25}
        dep = api.console("deploys")["data"]
        assert {v["version"]: v["stage"] for v in dep["versions"]}["v2"] == "canary"
        assert dep["replicas"]["model-2"]["versions"] == ["v1", "v2"]
        res = api.console("rollback", version="v1")
        assert res["data"]["canary_archived"] == "v2"
        assert api.service_config("gateway")["routing"] == {}
        assert "already the serving default" in api.console("deploy", 409, version="v1", canary=0.5)["detail"]
        assert "no version 'v99'" in api.console("deploy", 404, version="v99")["detail"]
    finally:
        api.call("POST", "/api/console/rollback", {"version": "v1"})
        registry = api.stack.topology.service_url("registry")
        import httpx

        httpx.post(f"{registry}/v1/models/v2/stage", json={"stage": "staging"}, timeout=10, trust_env=False)


@pytest.mark.parametrize(("op", "body", "status", "needle"), [
    ("bogus", {}, 404, "unknown operation 'bogus'"),
    ("logs", {}, 422, "service"),
    ("trace", {"limit": "5"}, 422, "limit"),
    ("trace", {"limit": 0}, 422, "limit"),
    ("scale", {"replicas": 7}, 422, "between 1 and 6"),
    ("scale", {"replicas": 0}, 422, "replicas"),
    ("kill", {"pid": 5, "fault": "x"}, 422, "exactly one"),
    ("status", {"verbose": True}, 422, "verbose"),
    ("deploy", {"version": "latest"}, 422, "unknown model version"),
    ("promote", {"version": "v0x"}, 422, "unknown model version"),
    ("status", [1, 2], 422, "JSON object"),
])
def test_bad_requests_get_clear_4xx(api: LabApi, op: str, body: Any, status: int, needle: str) -> None:
    r = api.http.post(f"/api/console/{op}", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_a_body_that_is_not_json_is_a_400(api: LabApi) -> None:
    r = api.http.post("/api/console/status", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]


def test_traffic_is_a_sandbox_operation(api: LabApi) -> None:
    try:
        state = api.console("traffic", rps=5)["data"]
        assert state["target_rps"] == 5
    finally:
        api.call("POST", "/api/traffic", {"rps": 0})  # idle again, as the session's stack started


def test_the_cli_goes_through_the_console(api: LabApi) -> None:
    proc = api.stack.cli("config", "set", "gateway", "model_timeout_ms", "-5")
    assert proc.returncode == 1 and "model_timeout_ms" in proc.stderr and "Traceback" not in proc.stderr
    proc = api.stack.cli("trace", "--limit", "2")
    assert proc.returncode == 0 and proc.stdout.startswith("traced ")
    proc = api.stack.cli("deploys", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["versions"]
    proc = api.stack.cli("metrics", "gateway")
    assert proc.returncode == 0 and "gateway" in proc.stdout


def test_config_of_a_service_that_does_not_answer(api: LabApi) -> None:
    api.call("POST", "/api/services/model-2/stop")
    try:
        shown = api.console("config_show", service="model-2")["data"]
        assert shown["live"] is False and shown["config"]["max_wait_ms"] == 2.0  # the config it starts with
        res = api.console("config_set", service="model-2", key="max_wait_ms", value=3.0)
        assert res["data"]["live"] is False and res["data"]["started"] is True  # started on the new config
        assert "start-up config" in res["text"]
        _wait_ready(api, "model-2")
        assert api.service_config("model-2")["max_wait_ms"] == 3.0
    finally:
        if api.stack.service("model-2")["pid"] is None:
            api.call("POST", "/api/services/model-2/start")
        _wait_ready(api, "model-2")
        api.console("config_set", service="model-2", key="max_wait_ms", value=2.0)


def _wait_ready(api: LabApi, name: str, timeout: float = 90) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.stack.service(name)["ready"]:
            return True
        time.sleep(0.3)
    raise AssertionError(f"{name} not ready within {timeout}s")
