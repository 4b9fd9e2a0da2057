"""deploy.variant and deploy.corrupt through the real registry, replicas and gateway: a canary takes about its
weight of the traffic and misbehaves as its variant says, a full rollout changes the default, a corrupt artifact is
refused and the old version keeps serving; revert restores routing, loaded versions, argv and registry stages."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from faultkit import Lab, wait_until

from lab.faults.context import argv_config

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]


def _stages(lab: Lab) -> dict[str, str]:
    return {m["version"]: m["stage"] for m in lab.http.get(lab.url("registry") + "/v1/models").json()}


def _loaded(lab: Lab, replica: str) -> list[str]:
    return [v["version"] for v in lab.http.get(lab.url(replica) + "/v1/models").json()["versions"]]


def _predict(lab: Lab, replica: str, rows: list[dict[str, Any]], version: str | None = None) -> list[Any]:
    body: dict[str, Any] = {"rows": rows} if version is None else {"rows": rows, "version": version}
    r = lab.http.post(lab.url(replica) + "/v1/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()["scores"]


def _unready_reason(lab: Lab, replica: str) -> str | None:
    try:
        r = httpx.get(lab.url(replica) + "/readyz", timeout=5)
    except httpx.HTTPError:
        return None  # still starting
    return r.json()["reason"] if r.status_code == 503 and "loading" not in r.json()["reason"] else None


def _snapshot(lab: Lab) -> dict[str, Any]:
    return {"routing": lab.config("gateway")["routing"], "loaded": {r: _loaded(lab, r) for r in ("model-1", "model-2")},
            "argv": {r: lab.service(r)["argv"] for r in ("model-1", "model-2", "gateway")}, "stages": _stages(lab)}


def _assert_restored(lab: Lab, before: dict[str, Any], version: str) -> None:
    after = _snapshot(lab)
    assert after["routing"] == before["routing"]
    assert after["loaded"] == before["loaded"]
    assert after["argv"] == before["argv"]
    assert {v: s for v, s in after["stages"].items() if v != version} == before["stages"]
    assert after["stages"][version] == "archived"  # the abandoned rollout stays on record


def test_flipped_canary_takes_its_weight_and_scores_upside_down(flab: Lab) -> None:
    before = _snapshot(flab)
    applied = flab.apply({"id": "flip", "kind": "deploy", "action": "variant",
                          "params": {"variant": "flipped_labels", "weight": 0.5}})
    vn = applied["changes"]["version"]
    assert vn not in before["stages"]
    assert flab.config("gateway")["routing"] == {"v1": 0.5, vn: 0.5}
    # in the start-up config too: restarting the gateway does not end the canary
    assert argv_config(flab.service("gateway")["argv"])["routing"] == {"v1": 0.5, vn: 0.5}
    assert _stages(flab)[vn] == "canary" and _stages(flab)["v1"] == "production"
    # next to whatever each replica held (an earlier test on this shared stack may have left a version loaded)
    assert all(_loaded(flab, r) == [*before["loaded"][r], vn] for r in ("model-1", "model-2"))

    served = [s["model_version"] for s in flab.scores(80)]
    share = served.count(vn) / len(served)
    assert set(served) == {"v1", vn} and 0.3 <= share <= 0.7, share

    rows = [flab.model_row() for _ in range(50)]
    good, flipped = _predict(flab, "model-1", rows, "v1"), _predict(flab, "model-1", rows, vn)
    assert all(abs(f - (1 - g)) < 1e-4 for g, f in zip(good, flipped, strict=True))

    flab.revert("flip")
    _assert_restored(flab, before, vn)
    assert {s["model_version"] for s in flab.scores(10)} == {"v1"}
    flab.revert("flip")
    _assert_restored(flab, before, vn)


def test_nan_variant_in_full_becomes_the_default_and_produces_nan(flab: Lab) -> None:
    before = _snapshot(flab)
    applied = flab.apply({"id": "nan", "kind": "deploy", "action": "variant", "params": {"variant": "nan"}})
    vn = applied["changes"]["version"]
    assert applied["description"] == "a nan variant of v1 deployed in full"
    assert flab.config("gateway")["routing"] == {}
    assert _stages(flab)[vn] == "production" and _stages(flab)["v1"] == "archived"
    assert all(_loaded(flab, r)[0] == vn for r in ("model-1", "model-2"))
    assert all(f"--versions {vn},v1" in " ".join(flab.service(r)["argv"]) for r in ("model-1", "model-2"))

    scores = _predict(flab, "model-2", [flab.model_row() for _ in range(300)])
    bad = [s for s in scores if s is None or (isinstance(s, float) and math.isnan(s))]
    assert 0.05 <= len(bad) / len(scores) <= 0.5, len(bad)  # the top ~20% of amounts

    flab.revert("nan")
    _assert_restored(flab, before, vn)
    scores = _predict(flab, "model-2", [flab.model_row() for _ in range(300)])
    assert all(s is not None and not math.isnan(s) for s in scores)


def test_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(flab: Lab) -> None:
    before = _snapshot(flab)
    applied = flab.apply({"id": "corrupt", "kind": "deploy", "action": "corrupt", "params": {"weight": 1.0}})
    c = applied["changes"]
    vn = c["version"]
    assert set(c["refused"]) == {"model-1", "model-2"} and c["accepted"] == []
    assert all("sha256 mismatch" in reason and "refusing to serve" in reason for reason in c["refused"].values())
    assert c["restarted"] == ["model-1"]
    assert _stages(flab)[vn] == "production"

    reason = wait_until(lambda: _unready_reason(flab, "model-1"), 30, what="model-1 up but unready")
    assert "sha256 mismatch" in reason and vn in reason  # up, never ready: it cannot load vN
    assert flab.service("model-1")["ready"] is False
    assert _loaded(flab, "model-2") == before["loaded"]["model-2"]
    served = flab.scores(10)
    assert {s["model_version"] for s in served} == {"v1"} and {s["replica"] for s in served} == {"model-2"}

    # the console's restart answers once the replica says why it will not get ready, not after its 60 s wait
    r = flab.http.post(flab.stack.lab_url + "/api/console/restart", json={"service": "model-1"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["data"]["ready"] is False and res["data"]["seconds"] < 45, res
    assert "up but not ready" in res["text"] and "sha256 mismatch" in res["text"], res["text"]

    flab.revert("corrupt")
    flab.wait_healthy()
    _assert_restored(flab, before, vn)
    flab.revert("corrupt")
    assert flab.service("model-1")["ready"] is True
