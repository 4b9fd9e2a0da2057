"""POST /v1/train with labelled rows inline (what the lab's retrain sends): a real registry service on a copy of the
trained registry. Valid rows give a staging version whose lineage says where the data came from; bad bodies are
4xx answers with a message, decided before any trainer child starts."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlprocs import Proc, feature_rows, start_registry

from services.trainer.rows import MAX_ROWS, RowsError, check_rows


@pytest.fixture(scope="module")
def registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    root = tmp_path_factory.mktemp("train-rows") / "registry"
    shutil.copytree(trained_registry, root)
    proc = start_registry(root, root.parent)
    yield proc
    proc.stop()


def labelled(n: int, seed: int, t0: float = 1_800_000_000.0, **shift: Any) -> list[dict[str, Any]]:
    rows, labels = feature_rows(n, seed=seed, **shift)
    # as the gateway serves them: extra keys (ts, ids, score...) come along and are ignored for training
    return [{**r, "label": int(y), "ts": t0 + i * 0.02, "transaction_id": f"t-{i}", "score": 0.1}
            for i, (r, y) in enumerate(zip(rows, labels, strict=True))]


def test_rows_train_a_staging_version_with_provenance(registry: Proc) -> None:
    rows = labelled(1500, seed=5, concept=0.8)
    fraud = sum(r["label"] for r in rows)
    body = {"rows": rows, "epochs": 3, "parent": "v1", "warm_start": True, "seed": 0,
            "origin": "gateway /v1/recent?labelled=1, the last 60 s"}
    t0 = time.monotonic()
    r = registry.client.post("/v1/train", json=body, timeout=300)
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["stage"] == "staging" and meta["version"] not in ("v1", "v2")
    lin = meta["lineage"]
    assert lin["source"] == "rows" and lin["rows"] == 1500 and lin["fraud"] == fraud
    assert lin["parent"] == "v1" and lin["warm_start"] == "v1" and lin["origin"].startswith("gateway")
    assert lin["time_span"] == {"from": rows[0]["ts"], "to": rows[-1]["ts"], "seconds": pytest.approx(29.98)}
    tr = meta["training"]
    assert tr["rows"]["test"] > 0 and 0 < tr["test_fraud"] < fraud and tr["epochs"] == 3
    assert 0.5 < meta["metrics"]["auc"] <= 1.0 and 0 < meta["metrics"]["threshold"] < 1
    assert registry.client.get(f"/v1/models/{meta['version']}/verify").json()["ok"] is True
    # the warm start kept the parent's preprocessing (same inputs, same scaling)
    parent = registry.client.get("/v1/models/v1").json()
    assert meta["preprocessing"] == parent["preprocessing"]
    print(f"trained {meta['version']} on 1,500 rows in {time.monotonic() - t0:.1f}s: {meta['metrics']}")


def _refused(registry: Proc, body: Any, status: int = 422, **kwargs: Any) -> str:
    t0 = time.monotonic()
    r = registry.client.post("/v1/train", json=body, timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert time.monotonic() - t0 < 30  # refused before any training
    return r.json()["detail"]


def test_bad_rows_are_refused_with_a_message(registry: Proc) -> None:
    rows = labelled(400, seed=6)
    legit = [r for r in rows if r["label"] == 0]
    versions = len(registry.client.get("/v1/models").json())
    assert "non-empty list" in _refused(registry, {"rows": []})
    assert "rows[3]: must be an object" in _refused(registry, {"rows": [*rows[:3], "oops", *rows[4:]]})
    assert _refused(registry, {"rows": [*rows[:7], {**rows[7], "amount": "12"}, *rows[8:]]}) == (
        "rows[7].amount: must be a finite number or null")
    assert _refused(registry, {"rows": [{k: v for k, v in rows[0].items() if k != "country"}, *rows[1:]]}) == (
        "rows[0].country: missing")
    assert _refused(registry, {"rows": [*rows[:9], {**rows[9], "label": True}]}) == "rows[9].label: must be 0 or 1"
    assert "at least 200 labelled rows, got 150" in _refused(registry, {"rows": rows[:150]})
    assert "single class" in _refused(registry, {"rows": legit})
    assert "need at least 10 of each" in _refused(registry, {"rows": [*legit, *[r for r in rows if r["label"]][:3]]})
    assert f"at most {MAX_ROWS}" in _refused(registry, {"rows": [0] * (MAX_ROWS + 1)})
    assert "warm_start: needs a parent" in _refused(registry, {"rows": rows, "warm_start": True})
    assert "parent version 'v99'" in _refused(registry, {"rows": rows, "parent": "v99", "warm_start": True})
    assert "origin" in _refused(registry, {"rows": rows, "origin": "x" * 301})
    assert "JSON" in _refused(registry, None, 400, content=b"{not json", headers={"content-type": "application/json"})
    huge = b'{"rows": [' + b'"' + b"x" * (65 * 2**20) + b'"]}'
    assert "MiB" in _refused(registry, None, 413, content=huge, headers={"content-type": "application/json"})
    assert len(registry.client.get("/v1/models").json()) == versions  # nothing was registered


def test_check_rows_summary_and_messages() -> None:
    rows = labelled(300, seed=7, concept=0.8)
    s = check_rows(rows)
    assert s.rows == 300 and s.fraud == sum(r["label"] for r in rows)
    assert s.time_span() == {"from": rows[0]["ts"], "to": rows[-1]["ts"], "seconds": pytest.approx(5.98)}
    no_ts = [{k: v for k, v in r.items() if k != "ts"} for r in rows]
    assert check_rows(no_ts).time_span() is None
    with pytest.raises(RowsError, match=r"rows\[0\]\.device_age_days: must be a finite number or null"):
        check_rows([{**rows[0], "device_age_days": float("nan")}, *rows[1:]])
    with pytest.raises(RowsError, match=r"rows\[2\]\.card_present: must be a string"):
        check_rows([*rows[:2], {**rows[2], "card_present": 1}, *rows[3:]])
