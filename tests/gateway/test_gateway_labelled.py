"""Late labels on the gateway: feedback stamps the label into the scored row, GET /v1/recent?labelled=1|0 serves
the rows that have (or still wait for) theirs, bad queries are 422s. Real processes: the gateway, the real feature
store and scripted replica peers (tests/gateway/peer.py); the labelled ring's bookkeeping is also checked directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gwstack import Proc, http, start_gateway, transaction

from services.common.schema import MODEL_FEATURES
from services.gateway.ledger import LABELLED_CAPACITY, LabelledRing, Ledger


@pytest.fixture(scope="module")
def gateway(log_dir: Path, featurestore: Proc, peers: dict[str, Proc]) -> Iterator[Proc]:
    models = {name: peer.url for name, peer in peers.items()}
    proc = start_gateway(log_dir, featurestore.url, models, {"health_check_ms": 0}, name="gw-labelled")
    yield proc
    proc.stop()


def score(gateway: Proc, tx: dict) -> None:
    r = http.post(gateway.url + "/v1/score", content=json.dumps(tx), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def feedback(gateway: Proc, tid: str, label: int) -> httpx.Response:
    return http.post(gateway.url + "/v1/feedback", json={"transaction_id": tid, "label": label})


def recent(gateway: Proc, **params: object) -> httpx.Response:
    return http.get(gateway.url + "/v1/recent", params=params)


def test_feedback_stamps_the_label_and_labelled_filters(gateway: Proc) -> None:
    mark = time.time()
    tids = [f"lab-{i}" for i in range(6)]
    for i, tid in enumerate(tids):
        score(gateway, transaction(i, transaction_id=tid, hour=i + 3, device_age_days=None if i == 1 else 9.5))
    # labels arrive late and out of order; two transactions never get one
    before_label = time.time()
    for tid, label in (("lab-3", 1), ("lab-0", 0), ("lab-1", 1), ("lab-4", 0)):
        assert feedback(gateway, tid, label).status_code == 202

    body = recent(gateway, labelled=1, since=mark, limit=100).json()
    items = body["items"]
    assert [r["transaction_id"] for r in items] == ["lab-3", "lab-0", "lab-1", "lab-4"]  # in label order
    assert [r["label"] for r in items] == [1, 0, 1, 0]
    assert body["count"] == 4 and body["total_labelled"] >= 4 and body["labelled_held"] >= 4
    for row in items:
        assert set(MODEL_FEATURES) <= set(row) and row["labelled_at"] >= before_label >= row["ts"] > mark
        assert row["model_version"] == "v1" and row["decision"] in ("approve", "decline")
    lab1 = items[2]
    assert lab1["device_age_days"] is None and lab1["hour"] == 4 and isinstance(lab1["hour"], int)
    assert lab1["card_present"] is True and lab1["merchant_category"] == "grocery"

    # the row in the recent ring carries its label too; the unlabelled ones are what labelled=0 serves
    plain = {r["transaction_id"]: r for r in recent(gateway, since=mark, limit=100).json()["items"]}
    assert plain["lab-3"]["label"] == 1 and "labelled_at" in plain["lab-3"]
    assert "label" not in plain["lab-2"]
    waiting = recent(gateway, labelled=0, since=mark, limit=100).json()["items"]
    assert [r["transaction_id"] for r in waiting] == ["lab-2", "lab-5"]

    # limit keeps the most recently labelled; a second label changes nothing
    assert [r["transaction_id"] for r in recent(gateway, labelled=1, since=mark, limit=2).json()["items"]] == [
        "lab-1", "lab-4"]
    assert feedback(gateway, "lab-3", 0).status_code == 409
    assert recent(gateway, labelled=1, since=mark, limit=100).json()["count"] == 4
    # `since` is on the scoring time: rows scored before it are left out even if labelled after it
    later = recent(gateway, labelled=1, since=items[2]["ts"], limit=100).json()["items"]
    assert [r["transaction_id"] for r in later] == ["lab-3", "lab-4"]


@pytest.mark.parametrize("params", [
    {"labelled": "yes"}, {"labelled": "2"}, {"labelled": ""}, {"labelled": "true"},
    {"labelled": 1, "limit": LABELLED_CAPACITY + 1}, {"labelled": 0, "limit": 10_001}, {"limit": 10_001},
    {"labelled": 1, "since": "inf"}, {"labelled": 1, "colour": "red"},
])
def test_bad_recent_queries_are_422_with_a_message(gateway: Proc, params: dict) -> None:
    r = recent(gateway, **params)
    assert r.status_code == 422, (params, r.text)
    assert r.json()["detail"]


def test_labelled_accepts_a_limit_beyond_the_recent_ring(gateway: Proc) -> None:
    r = recent(gateway, labelled=1, limit=LABELLED_CAPACITY)
    assert r.status_code == 200 and "total_labelled" in r.json()


def _row(i: int, **extra: object) -> dict:
    row = {"amount": 10.0 + i, "hour": i % 24, "device_age_days": None, "txn_count_24h": 2,
           "avg_amount_30d": 45.5, "account_age_days": 700, "merchant_category": "grocery", "country": "US",
           "card_present": bool(i % 2), "home_country": "DE", "transaction_id": f"r{i}", "card_id": "c000001",
           "score": 0.25, "decision": "approve", "model_version": "v1", "replica": "model-1", "fallback": None,
           "ts": 1000.0 + i, "label": i % 3 == 0, "labelled_at": 1002.0 + i}
    row["label"] = int(row["label"])
    row.update(extra)
    return row


def test_labelled_ring_wraps_keeps_the_newest_and_round_trips_rows() -> None:
    ring = LabelledRing(capacity=5)
    for i in range(8):
        assert ring.append(_row(i))
    assert ring.size == 5 and ring.total == 8
    rows = ring.last(100)
    assert [r["transaction_id"] for r in rows] == ["r3", "r4", "r5", "r6", "r7"]
    assert rows[0] == _row(3)  # every key and type as it went in
    assert [r["transaction_id"] for r in ring.last(2)] == ["r6", "r7"]
    assert [r["transaction_id"] for r in ring.last(100, since=1005.0)] == ["r6", "r7"]
    # rows whose features cannot be kept (a feature store answering strings) are skipped, not a 500
    assert not ring.append(_row(9, txn_count_24h="many")) and ring.skipped == 1
    assert not ring.append(_row(10, card_present="yes")) and ring.skipped == 2
    assert ring.total == 8


def test_ledger_stamps_only_rows_still_in_the_recent_ring() -> None:
    ledger = Ledger(recent_capacity=3, labelled_capacity=10)
    for i in range(5):
        row = _row(i)
        for key in ("label", "labelled_at"):
            row.pop(key)
        ledger.remember(row["transaction_id"], 0.2, "approve", "v1", "model-1", row)
    assert ledger.label("r0", 1)[0] == "recorded"  # counted, but its features have left the recent ring
    assert ledger.label("r4", 1)[0] == "recorded"
    assert [r["transaction_id"] for r in ledger.last(10, labelled=True)] == ["r4"]
    assert [r["transaction_id"] for r in ledger.last(10, labelled=False)] == ["r2", "r3"]
