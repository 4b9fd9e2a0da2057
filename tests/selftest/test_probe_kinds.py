"""The probe kinds for controls and ML-level incidents, and a scenario's own `page:`, on the session's real stack.

Each attempt sends an inline scenario document (the control fixture, edited) through `POST /api/attempts`:
- restarts / uptime_s: 0 restarts and a growing uptime before anything happens; a real `restart model-1`
  through the console makes `restarts` 1 (for model-1 and summed over every service) and resets model-1's
  uptime below the gateway's;
- decline_rate, score_quantile, status_share: measured from the gateway's real traffic (values in range, the
  2xx share near 1, no 5xx);
- a control pages from its `page: {at_s}` without any broken steady state, is verified as "nothing to fix" when
  the learner claims without acting (and graded as broke), and restart-then-claim is rejected with a message that
  names the `restarts` probe, its value and its limit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

FIXTURE = Path(__file__).parent / "fixtures" / "quiet-blip-control.yaml"
SCALE = 0.05
pytestmark = pytest.mark.timeout(600)


class Lab:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120, trust_env=False)

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        r = self.http.request(method, path, json=body)
        assert r.status_code in expect, (method, path, r.status_code, r.text)
        return r.json()

    def abort_active(self) -> None:
        active = self.call("GET", "/api/attempts/active")["attempt"]
        if active is not None:
            self.call("POST", f"/api/attempts/{active['attempt_id']}/abort", {"reason": "test cleanup"}, (200, 409))
            deadline = time.monotonic() + 120
            while self.call("GET", "/api/attempts/active")["attempt"] is not None and time.monotonic() < deadline:
                time.sleep(0.5)

    def start(self, doc: dict[str, Any], seed: int = 1) -> str:
        self.abort_active()
        st = self.call("POST", "/api/attempts", {"scenario": doc, "seed": seed, "time_scale": SCALE})
        return str(st["attempt_id"])

    def state(self, attempt_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/attempts/{attempt_id}")

    def wait(self, attempt_id: str, until: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(attempt_id)
            if until(st):
                return st
            assert time.monotonic() < deadline, f"{what} not reached in {timeout}s: {st['phase']} {st}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def lab(stack: Any) -> Iterator[Lab]:
    handle = Lab(stack.lab_url)
    handle.abort_active()
    yield handle
    handle.abort_active()
    handle.http.close()


def control() -> dict[str, Any]:
    return dict(yaml.safe_load(FIXTURE.read_text()))


def probes(st: dict[str, Any]) -> dict[str, Any]:
    return {p["id"]: p for p in st["steady_state"]}


def test_restarts_uptime_and_the_ml_probes_measure_the_real_stack(lab: Lab) -> None:
    doc = control()
    doc["id"] = "probe-kinds-check"
    doc["page"] = {"at_s": 5000}  # nothing pages, nothing is injected while we look
    doc["faults"][0]["when"] = {"at_s": 5000}
    doc["steady_state"] = [
        {"id": "restarts-any", "kind": "restarts", "tolerance": {"max": 0}},
        {"id": "restarts-m1", "kind": "restarts", "target": "model-1", "tolerance": {"max": 0}},
        {"id": "uptime-m1", "kind": "uptime_s", "target": "model-1", "tolerance": {"min": 0}},
        {"id": "uptime-gw", "kind": "uptime_s", "target": "gateway", "tolerance": {"min": 0}},
        {"id": "declines", "kind": "decline_rate", "tolerance": {"max": 0.5}, "window_s": 200},
        {"id": "median", "kind": "score_quantile", "q": 0.5, "tolerance": {"max": 0.5}, "window_s": 200},
        {"id": "ok-share", "kind": "status_share", "status": "2xx", "tolerance": {"min": 0.9}, "window_s": 200},
        {"id": "no-5xx", "kind": "status_share", "status": "5xx", "tolerance": {"max": 0.05}, "window_s": 200},
    ]
    doc["fix"]["accepted"] = [{"description": "all hold", "probes": ["restarts-any", "declines"], "hold_s": 30}]
    attempt = lab.start(doc)
    st = lab.wait(attempt, lambda s: s["phase"] == "running", 300, "running")
    st = lab.wait(attempt, lambda s: all(p["value"] is not None for p in s["steady_state"]), 60, "every value")
    p = probes(st)
    assert p["restarts-any"]["value"] == 0 and p["restarts-m1"]["value"] == 0, p
    assert 0 <= p["declines"]["value"] <= 0.5 and p["declines"]["ok"] is True, p["declines"]
    assert 0 <= p["median"]["value"] <= 0.5, p["median"]
    assert p["ok-share"]["value"] >= 0.9 and p["no-5xx"]["value"] <= 0.05, (p["ok-share"], p["no-5xx"])
    time.sleep(3)
    res = lab.call("POST", "/api/console/restart", {"service": "model-1"})
    assert "restarted" in res["summary"], res
    st = lab.wait(attempt, lambda s: probes(s)["restarts-m1"]["value"] == 1, 60, "model-1's restart counted")
    p = probes(st)
    assert p["restarts-m1"]["ok"] is False and p["restarts-any"]["value"] == 1, p
    st = lab.wait(attempt, lambda s: probes(s)["uptime-m1"]["value"] is not None, 60, "model-1 up again")
    p = probes(st)
    assert p["uptime-m1"]["value"] < p["uptime-gw"]["value"], (p["uptime-m1"], p["uptime-gw"])
    lab.abort_active()


def _events(lab: Lab, attempt: str) -> list[dict[str, Any]]:
    return list(lab.call("GET", f"/api/attempts/{attempt}/events"))


def test_a_control_pages_from_its_alert_and_doing_nothing_is_the_fix(lab: Lab) -> None:
    attempt = lab.start(control(), seed=2)
    st = lab.wait(attempt, lambda s: s["paged"] or s["status"] != "running", 300, "the page")
    assert st["paged"], st
    assert all(p["ok"] is not False for p in st["steady_state"]), st["steady_state"]
    lab.call("POST", f"/api/attempts/{attempt}/fixed")
    st = lab.wait(attempt, lambda s: not s["fix"]["verifying"], 240, "the verdict")
    assert (st["fix"]["last"] or "").startswith("verified"), st["fix"]
    lab.wait(attempt, lambda s: s["status"] != "running", 120, "the end")
    paged = [e for e in _events(lab, attempt) if e["type"] == "paged"]
    assert len(paged) == 1 and "latency alert" in paged[0]["data"]["reason"], paged
    debrief = lab.call("GET", f"/api/attempts/{attempt}/debrief")
    assert debrief["broke"] and debrief["fixed"], debrief


def test_restart_then_claim_on_a_control_is_rejected_naming_the_restarts_probe(lab: Lab) -> None:
    doc = copy.deepcopy(control())
    attempt = lab.start(doc, seed=1)
    lab.wait(attempt, lambda s: s["paged"] or s["status"] != "running", 300, "the page")
    res = lab.call("POST", "/api/console/restart", {"service": "model-1"})
    assert "restarted" in res["summary"], res
    lab.call("POST", f"/api/attempts/{attempt}/fixed")
    st = lab.wait(attempt, lambda s: not s["fix"]["verifying"], 300, "the verdict")
    told = st["fix"]["last"] or ""
    assert told.startswith("rejected") and "no-restarts = 1 (wanted max 0" in told, told
    lab.abort_active()
