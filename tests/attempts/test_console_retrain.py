"""The console's `retrain` on the shared real stack: it trains on the labelled rows the gateway really holds (scored
and labelled here over HTTP), says what it used, and refuses clearly when the window holds too few labels.

Transactions come from the generator over the stack's own card population (seed 7), sent to the gateway's port with
their labels as late feedback, as the load generator would. The version it registers is archived afterwards.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from attemptkit import LabApi

from lab.console.act import RETRAIN_MIN_FRAUD, RETRAIN_MIN_ROWS, _retrain, _retrain_window
from lab.console.base import ConsoleContext, ConsoleError
from services.trainer.generator import Generator

pytestmark = pytest.mark.stack

N_TRANSACTIONS = 1200


def _send_labelled(gateway: str, n: int) -> tuple[int, int]:
    """Score n transactions and send each one's label; (labelled rows, fraud among them)."""
    txs = Generator(seed=7).sample(n, rng=np.random.default_rng(2026))
    run = f"rt{time.time_ns()}"
    for i, tx in enumerate(txs):
        tx["transaction_id"] = f"{run}-{i}"

    def one(tx: dict[str, Any]) -> int:
        label = tx.pop("label")
        with httpx.Client(base_url=gateway, timeout=30, trust_env=False) as c:
            r = c.post("/v1/score", content=json.dumps(tx), headers={"content-type": "application/json"})
            if r.status_code != 200:
                return -1
            f = c.post("/v1/feedback", json={"transaction_id": tx["transaction_id"], "label": label})
            return label if f.status_code == 202 else -1

    with ThreadPoolExecutor(max_workers=6) as pool:
        labels = list(pool.map(one, txs))
    kept = [x for x in labels if x >= 0]
    return len(kept), sum(kept)


def test_retrain_refuses_when_the_window_holds_too_few_labels(api: LabApi) -> None:
    res = api.console("retrain", 409, window_s=0.5)
    detail = res["detail"]
    assert detail.startswith("only ") and "labelled rows" in detail and "in the last 0.5 s" in detail
    assert "labels arrive late, wait or widen --window" in detail
    assert "at most 600 s" in api.console("retrain", 422, window_s=60, wait_s=601)["detail"]
    assert "window_s" in api.console("retrain", 422, window_s=-5)["detail"]


def test_retrain_trains_on_the_gateways_labelled_rows(api: LabApi) -> None:
    gateway = api.stack.topology.service_url("gateway")
    registry = api.stack.topology.service_url("registry")
    t0 = time.time()
    sent, fraud = _send_labelled(gateway, N_TRANSACTIONS)
    assert sent == N_TRANSACTIONS and fraud >= RETRAIN_MIN_FRAUD and sent >= RETRAIN_MIN_ROWS
    window = time.time() - t0 + 5
    res = api.console("retrain", window_s=window)
    data = res["data"]
    version = data["version"]
    try:
        # the load generator may be running too: its labelled rows in the window count as well
        assert data["rows"] >= sent and data["fraud"] >= fraud
        assert data["stage"] == "staging" and data["parent"] == "v1" and data["warm_start"] == "v1"
        # span_s is reported rounded to 0.1 s, so it may exceed the window by up to 0.05 s
        assert data["source"] == "the gateway's labelled recent traffic" and 0 < data["span_s"] <= window + 0.05
        assert 0.5 < data["metrics"]["auc"] <= 1.0 and data["test_rows"] > 0
        text = res["text"]
        assert f"trained {version} on {data['rows']} labelled rows ({data['fraud']} fraud)" in text
        assert "fine-tuned from v1" in text and "auc" in text and f"deploy {version} --canary" in text
        meta = httpx.get(f"{registry}/v1/models/{version}", timeout=10, trust_env=False).json()
        lineage = meta["lineage"]
        assert lineage["source"] == "rows" and lineage["rows"] == data["rows"] and lineage["fraud"] == data["fraud"]
        assert lineage["parent"] == "v1" and lineage["origin"].startswith("gateway /v1/recent?labelled=1")
        assert lineage["time_span"]["seconds"] == pytest.approx(data["span_s"], abs=0.06)
    finally:
        httpx.post(f"{registry}/v1/models/{version}/stage", json={"stage": "archived"}, timeout=10, trust_env=False)


def test_the_window_is_in_scenario_seconds_and_starts_no_earlier_than_the_attempt() -> None:
    now = time.time()
    sandbox = ConsoleContext(lab=None)
    wall, since = _retrain_window(sandbox, 600)
    assert wall == 600 and since == pytest.approx(now - 600, abs=2)
    compressed = ConsoleContext(lab=None, attempt=SimpleNamespace(scale=0.05, started_at=now - 1000))
    wall, since = _retrain_window(compressed, 1200)
    assert wall == pytest.approx(60) and since == pytest.approx(now - 60, abs=2)
    young = ConsoleContext(lab=None, attempt=SimpleNamespace(scale=1.0, started_at=now - 30))
    assert _retrain_window(young, 1800)[1] == pytest.approx(now - 30)


def test_a_wait_stops_when_the_attempt_ends_and_is_bounded() -> None:
    ended = ConsoleContext(lab=None, attempt=SimpleNamespace(scale=0.05, started_at=time.time(), status="aborted"))
    with pytest.raises(ConsoleError, match="attempt ended while retrain was waiting") as err:
        _retrain(ended, SimpleNamespace(window_s=1200, wait_s=1200))
    assert err.value.status == 409
    running = ConsoleContext(lab=None, attempt=SimpleNamespace(scale=0.05, started_at=time.time(), status="running"))
    with pytest.raises(ConsoleError, match=r"at most 600 s of wall clock \(12000 scenario seconds here\)"):
        _retrain(running, SimpleNamespace(window_s=1200, wait_s=12_001))
