"""An attempt on the shared real stack, through the lab's JSON API: the learner's view hides the fault, console
operations are journaled, hints and the diagnosis are validated, the debrief waits for the end, giving up
reverts the fault and grades, and the stack is back at its baseline afterwards.

slow-replica at time scale 0.2: the link degrades 4-12 s after the stack is healthy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from attemptkit import LabApi

from lab.cli import main
from lab.grader import grade
from lab.scenario import load_scenario, render

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
SEED, SCALE = 5, 0.2


def test_the_catalog_has_no_spoilers(api: LabApi) -> None:
    cards = api.call("GET", "/api/scenarios")
    card = next(c for c in cards if c["id"] == "slow-replica")
    assert card["skills"] == ["networking", "observability", "resilience"]
    one = api.call("GET", "/api/scenarios/slow-replica?seed=1")
    assert "p99" in one["briefing"]
    assert not {"faults", "diagnosis", "hints", "solution", "fix"} & set(one)
    assert "no scenario 'nope'" in api.call("GET", "/api/scenarios/nope", expect=404)["detail"]


def test_start_refuses_bad_requests(api: LabApi) -> None:
    assert "no scenario 'nope'" in api.call("POST", "/api/attempts", {"scenario_id": "nope"}, 404)["detail"]
    api.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "time_scale": 0}, 422)
    api.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "seed": -1}, 422)
    api.call("POST", "/api/attempts", {"scenario_id": "Bad Id"}, 422)


def test_an_attempt_from_start_to_giving_up(api: LabApi, capsys: pytest.CaptureFixture[str]) -> None:
    st = api.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "seed": SEED, "time_scale": SCALE}, 201)
    attempt = st["attempt_id"]
    assert st["phase"] in ("preparing", "warming", "running") and st["status"] == "running"
    again = api.call("POST", "/api/attempts", {"scenario_id": "slow-replica"}, 409)
    assert attempt in again["detail"]
    assert "opens when the attempt ends" in api.call("GET", f"/api/attempts/{attempt}/debrief", expect=409)["detail"]
    api.call("GET", f"/api/attempts/{attempt}/events", expect=409)

    st = api.wait(attempt, lambda s: s["phase"] == "running", 120, "the scenario clock")
    assert st["clock_s"] < 4  # the link degrades at 4 s at the earliest (20 s x 0.2)
    assert "nothing is broken yet" in api.call("POST", f"/api/attempts/{attempt}/fixed", expect=409)["detail"]
    if not api.call("GET", f"/api/attempts/{attempt}")["paged"]:  # the form is closed until the page (or a declare)
        early = {"category": "network", "component": "model-1", "cause": "link-latency"}
        refused = api.call("POST", f"/api/attempts/{attempt}/diagnosis", {"answers": early}, 409)["detail"]
        assert "opens when the page fires" in refused
        api.call("POST", f"/api/attempts/{attempt}/declare")  # a learner who saw it coming opens it early
        assert api.call("GET", f"/api/attempts/{attempt}")["diagnosis"]["declared"]
    st = api.wait(attempt, lambda s: s["paged"], 120, "the page")
    assert st["diagnosis"]["open"]
    slow = render(load_scenario(ROOT / "scenarios" / "slow-replica.yaml"), SEED).values["layout"]["slow"]
    view = json.dumps(st)
    for secret in ("slow-link", "toxic", "fl_", "\"correct\""):
        assert secret not in view, secret  # the learner sees symptoms, never the injected fault or the answer
    assert all("correct" not in o for q in st["diagnosis"]["questions"] for o in q["options"])
    assert any(p["id"] == "p99" and p["ok"] is False for p in st["steady_state"])
    # the sandbox's fault routes neither reveal the attempt's fault nor let anyone revert it outside the console
    listed = api.call("GET", "/api/faults")
    assert listed["hidden"] and listed["active"] == [] and "slow-link" not in json.dumps(listed)
    for method, path in (("GET", "/api/faults/slow-link"), ("DELETE", "/api/faults/slow-link"),
                         ("DELETE", "/api/faults")):
        assert attempt in api.call(method, path, expect=409)["detail"]
    assert "is refused" in api.call("POST", "/api/faults", {"kind": "process", "action": "kill",
                                                            "target": "model-1"}, 409)["detail"]

    # the console, journaled to the attempt
    res = api.console("trace", limit=3)
    assert res["attempt_id"] == attempt and isinstance(res["seq"], int)
    looked = api.console("metrics", service=slow)
    assert "sandbox operation" in api.console("traffic", 409, rps=50)["detail"]
    # the JSON API and the CLI follow the same rule (lab/rules.py): the scenario owns the traffic
    for method, body in (("POST", {"rps": 50}), ("DELETE", None)):
        assert "changing the traffic is refused" in api.call(method, "/api/traffic", body, 409)["detail"]
    api.console("kill", 403, pid=1)
    # the CLI prints each output's seq under it, and `faultline pin N` pins it
    main(["status", "--lab-url", api.url])
    printed = capsys.readouterr().out
    seq = int(re.search(r"faultline pin (\d+)", printed).group(1))
    main(["pin", str(seq), "--lab-url", api.url])
    assert f"#{seq}" in capsys.readouterr().out

    # evidence is what the learner pins: console outputs of this attempt, by their journal seq
    assert api.call("POST", f"/api/attempts/{attempt}/pin", {"seq": res["seq"]})["pinned"] == sorted([res["seq"], seq])
    assert api.call("POST", f"/api/attempts/{attempt}/pin", {"seq": looked["seq"]})["pinned"] == sorted(
        [res["seq"], looked["seq"], seq])
    assert "no console output" in api.call("POST", f"/api/attempts/{attempt}/pin", {"seq": 1}, 404)["detail"]
    api.call("POST", f"/api/attempts/{attempt}/pin", {"seq": "x"}, 422)
    hint = api.call("POST", f"/api/attempts/{attempt}/hint")
    assert hint["index"] == 0 and hint["cost"] == 3 and hint["text"]
    bad = [({"category": "network"}, "missing"), ({"category": "network", "component": slow, "cause": "x",
                                                 "color": "red"}, "unknown question"),
           ({"category": "weather", "component": slow, "cause": "link-latency"}, "not an option")]
    for answers, needle in bad:
        assert needle in api.call("POST", f"/api/attempts/{attempt}/diagnosis", {"answers": answers}, 422)["detail"]
    answers = {"category": "network", "component": slow, "cause": "link-latency"}
    api.call("POST", f"/api/attempts/{attempt}/diagnosis", {"answers": answers})
    assert "already submitted" in api.call("POST", f"/api/attempts/{attempt}/diagnosis", {"answers": answers},
                                           409)["detail"]

    st = api.call("POST", f"/api/attempts/{attempt}/abort", {"reason": "test gives up"})
    assert st["status"] == "aborted" and st["end_reason"] == "test gives up" and st["score"] is not None
    assert "has ended" in api.call("POST", f"/api/attempts/{attempt}/hint", expect=409)["detail"]

    events = api.call("GET", f"/api/attempts/{attempt}/events")
    types = [e["type"] for e in events]
    for t in ("attempt_started", "stack_ready", "fault_applied", "probe_result", "console_op", "evidence_pinned",
              "hint_taken", "diagnosis_submitted", "fault_reverted", "attempt_aborted", "graded"):
        assert t in types, t
    assert types.index("fault_applied") < types.index("console_op") < types.index("attempt_aborted")
    ops = [e["data"] for e in events if e["type"] == "console_op"]
    assert [(o["op"], o["ok"]) for o in ops] == [("trace", True), ("metrics", True), ("traffic", False),
                                                 ("kill", False), ("status", True)]
    assert ops[2]["status"] == 409 and ops[1]["args"] == {"service": slow}

    # the debrief; and the grade is a function of the journal alone
    d = api.call("GET", f"/api/attempts/{attempt}/debrief")
    assert d["broke"] and not d["fixed"] and d["faults"][0]["id"] == "slow-link"
    b = d["breakdown"]["diagnosis"]
    assert b["category"]["correct"] and b["component"]["correct"] and b["cause"]["correct"]
    assert set(b["evidence"]["seen"]) == {"trace", f"metrics service={slow}"}
    assert d["score"] < 50
    scenario = render(load_scenario(ROOT / "scenarios" / "slow-replica.yaml"), SEED, SCALE)
    graded = next(e["data"] for e in events if e["type"] == "graded")
    assert grade(scenario, events) == graded

    # baseline again: no toxic left, nothing drained, idle traffic
    proxies = api.stack.status()["proxies"]
    assert all(not p["toxics"] for p in proxies)
    assert api.service_config("gateway")["drained"] == []
    traffic = api.call("GET", "/api/traffic")
    assert not traffic.get("running") or traffic["target_rps"] == 0

    assert attempt in [a["id"] for a in api.call("GET", "/api/attempts")]
    skills = {s["skill"]: s for s in api.call("GET", "/api/progress")["skills"]}
    assert skills["networking"]["attempts"] >= 1
