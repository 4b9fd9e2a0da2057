"""An attempt at unit-change on the shared real stack, investigated with the evidence operations: the console's
logs start at the scenario clock, the distributions show the amount's median about a hundred times the training
median, decisions show the declines, `send` tests dollars against cents, restarts count from the attempt; and the
debrief quotes the figures this attempt measured (a `measured` journal event), not numbers from the YAML."""

from __future__ import annotations

import json
import re
import time

import pytest
from attemptkit import LabApi

pytestmark = pytest.mark.stack
SEED, SCALE = 3, 0.2



def test_unit_change_evidence_and_measured_debrief(api: LabApi) -> None:
    st = api.call("POST", "/api/attempts", {"scenario_id": "unit-change", "seed": SEED, "time_scale": SCALE}, 201)
    attempt = st["attempt_id"]
    try:
        st = api.wait(attempt, lambda s: s["phase"] == "running", 180, "the scenario clock")
        clock_started = time.time() - st["clock_s"]

        # logs: only what happened since the scenario clock started (the set-up is not part of the incident)
        logs = api.console("logs", service="gateway", tail=200)
        assert "since the scenario clock started" in logs["text"]
        assert all(ln["t"] > clock_started - 1.5 for ln in logs["data"]["lines"])
        assert logs["data"]["since"] is not None

        # the incident page's charts start at this attempt, marked at its start and at T+0
        page = api.http.get(f"/attempts/{attempt}")
        assert page.status_code == 200 and "data-since=" in page.text
        history = json.loads(re.search(r'<script type="application/json" id="chart-history">(.*?)</script>',
                                       page.text, re.S).group(1))
        assert [m["label"] for m in history["markers"]] == ["attempt", "T+0"]
        assert history["t"] and min(history["t"]) >= history["since"] == st["started_at"]

        # restarts count from this attempt
        status = api.console("status")["data"]
        assert all(s["restarts"] == 0 for s in status["services"]), status["services"]

        dist = api.console_until("distributions", lambda d: (d["features"][0].get("median_ratio") or 0) > 20, 240, 2,
                      feature="amount")
        amount = dist["data"]["features"][0]
        assert amount["live"]["p50"] > 20 * amount["reference"]["p50"]
        assert "histogram" in dist["text"]
        decisions = api.console_until("decisions", lambda d: (d.get("decline_rate") or 0) > 0.5, 120, 2)
        assert "decline rate" in decisions["text"]

        dollars = api.console("send", amount=42.5, merchant_category="grocery", country="US", hour=14)["data"]
        cents = api.console("send", amount=4250.0, merchant_category="grocery", country="US", hour=14)["data"]
        assert dollars["status"] == cents["status"] == 200
        assert cents["answer"]["score"] > dollars["answer"]["score"]
        inspected = api.console("inspect", limit=50)["data"]["items"]
        assert any(it["transaction_id"] == cents["request"]["transaction_id"] for it in inspected)
    finally:
        api.call("POST", f"/api/attempts/{attempt}/abort", {"reason": "test done"}, (200, 409))

    events = api.call("GET", f"/api/attempts/{attempt}/events")
    measured = [e for e in events if e["type"] == "measured"]
    assert len(measured) == 1
    series = measured[0]["data"]["series"]
    # the monitor refreshes drift every 10 s, so its last sample can trail the console's live read above (a CI run
    # measured 16.3 against the console's > 20); healthy traffic reads ~1, the unit change ramps towards 100
    assert series["drift.amount.median_ratio"]["max"] > 10 and series["drift.amount.psi"]["max"] > 0.25
    assert series["decisions.decline_rate"]["max"] > 0.5
    ops = [e["data"]["op"] for e in events if e["type"] == "console_op"]
    assert ops.count("send") == 2 and "distributions" in ops  # journaled like every op

    # the debrief chart plots the scenario's own steady-state probes
    page = api.http.get(f"/attempts/{attempt}/debrief")
    chart = json.loads(re.search(r'<script type="application/json" id="timeline-data">(.*?)</script>',
                                 page.text, re.S).group(1))
    assert {line["id"] for line in chart["lines"]} >= {"accuracy", "errors", "p99"}
    assert all(len(line["values"]) == len(chart["t"]) for line in chart["lines"])

    d = api.call("GET", f"/api/attempts/{attempt}/debrief")
    psi = f"{series['drift.amount.psi']['max']:.3g}"
    assert psi in d["what_happened"] and "[[" not in d["what_happened"]
    assert any(psi in step for step in d["ideal_path"]) and not any("[[" in step for step in d["ideal_path"])
    assert d["measured"]["drift.amount.psi"]["max"] == series["drift.amount.psi"]["max"]
