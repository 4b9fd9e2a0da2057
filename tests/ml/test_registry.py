"""The registry: stages, checksummed loads (corrupt artifacts refused), broken variants, and its HTTP service."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from mlprocs import Proc, feature_rows, start_registry, variant_versions

from services.registry.store import CorruptArtifact, Registry, RegistryError, VersionNotFound
from services.registry.variants import make_variant
from services.trainer.evaluation import auc


def scores_of(registry: Path, version: str, rows: list[dict]) -> np.ndarray:
    from services.modelserver.runtime import load_version

    model = load_version(Registry(registry), version)
    return model.scores(model.preprocessor.matrix_from_encoded(model.preprocessor.encode_rows(rows)))


@pytest.fixture(scope="module")
def traffic() -> tuple[list[dict], np.ndarray]:
    return feature_rows(20000, seed=41)


def test_load_verifies_sha256(registry_copy: Path) -> None:
    reg = Registry(registry_copy)
    art = reg.load("v1")
    assert art.meta["sha256"] == reg.get("v1")["sha256"] and len(art.data) > 1000
    reg.corrupt_artifact("v1")
    mismatch = r"artifact sha256 mismatch for v1: expected [0-9a-f]{64}, got [0-9a-f]{64}; refusing to serve"
    with pytest.raises(CorruptArtifact, match=mismatch):
        reg.load("v1")
    assert reg.verify("v1")[0] is False
    assert reg.restore_artifact("v1") is True
    assert reg.load("v1").data == art.data
    reg.artifact_path("v2").unlink()
    with pytest.raises(CorruptArtifact, match="artifact missing for v2"):
        reg.load("v2")


def test_stages_are_exclusive_for_production_and_canary(registry_copy: Path) -> None:
    reg = Registry(registry_copy)
    reg.set_stage("v2", "canary")
    assert reg.get("v2")["stage"] == "canary"
    reg.set_stage("v2", "production")
    assert reg.production() == "v2" and reg.get("v1")["stage"] == "archived"
    assert reg.by_stage("canary") == []
    with pytest.raises(RegistryError, match="bad stage 'live'"):
        reg.set_stage("v1", "live")
    with pytest.raises(VersionNotFound, match="no such model version: v9"):
        reg.set_stage("v9", "staging")


@pytest.mark.parametrize("name", ["../v1", "v0", "1", "v1/../../etc", "", "V1"])
def test_version_names_are_checked(registry_copy: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="bad version name"):
        Registry(registry_copy).get(name)


def test_register_numbers_versions_and_fills_meta(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    a = reg.register(b"weights-a", {"metrics": {}, "lineage": {}}, stage="production")
    b = reg.register(b"weights-b", {"metrics": {}, "lineage": {}}, stage="production")
    assert (a["version"], b["version"]) == ("v1", "v2")
    assert reg.get("v1")["stage"] == "archived" and reg.production() == "v2"
    assert b["sha256"] == hashlib.sha256(b"weights-b").hexdigest()
    assert reg.load("v2").data == b"weights-b" and b["variant"] is None and b["created_at"].endswith("Z")


def test_flipped_labels_really_predicts_backwards(variant_registry: Path, traffic) -> None:
    rows, labels = traffic
    flipped = variant_versions(variant_registry)["flipped_labels"]
    base_auc = auc(labels, scores_of(variant_registry, "v1", rows))
    bad_auc = auc(labels, scores_of(variant_registry, flipped, rows))
    assert base_auc > 0.8 and bad_auc < 0.5
    meta = Registry(variant_registry).get(flipped)
    assert meta["variant"] == "flipped_labels" and meta["lineage"]["parent"] == "v1" and meta["stage"] == "staging"
    assert meta["sha256"] != Registry(variant_registry).get("v1")["sha256"]


def test_no_standardisation_skews_scores(variant_registry: Path, traffic) -> None:
    rows, labels = traffic
    version = variant_versions(variant_registry)["no_standardisation"]
    base = scores_of(variant_registry, "v1", rows)
    skewed = scores_of(variant_registry, version, rows)
    assert Registry(variant_registry).get(version)["preprocessing"]["standardise"] is False
    # same weights, raw inputs: the scores no longer resemble the model's
    assert np.mean(np.abs(base - skewed)) > 0.05
    assert auc(labels, skewed) < auc(labels, base) - 0.2


def test_nan_variant_yields_nan_for_a_fraction(variant_registry: Path, traffic) -> None:
    rows, labels = traffic
    version = variant_versions(variant_registry)["nan"]
    scores = scores_of(variant_registry, version, rows)
    nan = np.isnan(scores)
    assert 0.15 < nan.mean() < 0.45  # asked for 0.3 of the reference sample's amounts
    amounts = np.array([r["amount"] for r in rows])
    assert amounts[nan].min() >= np.median(amounts)  # it is the large amounts that break
    assert auc(labels[~nan], scores[~nan]) > 0.75  # the rest still scores


def test_slow_and_corrupt_variants_are_recorded(variant_registry: Path) -> None:
    made = variant_versions(variant_registry)
    reg = Registry(variant_registry)
    assert reg.get(made["slow"])["runtime"]["delay_ms"] == 80
    with pytest.raises(CorruptArtifact, match=f"sha256 mismatch for {made['corrupt']}"):
        reg.load(made["corrupt"])
    reg.load("v1")  # the base is untouched


def test_variant_params_are_validated(registry_copy: Path) -> None:
    reg = Registry(registry_copy)
    with pytest.raises(RegistryError, match="unknown variant 'sideways'"):
        make_variant(reg, "v1", "sideways", {})
    with pytest.raises(RegistryError, match=r"fraction must be a number in \(0, 1\]"):
        make_variant(reg, "v1", "nan", {"fraction": 2})
    with pytest.raises(RegistryError, match="takes no parameter"):
        make_variant(reg, "v1", "flipped_labels", {"delay_ms": 3})
    reg.corrupt_artifact("v2")
    with pytest.raises(CorruptArtifact):
        make_variant(reg, "v2", "slow", {})  # never derive from a corrupt base
    assert reg.versions() == ["v1", "v2"]


# ------------------------------------------------------------------------------------------------ HTTP service
@pytest.fixture
def registry_service(registry_copy: Path, tmp_path: Path, procs: list[Proc]) -> Proc:
    proc = start_registry(registry_copy, tmp_path)
    procs.append(proc)
    return proc


def test_registry_service_routes(registry_service: Proc) -> None:
    c = registry_service.client
    listed = c.get("/v1/models").json()
    assert [m["version"] for m in listed] == ["v1", "v2"]
    assert [m["version"] for m in c.get("/v1/models", params={"stage": "production"}).json()] == ["v1"]
    assert c.get("/v1/models/v1").json()["metrics"]["auc"] > 0.8
    r = c.get("/v1/models/v7")
    assert r.status_code == 404 and "no such model version: v7" in r.json()["detail"]
    assert c.get("/v1/models/..%2Fetc").status_code in (404, 422)
    ref = c.get("/v1/models/v1/reference").json()
    assert ref["version"] == "v1" and len(ref["rows"]) > 100
    r = c.post("/v1/models/v2/stage", json={"stage": "production"})
    assert r.status_code == 200 and r.json()["stage"] == "production"
    assert c.get("/v1/models/v1").json()["stage"] == "archived"
    r = c.post("/v1/models/v2/stage", json={"stage": "live"})
    assert r.status_code == 422 and "bad stage" in r.json()["detail"]
    assert c.post("/v1/models/v2/stage", content=b"{").status_code == 400
    assert c.get("/healthz").json()["status"] == "ok" and c.get("/readyz").status_code == 200
    metrics = c.get("/metrics").text
    assert "registry_requests_total" in metrics and "process_resident_memory_bytes" in metrics
    r = c.patch("/admin/config", json={"latency_ms": -1})
    assert r.status_code == 422 and "latency_ms" in r.json()["detail"]


def test_registry_service_makes_variants_without_torch(registry_service: Proc) -> None:
    c = registry_service.client
    started = time.monotonic()
    r = c.post("/v1/variants", json={"base": "v1", "variant": "slow", "params": {"delay_ms": 30}}, timeout=120)
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["version"] == "v3" and meta["variant"] == "slow" and meta["runtime"]["delay_ms"] == 30
    assert time.monotonic() - started < 90
    r = c.post("/v1/variants", json={"base": "v1", "variant": "corrupt"}, timeout=120)
    assert r.status_code == 201
    v = r.json()["version"]
    check = c.get(f"/v1/models/{v}/verify").json()
    assert check["ok"] is False and "sha256 mismatch" in check["detail"]
    r = c.post("/v1/variants", json={"base": v, "variant": "slow"})
    assert r.status_code == 409 and "sha256 mismatch" in r.json()["detail"]
    r = c.post("/v1/variants", json={"base": "v1", "variant": "sideways"})
    assert r.status_code == 422 and "unknown variant" in r.json()["detail"]
    r = c.post("/v1/variants", json={"base": "v8", "variant": "nan"})
    assert r.status_code == 404
    # torch was only ever loaded by the child processes, never by the service itself
    maps = Path(f"/proc/{registry_service.popen.pid}/maps").read_text()
    assert "libtorch" not in maps


def test_registry_service_corrupt_and_restore(registry_service: Proc) -> None:
    c = registry_service.client
    assert c.post("/admin/models/v2/corrupt").json()["corrupted"] is True
    assert c.get("/v1/models/v2/verify").json()["ok"] is False
    assert c.post("/admin/models/v2/restore").json()["restored"] is True
    assert c.get("/v1/models/v2/verify").json()["ok"] is True


def test_registry_service_trains(registry_service: Proc) -> None:
    c = registry_service.client
    rows, labels = feature_rows(3000, seed=61)
    labelled = [{**r, "label": int(y)} for r, y in zip(rows, labels, strict=True)]
    r = c.post("/v1/train", json={"rows": labelled, "epochs": 2, "parent": "v1"}, timeout=300)
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["version"] == "v3" and meta["stage"] == "staging" and meta["lineage"]["parent"] == "v1"
    assert meta["lineage"]["source"] == "rows" and meta["lineage"]["rows"] == 3000
    assert c.get("/v1/models/v3/verify").json()["ok"] is True
    r = c.post("/v1/train", json={"n_rows": 3000, "epochs": 1, "shift": {"concept": 0.7}, "data_seed": 9}, timeout=300)
    assert r.status_code == 201 and r.json()["lineage"]["shift"]["concept"] == 0.7
    bad = [*labelled[:299], {**labelled[299], "label": 5}]
    r = c.post("/v1/train", json={"rows": bad})
    assert r.status_code == 422 and r.json()["detail"] == "rows[299].label: must be 0 or 1"
    r = c.post("/v1/train", json={"rows": labelled[:10]})
    assert r.status_code == 422 and "rows" in r.json()["detail"]
    r = c.post("/v1/train", json={"epochs": 0, "colour": "red"})
    assert r.status_code == 422 and "epochs" in r.json()["detail"] and "colour" in r.json()["detail"]
    r = c.post("/v1/train", json={"parent": "v42"})
    assert r.status_code == 422 and "parent version 'v42'" in r.json()["detail"]
    r = c.post("/v1/train", json={"shift": {"warp": 1}, "n_rows": 500, "epochs": 1})
    assert r.status_code == 422 and "unknown shift parameter(s): warp" in r.json()["detail"]
    assert [m["version"] for m in c.get("/v1/models").json()] == ["v1", "v2", "v3", "v4"]
