"""Revert is idempotent: the one fault kind whose double revert tests/faults does not exercise (memory.batch_blowup,
whose test there ends in an OOM kill), and revert-all twice. Every other kind's second revert is in tests/faults
(see docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from relkit import score_ok, stack_healthy, wait_until

from services.trainer.generator import Generator

pytestmark = pytest.mark.stack


def _snapshot(stack: Any, name: str) -> dict[str, Any]:
    svc = stack.service(name)
    config = httpx.get(stack.topology.service_url(name) + "/admin/config", timeout=30, trust_env=False).json()
    return {"pid": svc["pid"], "argv": svc["argv"], "limit": svc["memory_limit_bytes"], "config": config}


def test_batch_blowup_reverted_twice_leaves_the_replica_as_it_was(stack: Any) -> None:
    http = httpx.Client(timeout=120, trust_env=False)
    faults = stack.lab_url + "/api/faults"
    try:
        before = _snapshot(stack, "model-1")
        r = http.post(faults, json={"id": "rel-blowup", "kind": "memory", "action": "batch_blowup", "target": "model-1",
                                "params": {"max_batch_size": 256, "headroom_mb": 512}})
        assert r.status_code == 201, r.text
        during = _snapshot(stack, "model-1")
        assert during["config"]["max_batch_size"] == 256 and during["limit"] != before["limit"]
        assert during["argv"] != before["argv"]  # persisted in the start-up config too

        first = http.delete(faults + "/rel-blowup")
        assert first.status_code == 200 and first.json()["active"] is False, first.text
        second = http.delete(faults + "/rel-blowup")  # again: harmless, and says what it did
        assert second.status_code == 200 and second.json()["active"] is False, second.text
        after = _snapshot(stack, "model-1")
        assert after == before  # same process, argv, limit and live config

        # revert-all with nothing active, twice
        for _ in range(2):
            r = http.delete(faults)
            assert r.status_code == 200 and r.json()["reverted"] == [], r.text
    finally:
        http.delete(faults)
        http.close()
    wait_until(lambda: stack_healthy(stack.status()), 60, what="healthy stack")
    txn = Generator(seed=29).sample(1)[0]
    txn.pop("label")
    score_ok(stack.public_url, {**txn, "transaction_id": "reliability-after-double-revert"})
