"""The console's `reference [version]` and `deploys`' threshold, on the session's real stack: what an author
calibrates ML-level probes with, read from the registry's real reference sample and the gateway's real config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest


@pytest.fixture(scope="module")
def http(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.lab_url, timeout=60, trust_env=False) as client:
        yield client


def test_reference_gives_score_quantiles_histogram_and_the_expected_decline_rate(http: httpx.Client) -> None:
    r = http.post("/api/console/reference", json={})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["version"] == "v1" and data["rows"] > 100
    s = data["scores"]
    q = [s["quantiles"][k] for k in ("p01", "p10", "p50", "p90", "p99")]
    assert q == sorted(q) and q[0] >= 0 and q[-1] <= 1, s["quantiles"]
    assert len(s["histogram"]) == 20 and abs(sum(b[2] for b in s["histogram"]) - 1) < 1e-3
    config = http.post("/api/console/config_show", json={"service": "gateway"}).json()["data"]
    live = config.get("config", config).get("decision_threshold")
    assert s["gateway_threshold"] == live
    # the lab starts the gateway at the served model's calibrated threshold: the decline rate to expect is the share
    # of reference scores at or above that threshold
    assert live == pytest.approx(s["threshold"])
    assert s["expected_decline_rate"] == s["decline_share"]
    assert 0 < s["threshold"] < 1 and 0 <= s["decline_share"] <= s["decline_share_at"]["0.5"] + 0.05
    names = {f["name"]: f for f in data["features"]}
    assert names["amount"]["type"] == "numeric" and names["amount"]["quantiles"]["p50"] > 0
    assert names["merchant_category"]["type"] == "categorical" and names["merchant_category"]["top"]
    text = r.json()["text"]
    assert "gateway decision threshold" in text and "p50" in text


def test_reference_of_an_unknown_version_is_a_4xx_naming_it(http: httpx.Client) -> None:
    r = http.post("/api/console/reference", json={"version": "v99"})
    assert 400 <= r.status_code < 500, r.text
    assert "v99" in r.json()["detail"]
    r = http.post("/api/console/reference", json={"version": "not a version"})
    assert r.status_code == 422, r.text


def test_deploys_text_table_shows_the_calibrated_threshold(http: httpx.Client) -> None:
    r = http.post("/api/console/deploys", json={})
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert "THRESHOLD" in text.splitlines()[0]
    v1 = next(m for m in r.json()["data"]["versions"] if m["version"] == "v1")
    assert f"{v1['metrics']['threshold']:.3f}" in text
    assert f"gateway decision threshold: {v1['metrics']['threshold']:g}" in text
