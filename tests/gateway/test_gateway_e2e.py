"""End to end with the real parts: feature store, two real model servers (v1 and v2 loaded), the gateway.

The models are the registry's defaults: $FAULTLINE_HOME/registry (or ./.faultline/registry), read only. When
they do not exist, the trainer builds them into a tmp dir; if that is impossible the module is skipped,
saying why.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from gwstack import Proc, http, metric, start_gateway, start_modelserver
from kit import REPO, train_defaults

from services.trainer.generator import Generator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = Path(os.environ.get("FAULTLINE_HOME", REPO / ".faultline"))
    if (home / "registry" / "versions" / "v1" / "model.pt").exists() and (home / "registry/versions/v2").exists():
        return home / "registry"
    if not (REPO / "services" / "trainer" / "__main__.py").exists():
        pytest.skip("no default models in the registry and no trainer to build them")
    tmp_home = tmp_path_factory.mktemp("home")
    result = train_defaults(tmp_home, timeout=900)
    if result.returncode != 0:
        pytest.skip(f"could not build default models: {result.stderr[-500:]}")
    return tmp_home / "registry"


@pytest.fixture(scope="module")
def stack(log_dir: Path, featurestore: Proc, registry: Path) -> Iterator[dict[str, Proc]]:
    if not (REPO / "services" / "modelserver" / "__main__.py").exists():
        pytest.skip("services.modelserver does not exist yet")
    models = {name: start_modelserver(log_dir, registry, name) for name in ("model-1", "model-2")}
    gateway = None
    try:
        for proc in models.values():
            proc.wait_ready()
        gateway = start_gateway(log_dir, featurestore.url, {n: p.url for n, p in models.items()},
                                {"health_check_ms": 500}, name="gw-e2e")
        yield {"gateway": gateway, **models}
    finally:
        for proc in [gateway, *models.values()]:
            if proc is not None:
                proc.stop()


def test_generator_traffic_scores_end_to_end(stack: dict[str, Proc]) -> None:
    gateway = stack["gateway"]
    rows = Generator(seed=7, n_cards=500).sample(150)
    replicas, decisions = Counter(), Counter()
    for row in rows:
        label = row.pop("label")
        r = http.post(gateway.url + "/v1/score", json=row)
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0.0 <= body["score"] <= 1.0
        assert body["model_version"] == "v1" and body["fallback"] is None
        assert body["timings"]["attempts"][-1]["outcome"] == "ok"
        replicas[body["replica"]] += 1
        decisions[body["decision"]] += 1
        f = http.post(gateway.url + "/v1/feedback", json={"transaction_id": row["transaction_id"], "label": label})
        assert f.status_code == 202
    assert set(replicas) == {"model-1", "model-2"}
    assert decisions["approve"] > decisions["decline"]  # fraud is rare
    text = http.get(gateway.url + "/metrics").text
    assert sum(metric(text, "gateway_feedback_total", model_version="v1", outcome=o) for o in
               ("tp", "fp", "tn", "fn")) == 150
    assert metric(text, "gateway_predictions_total", model_version="v1") == 150


def test_real_null_and_new_category_inputs_are_scored(stack: dict[str, Proc]) -> None:
    row = Generator(seed=7, n_cards=500).sample(1)[0]
    row.pop("label")
    row.update(device_age_days=None, merchant_category="crypto_exchange", country="ZZ")
    r = http.post(stack["gateway"].url + "/v1/score", json=row)
    assert r.status_code == 200, r.text
    assert 0.0 <= r.json()["score"] <= 1.0


def test_canary_between_real_versions(stack: dict[str, Proc]) -> None:
    gateway = stack["gateway"]
    http.patch(gateway.url + "/admin/config", json={"routing": {"v1": 0.5, "v2": 0.5}}).raise_for_status()
    try:
        rows = Generator(seed=7, n_cards=500).sample(100)
        versions = Counter()
        for row in rows:
            row.pop("label")
            versions[http.post(gateway.url + "/v1/score", json=row).json()["model_version"]] += 1
        assert 25 <= versions["v2"] <= 75 and versions["v1"] + versions["v2"] == 100
    finally:
        http.patch(gateway.url + "/admin/config", json={"routing": {}}).raise_for_status()


def test_unloaded_version_is_rejected_not_ejected(stack: dict[str, Proc]) -> None:
    gateway = stack["gateway"]
    http.patch(gateway.url + "/admin/config", json={"routing": {"v9": 1}, "model_fallback": "rule_based"})
    try:
        row = Generator(seed=7, n_cards=500).sample(1)[0]
        row.pop("label")
        body = http.post(gateway.url + "/v1/score", json=row).json()
        assert body["fallback"] == "rule_based"
        assert {a["outcome"] for a in body["timings"]["attempts"]} == {"rejected"}
        state = http.get(gateway.url + "/v1/replicas").json()["replicas"]
        assert not any(s["ejected"] or s["breaker"] != "closed" for s in state.values())
    finally:
        http.patch(gateway.url + "/admin/config", json={"routing": {}, "model_fallback": "fail"}).raise_for_status()


def test_killed_replica_traffic_moves_to_the_survivor(stack: dict[str, Proc]) -> None:
    gateway = stack["gateway"]
    stack["model-2"].popen.kill()  # the real thing dies: connections refused from now on
    stack["model-2"].popen.wait(timeout=10)
    rows = Generator(seed=8, n_cards=500).sample(60)
    served = Counter()
    for row in rows:
        row.pop("label")
        r = http.post(gateway.url + "/v1/score", json=row)
        assert r.status_code == 200, r.text
        served[r.json()["replica"]] += 1
    assert served == {"model-1": 60}
    state = http.get(gateway.url + "/v1/replicas").json()["replicas"]["model-2"]
    assert state["ejected"] or not state["healthy"]
