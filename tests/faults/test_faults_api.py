"""The sandbox API on the real lab server: the catalog of kinds, clear 4xx for bad faults, revert semantics,
duration-limited faults, and the in-process registry agreeing with the scenario format."""

from __future__ import annotations

import time

import pytest
from faultkit import Lab, wait_until

from lab.faults import all_injectors, get
from lab.faults.base import Applied, FaultError
from lab.faults.parse import parse_fault
from lab.scenario import faults as models

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

# The scenario format's kinds, in its order: what the schema (lab/scenario/faults.py) was built from.
ALL_NAMES = list(models.MODELS)
LATENCY = {"type": "latency", "latency": 50}


def test_every_scenario_fault_has_one_injector_with_a_summary() -> None:
    assert [i.name for i in all_injectors()] == ALL_NAMES
    assert ALL_NAMES[:3] == ["network.toxic", "network.down", "process.kill"]  # declared positions, not a-z
    assert len(ALL_NAMES) == 17 and models.FAULT_KINDS == ("network", "process", "memory", "cpu", "data", "deploy",
                                                           "config", "dependency")
    for injector in all_injectors():
        assert injector.summary and injector.catalog.label and models.MODELS[injector.name] is injector.model
        # one module per kind, named after it
        assert type(injector).__module__ == "lab.faults.kinds." + injector.name.replace(".", "_")


def test_injectors_describe_faults_for_humans() -> None:
    fault = parse_fault({"id": "slow", "kind": "network", "action": "toxic", "target": "model-2",
                         "params": {"type": "latency", "latency": 400, "jitter": 100}, "when": {"at_s": 5},
                         "until": "fixed"})
    assert get("network.toxic").describe(fault) == "latency 400±100 ms on the hop gateway→model-2 (downstream)"
    fault = parse_fault({"id": "canary", "kind": "deploy", "action": "variant",
                         "params": {"variant": "nan", "weight": 0.25}, "when": {"at_s": 0}, "until": "fixed"})
    assert get("deploy.variant").describe(fault) == "a nan variant of v1 deployed as a canary taking 25% of traffic"


def test_applied_records_round_trip_through_json() -> None:
    a = Applied("f1", "memory.limit", "model-1", "text", {"limit_before": None, "service": "model-1"}, {"id": "f1"})
    assert Applied.from_dict(a.to_dict()) == a and a.to_dict()["active"] is True


def test_bad_params_name_the_field() -> None:
    with pytest.raises(FaultError) as err:
        parse_fault({"id": "x", "kind": "network", "action": "toxic", "target": "model-1",
                     "params": {"type": "timeout"}, "when": {"at_s": 0}, "until": "fixed"})
    assert err.value.status == 422 and str(err.value) == "params.timeout: Field required"


def test_kinds_lists_every_injector_with_schema_and_live_choices(lab: Lab) -> None:
    kinds = lab.http.get(lab.api("/kinds")).json()
    assert [k["name"] for k in kinds] == ALL_NAMES
    toxic = kinds[0]
    assert toxic["target"]["kind"] == "hop"
    assert toxic["target"]["choices"] == ["gateway", "feature-store", "model-1", "model-2"]
    assert {"latency", "bandwidth", "timeout", "reset_peer", "slicer", "limit_data", "slow_close"} <= {
        d["properties"]["type"]["const"] for d in toxic["params_schema"]["$defs"].values()}
    by_name = {k["name"]: k for k in kinds}
    assert by_name["memory.leak"]["target"]["choices"] == ["model-1", "model-2"]
    assert by_name["data.profile"]["target"] is None
    assert by_name["dependency.down"]["target"]["default"] == "feature-store"
    assert {"limit_mb", "headroom_mb"} <= set(by_name["memory.batch_blowup"]["params_schema"]["properties"])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ([1, 2], 422, "JSON object"),
    ({"kind": "weather", "action": "storm"}, 422, "does not match any of the expected tags"),
    ({"kind": "network", "action": "toxic", "target": "model-1", "params": {"type": "latency"}}, 422,
     "params.latency: Field required"),
    ({"kind": "network", "action": "toxic", "target": "model-7", "params": LATENCY}, 422, "no hop 'model-7'"),
    ({"kind": "network", "action": "toxic", "target": "db", "params": LATENCY}, 422, "target: Value error, unknown"),
    ({"kind": "process", "action": "kill", "target": "model-1", "when": {"at_s": 1}}, 422, "leave `when` out"),
    ({"kind": "memory", "action": "limit", "target": "gateway", "params": {"limit_mb": 1}}, 422,
     "params.limit_mb: Input should be greater than or equal to 16"),
    ({"kind": "config", "action": "push", "target": "gateway", "params": {"values": {"retries": 3}}}, 422,
     "gateway has no config key(s) retries"),
    ({"kind": "config", "action": "push", "target": "gateway", "params": {"values": {"max_retries": -1}}}, 422,
     "gateway refused PATCH /admin/config: max_retries"),
    ({"kind": "memory", "action": "batch_blowup", "target": "model-1",
      "params": {"max_batch_size": 2_000_000, "limit_mb": 2048}}, 422, "less than or equal to 1000000"),
    ({"kind": "config", "action": "push", "target": "gateway", "params": {"values": {"replicas": {}}}}, 422,
     "managed by the lab"),
])
def test_bad_faults_are_refused_with_a_clear_4xx(flab: Lab, body: object, status: int, needle: str) -> None:
    r = flab.http.post(flab.api(""), json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert flab.active() == []


def test_unknown_ids_are_404_and_a_duplicate_active_id_is_409(flab: Lab) -> None:
    assert flab.http.delete(flab.api("/never-applied")).status_code == 404
    assert flab.http.get(flab.api("/never-applied")).status_code == 404
    body = {"id": "dup", "kind": "network", "action": "toxic", "target": "gateway", "params": LATENCY}
    flab.apply(body)
    r = flab.http.post(flab.api(""), json=body)
    assert r.status_code == 409 and "already active" in r.json()["detail"]
    assert [a["fault_id"] for a in flab.active()] == ["dup"]
    flab.revert("dup")
    assert flab.active() == []


def test_a_fault_with_a_duration_reverts_itself(flab: Lab) -> None:
    applied = flab.apply({"kind": "network", "action": "toxic", "target": "feature-store", "params": LATENCY,
                          "until": {"duration_s": 1.0}})
    assert applied["fault_id"] == "network-toxic-1" or applied["fault_id"].startswith("network-toxic-")
    assert [t["name"] for t in flab.proxies()["feature-store"]["toxics"]] == ["fl_" + applied["fault_id"]]
    wait_until(lambda: not flab.proxies()["feature-store"]["toxics"], 10, what="toxic removed by the timer")
    record = flab.http.get(flab.api("/" + applied["fault_id"])).json()
    assert record["active"] is False and record["reverted_at"] >= applied["applied_at"] + 0.9


def test_revert_all_unwinds_in_reverse_order(flab: Lab) -> None:
    for i, hop in enumerate(("model-1", "model-2")):
        flab.apply({"id": f"t{i}", "kind": "network", "action": "toxic", "target": hop, "params": LATENCY})
    started = time.time()
    reverted = flab.http.delete(flab.api("")).json()["reverted"]
    assert [a["fault_id"] for a in reverted] == ["t1", "t0"]
    assert all(not a["active"] and a["reverted_at"] >= started for a in reverted)
    assert flab.active() == []
