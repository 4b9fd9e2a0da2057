"""The feature store as a real process: seeding, lookups, 404/400, fault knobs, config validation, metrics."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from gwstack import Proc, http, metric, start_featurestore

from services.trainer.generator import Generator


@pytest.fixture
def restore(featurestore: Proc):
    yield
    http.patch(featurestore.url + "/admin/config", json={"latency_ms": 0, "error_rate": 0, "cache": True})


def test_seeded_from_generator_and_served(featurestore: Proc, log_dir: Path) -> None:
    expected = {row["card_id"]: row for row in Generator(seed=7, n_cards=500).cards()}
    for card_id in ("c000000", "c000123", "c000499"):
        r = http.get(f"{featurestore.url}/v1/features/{card_id}")
        assert r.status_code == 200
        assert r.json() == expected[card_id]
    with sqlite3.connect(log_dir / "features.db") as conn:
        assert conn.execute("SELECT count(*) FROM cards").fetchone()[0] == 500
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_and_malformed_card_ids(featurestore: Proc) -> None:
    r = http.get(f"{featurestore.url}/v1/features/c999999")
    assert r.status_code == 404
    assert r.json() == {"detail": "unknown card_id c999999"}
    r = http.get(f"{featurestore.url}/v1/features/a%20b")
    assert r.status_code == 400
    assert "card_id" in r.json()["detail"]
    r = http.post(f"{featurestore.url}/v1/features/c000001")
    assert r.status_code == 405


def test_sample_gives_fresh_transactions_on_its_own_cards(featurestore: Proc) -> None:
    """GET /v1/sample: what the lab's `trace` sends, on cards this store knows (n_cards=500 here), no labels."""
    first = http.get(f"{featurestore.url}/v1/sample", params={"n": 20}).json()["transactions"]
    second = http.get(f"{featurestore.url}/v1/sample", params={"n": 20}).json()["transactions"]
    assert len(first) == 20 and first != second
    for row in first:
        assert "label" not in row and {"transaction_id", "card_id", "amount", "merchant_category"} <= set(row)
        assert http.get(f"{featurestore.url}/v1/features/{row['card_id']}").status_code == 200
    for bad in (0, 101, "x"):
        r = http.get(f"{featurestore.url}/v1/sample", params={"n": bad})
        assert r.status_code == 422 and "n" in r.text


def test_sqlite_read_path_matches_cache(featurestore: Proc, restore: None) -> None:
    cached = http.get(f"{featurestore.url}/v1/features/c000042").json()
    r = http.patch(featurestore.url + "/admin/config", json={"cache": False})
    assert r.status_code == 200 and r.json()["cache"] is False
    assert http.get(f"{featurestore.url}/v1/features/c000042").json() == cached
    assert http.get(f"{featurestore.url}/v1/features/c777777").status_code == 404


def test_latency_and_error_rate_knobs(featurestore: Proc, restore: None) -> None:
    http.patch(featurestore.url + "/admin/config", json={"latency_ms": 300})
    started = time.monotonic()
    assert http.get(f"{featurestore.url}/v1/features/c000001").status_code == 200
    assert time.monotonic() - started >= 0.29
    http.patch(featurestore.url + "/admin/config", json={"latency_ms": 0, "error_rate": 1.0})
    r = http.get(f"{featurestore.url}/v1/features/c000001")
    assert r.status_code == 503
    assert "error_rate" in r.json()["detail"]
    http.patch(featurestore.url + "/admin/config", json={"error_rate": 0.5})
    codes = [http.get(f"{featurestore.url}/v1/features/c000001").status_code for _ in range(200)]
    assert 40 <= codes.count(503) <= 160  # binomial(200, 0.5): far outside 6 sigma otherwise


@pytest.mark.parametrize(
    "patch",
    [{"latency_ms": -1}, {"error_rate": 1.5}, {"error_rate": "high"}, {"nope": 1}, {"cache": "yes"}],
)
def test_config_validation(featurestore: Proc, patch: dict) -> None:
    before = http.get(featurestore.url + "/admin/config").json()
    r = http.patch(featurestore.url + "/admin/config", json=patch)
    assert r.status_code == 422
    assert next(iter(patch)) in r.json()["detail"]
    assert http.get(featurestore.url + "/admin/config").json() == before


def test_metrics_and_health(featurestore: Proc) -> None:
    http.get(f"{featurestore.url}/v1/features/c000001")
    http.get(f"{featurestore.url}/v1/features/c999999")
    text = http.get(featurestore.url + "/metrics").text
    assert metric(text, "featurestore_requests_total", code="200") >= 1
    assert metric(text, "featurestore_requests_total", code="404") >= 1
    assert metric(text, "featurestore_request_latency_seconds_count") >= 2
    assert metric(text, "process_resident_memory_bytes") > 0
    assert http.get(featurestore.url + "/healthz").json()["status"] == "ok"


def test_existing_db_is_reused_not_reseeded(tmp_path: Path) -> None:
    db = tmp_path / "fs.db"
    first = start_featurestore(tmp_path, db, n_cards=50)
    first.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE cards SET txn_count_24h = 99 WHERE card_id = 'c000003'")
    second = start_featurestore(tmp_path, db, n_cards=50)
    try:
        assert http.get(f"{second.url}/v1/features/c000003").json()["txn_count_24h"] == 99
    finally:
        second.stop()


def test_no_torch_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys, services.featurestore.app, services.featurestore.__main__, services.gateway.app, "
        "services.gateway.__main__; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
