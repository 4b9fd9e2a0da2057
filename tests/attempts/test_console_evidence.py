"""The evidence operations on the shared real stack (sandbox): distributions, decisions, status_codes, upstreams,
inspect and send — through the API, the CLI and the browser's console, all of which share lab.console.run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from attemptkit import LabApi

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def traffic(api: LabApi) -> None:
    # A fresh load generator at a known rate and profile: the worker's shared stack has run other files first, and
    # a CI run once found one "running" that sent nothing for two minutes (no decisions, no score route).
    if api.call("GET", "/api/traffic").get("running"):
        api.call("DELETE", "/api/traffic")
    api.call("POST", "/api/traffic", {"rps": 30, "profile": "baseline"})


def cli(api: LabApi, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", *args, "--lab-url", api.url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_distributions_show_quantiles_and_histograms_live_against_training(api: LabApi, traffic: None) -> None:
    # The live window is the last 2,000 rows: an earlier file's attempt on this worker's shared stack (unit-change)
    # can still hold its median until fresh rows are the majority (~35 s at 30 rps); a live window in other units
    # than training never gets there.
    def fresh(d: dict[str, Any]) -> bool:
        ratio = next((f.get("median_ratio") for f in d.get("features", []) if f["name"] == "amount"), None)
        return d.get("window", 0) >= 50 and 0.2 < (ratio or 0) < 5

    res = api.console_until("distributions", fresh, 120)
    feats = {f["name"]: f for f in res["data"]["features"]}
    assert {"amount", "hour", "device_age_days", "merchant_category", "country", "card_present", "score"} <= set(feats)
    amount = feats["amount"]
    ref, live = amount["reference"], amount["live"]
    assert ref["p5"] <= ref["p25"] <= ref["p50"] <= ref["p75"] <= ref["p95"]
    assert live["p50"] is not None and 0.2 < amount["median_ratio"] < 5  # normal traffic: same units as training
    assert abs(sum(b["reference"] for b in amount["histogram"]) - 1) < 0.01
    assert abs(sum(b["live"] for b in amount["histogram"]) - 1) < 0.01
    assert "P50" in res["text"] and "amount" in res["text"] and "score" in res["text"]
    one = api.console("distributions", feature="amount")
    assert [f["name"] for f in one["data"]["features"]] == ["amount"] and "histogram" in one["text"]
    assert "feature" in api.console("distributions", 422, feature="nope")["detail"]


def test_drift_picked_feature_shows_its_detail(api: LabApi, traffic: None) -> None:
    res = api.console_until("drift", lambda d: "distribution" in d, feature="amount")
    assert res["data"]["distribution"]["name"] == "amount" and "P95" in res["text"]


def test_decisions_show_decline_rate_score_histogram_confusion_and_cost(api: LabApi, traffic: None) -> None:
    res = api.console_until("decisions", lambda d: d.get("decline_rate") is not None and d["score"].get("buckets"))
    d = res["data"]
    assert 0 <= d["decline_rate"] <= 1
    assert abs(sum(f for _, f in d["score"]["buckets"]) - 1) < 0.01
    assert set(d["confusion"]) == {"labels", "tp", "fp", "tn", "fn"}
    assert d["costs"]["missed_fraud"] > d["costs"]["false_decline"]
    for word in ("decline rate", "score histogram", "confusion matrix", "cost-weighted loss"):
        assert word in res["text"]


def test_status_codes_per_route_and_upstream_latency(api: LabApi, traffic: None) -> None:
    res = api.console_until("status_codes", lambda d: "score" in (d["services"].get("gateway") or {}),
                            service="gateway")
    assert res["data"]["services"]["gateway"]["score"].get("200", 0) > 0
    assert "score" in res["text"] and "200" in res["text"]
    up = api.console_until("upstreams", lambda d: len(d["upstreams"]) >= 2)
    assert "feature-store" in up["data"]["upstreams"] or any("feature" in u for u in up["data"]["upstreams"])
    assert any(u.startswith("model-") for u in up["data"]["upstreams"])
    f = next(iter(up["data"]["upstreams"].values()))
    assert f["p50_ms"] is not None and f["p99_ms"] >= f["p50_ms"] and "P99 MS" in up["text"]
    assert "unknown service" in api.console("status_codes", 422, service="nope")["detail"]


def test_inspect_and_send_test_a_hypothesis(api: LabApi, traffic: None) -> None:
    sent = api.console("send", amount=42.5, merchant_category="grocery", hour=13, country="US", card_present=True)
    d = sent["data"]
    assert d["status"] == 200 and 0 <= d["answer"]["score"] <= 1 and d["answer"]["decision"] in ("approve", "decline")
    assert "score" in sent["text"] and d["request"]["transaction_id"].startswith("console-")
    got = api.console("inspect", limit=200)
    mine = [it for it in got["data"]["items"] if it["transaction_id"] == d["request"]["transaction_id"]]
    assert mine and mine[0]["amount"] == pytest.approx(42.5) and mine[0]["score"] == pytest.approx(d["answer"]["score"])
    assert "DECISION" in got["text"]
    bad = api.console("send", 422, amount=-1)
    assert "amount" in bad["detail"]
    refused = api.console("send", card_id="no-such-card", amount=5)
    assert refused["data"]["status"] == 422 and "card" in refused["text"]


def test_cli_prints_the_same_evidence(api: LabApi, traffic: None) -> None:
    api.console_until("distributions", lambda d: d.get("window", 0) >= 50)
    assert "P50" in cli(api, "distributions")
    assert "confusion matrix" in cli(api, "decisions")
    assert "ROUTE" in cli(api, "status-codes", "gateway")
    assert "P99 MS" in cli(api, "upstreams")
    assert "DECISION" in cli(api, "inspect", "--limit", "5")
    assert "decision" in cli(api, "send", "12.5", "--country", "GB")


MARKER_ARGS: dict[str, dict[str, Any]] = {"metrics": {"service": "gateway"}, "status_codes": {"service": "gateway"},
                                          "send": {"amount": 10.0}, "inspect": {"limit": 5}}


def test_every_operation_shows_the_evidence_it_is_credited_with(api: LabApi, traffic: None) -> None:
    """lab/console/evidence.py's SHOWS (what tests/scenario's ideal-path check trusts) against real output."""
    from lab.console.evidence import SHOWS

    api.console_until("decisions", lambda d: d["score"].get("buckets") and d.get("decline_rate") is not None)
    api.console_until("distributions", lambda d: d.get("window", 0) >= 50)
    for op, terms in SHOWS.items():
        text = api.console(op, **MARKER_ARGS.get(op, {}))["text"]
        for term, marker in terms.items():
            assert marker.lower() in text.lower(), (op, term, marker, text[:2000])
