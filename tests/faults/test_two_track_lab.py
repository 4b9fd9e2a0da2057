"""A lab running both tracks (`faultline up -d --track all`: model-1 beside llm-1), on one private stack shared by
the module: the fault kinds that apply to an LLM replica inject and revert on llm-1, and the console's track-bound
operations (`scale`, `deploys`, `deploy`, `rollback`, `promote`) act on the track the learner chose — by `track`,
or by a version only one registry holds — and refuse an ambiguous request with a 4xx that says how to choose.

Everything is real: processes on loopback ports, the lab's HTTP API, the real CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from faultkit import Lab, wait_until
from kit import StackHandle, faultline, registry_with_llm

from lab.client import LabError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LLM1 = "llm-1"


@pytest.fixture(scope="module")
def both(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    registry = registry_with_llm(trained_registry, tmp_path_factory.mktemp("two-track-registry"))
    try:
        handle = StackHandle.start(registry, home=tmp_path_factory.mktemp("two-track"), replicas=1, track="all",
                                   llm_replicas=1, timeout_s=300)
    except LabError as exc:
        raise AssertionError(f"faultline up -d --track all failed: {exc}") from None
    assert isinstance(handle, StackHandle)
    lab = Lab(handle)
    try:
        yield lab
    finally:
        lab.http.close()
        handle.stop()


def _llm_ready(lab: Lab, timeout: float = 120) -> dict[str, Any]:
    return wait_until(lambda: (s := lab.service(LLM1))["ready"] and s, timeout, interval=0.2, what="llm-1 ready")


def _stream_ttft_ms(lab: Lab) -> float:
    data = lab.console("generate", prompt="And the men", max_tokens=4, temperature=0)["data"]
    return data["timings"]["ttft_ms"]


# --- fault kinds on an LLM replica ----------------------------------------------------------------------------------

def test_process_kill_and_freeze_on_an_llm_replica(both: Lab) -> None:
    before = _llm_ready(both)
    applied = both.apply({"id": "kill-llm", "kind": "process", "action": "kill", "target": LLM1})
    assert applied["changes"]["pid"] == before["pid"]
    wait_until(lambda: both.service(LLM1)["restarts"] > before["restarts"], 30, what="llm-1 restarted")
    both.revert("kill-llm")
    after = _llm_ready(both)
    assert after["pid"] != before["pid"] and after["last_exit"]["code"] == 137

    pid = after["pid"]
    both.apply({"id": "freeze-llm", "kind": "process", "action": "freeze", "target": LLM1})
    wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 5, what="llm-1 stopped")
    with pytest.raises(httpx.TimeoutException):
        httpx.get(both.url(LLM1) + "/healthz", timeout=1.0, trust_env=False)
    both.revert("freeze-llm")
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
    assert httpx.get(both.url(LLM1) + "/healthz", timeout=5, trust_env=False).status_code == 200
    assert _llm_ready(both)["pid"] == pid  # thawed, not restarted


def test_latency_toxic_on_the_gateway_to_llm_hop(both: Lab) -> None:
    _llm_ready(both)
    applied = both.apply({"id": "slow-llm", "kind": "network", "action": "toxic", "target": LLM1,
                          "params": {"type": "latency", "latency": 400}})
    assert applied["description"] == "latency 400 ms on the hop gateway→llm-1 (downstream)"
    assert _stream_ttft_ms(both) >= 400  # a real stream through the gateway and the hop
    both.revert("slow-llm")
    assert not both.proxies()[LLM1]["toxics"]
    assert _stream_ttft_ms(both) < 400


def test_memory_limit_oom_kills_an_llm_replica_and_revert_restores_it(both: Lab) -> None:
    before = _llm_ready(both)
    both.apply({"id": "tight-llm", "kind": "memory", "action": "limit", "target": LLM1, "params": {"limit_mb": 16}})

    def oom_killed() -> bool:
        s = both.service(LLM1)
        return (s["last_exit"] or {}).get("reason") == "OOMKilled" and s["restarts"] > before["restarts"]

    wait_until(oom_killed, 60, what="llm-1 OOM-killed")
    assert both.service(LLM1)["memory_limit_bytes"] == 16 * 2**20
    both.revert("tight-llm")
    assert _llm_ready(both)["memory_limit_bytes"] == before["memory_limit_bytes"]


@pytest.mark.exclusive  # the hog's CPU share is measured: the machine alone under xdist
def test_cpu_hog_beside_an_llm_replica(both: Lab) -> None:
    applied = both.apply({"id": "hog-llm", "kind": "cpu", "action": "hog", "target": LLM1,
                          "params": {"cores": 1, "duty": 0.5}})
    pid = applied["changes"]["pid"]
    assert applied["description"] == "a process burning 1 core(s) at 50% duty beside llm-1"
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    time.sleep(1.5)
    assert proc.cpu_percent(None) >= 20  # half a core asked; generous on a shared 2-core machine
    both.revert("hog-llm")
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
               what="hog gone")


# --- the console on a two-track lab ----------------------------------------------------------------------------------

def test_version_operations_choose_their_track(both: Lab) -> None:
    _llm_ready(both)
    refused = both.console("deploy", 422, version="v1")["detail"]  # both registries hold a v1
    assert "--track llm" in refused and "fraud" in refused
    for op in ("rollback", "promote"):
        assert "--track" in both.console(op, 422, version="v1")["detail"]
    assert "--track" in both.console("deploys", 422)["detail"]
    unknown = both.console("deploy", 404, version="v9")["detail"]
    assert "v1-int8" in unknown and "fraud versions" in unknown

    llm = both.console("deploys", track="llm")["data"]
    assert llm["track"] == "llm" and {"v1", "v1-int8", "v1-int4"} <= {v["version"] for v in llm["versions"]}
    assert set(llm["replicas"]) == {LLM1}
    fraud = both.console("deploys", track="fraud")["data"]
    assert fraud["track"] == "fraud" and set(fraud["replicas"]) == {"model-1"}

    model_pid = both.service("model-1")["pid"]
    deployed = both.console("deploy", version="v1-int8")["data"]  # only the LLM registry holds it
    assert deployed["track"] == "llm" and deployed["replicas"][LLM1]["serves"]["weights"] == "v1-int8"
    served = both.console("deploys", track="llm")["data"]["replicas"][LLM1]
    assert served["version"] == "v1-int8"
    back = both.console("rollback", version="v1", track="llm")["data"]
    assert back["track"] == "llm" and back["replicas"][LLM1]["serves"]["weights"] == "v1"
    fraud_deploy = both.console("deploy", version="v2", track="fraud")["data"]
    assert fraud_deploy["track"] == "fraud"
    both.console("rollback", version="v1", track="fraud")
    assert both.service("model-1")["pid"] == model_pid  # a fraud rollout reloads live: nothing restarted
    assert both.console("deploys", track="llm")["data"]["replicas"][LLM1]["version"] == "v1"


def test_scale_chooses_its_track_in_api_and_cli(both: Lab) -> None:
    assert "--track llm" in both.console("scale", 422, replicas=2)["detail"]
    out = faultline("scale", "2", "--home", str(both.stack.home), timeout=60)
    assert out.returncode != 0 and "--track llm" in (out.stderr + out.stdout), out
    grown = both.console("scale", replicas=2, track="llm")["data"]
    assert grown["track"] == "llm" and grown["models"] == ["llm-1", "llm-2"] and grown["before"] == 1
    names = {s["name"] for s in both.status()["services"]}
    assert {"llm-2", "model-1"} <= names and "model-2" not in names
    out = faultline("scale", "1", "--track", "llm", "--home", str(both.stack.home), timeout=120)
    assert out.returncode == 0 and "llm track" in out.stdout and "llm-1" in out.stdout, out
    out = faultline("deploys", "--track", "llm", "--home", str(both.stack.home), timeout=60)
    assert out.returncode == 0 and "v1-int8" in out.stdout, out
    assert "llm-2" not in {s["name"] for s in both.status()["services"]}


# --- an LLM attempt on the two-track lab: replicas_ready counts llm-N, the attempt's track is the default, and the
# reset puts both tracks back -------------------------------------------------------------------------------------

READY_SCENARIO = """\
id: llm-ready
title: Replicas of the LLM track
summary: Counts the LLM replicas.
difficulty: intro
skills: [capacity]
estimated_minutes: 5
briefing: Nothing happens for a long while.
stack:
  track: llm
  replicas: 1
  traffic: {rps: 1}
faults:
  - {id: late, kind: config, action: push, target: llm-1, params: {values: {num_kv_blocks: 64}},
     when: {at_s: 20000}, until: fixed}
steady_state:
  - {id: ready, kind: replicas_ready, tolerance: {min: 1}}
diagnosis:
  answer: {category: [config], component: [llm-1], cause: [kv-cache-budget]}
  evidence:
    - {op: metrics, args: {service: llm-1}}
fix:
  accepted:
    - {description: ready, probes: [ready], hold_s: 30}
hints:
  - {text: Look., cost: 5}
  - {text: Set it back., cost: 10, solution: true}
scoring:
  weights: {diagnosis: 40, fix: 30, time: 10, hints: 20}
  par_detect_s: 60
  par_mitigate_s: 180
debrief:
  what_happened: Nothing.
  ideal_path: ["metrics llm-1"]
  lesson: Count.
solution:
  - {op: metrics, args: {service: llm-1}}
  - {op: config_set, args: {service: llm-1, key: num_kv_blocks, value: 512}}
wrong_fix:
  - {op: restart, args: {service: llm-1}}
"""


def _ready_probe(lab: Lab) -> Any:
    probes = lab.console("slo")["data"]["steady_state"]
    return next(p for p in probes if p["id"] == "ready")["value"]


def test_an_llm_attempt_counts_llm_replicas_and_its_reset_restores_both_tracks(both: Lab) -> None:
    import yaml

    api = both.stack.lab_url + "/api"
    _llm_ready(both)
    r = both.http.post(api + "/attempts", json={"scenario": yaml.safe_load(READY_SCENARIO), "seed": 1,
                                                "time_scale": 0.05})
    assert r.status_code == 201, r.text
    attempt_id = r.json()["attempt_id"]
    st = wait_until(lambda: (s := both.http.get(f"{api}/attempts/{attempt_id}").json())["status"] != "running"
                    or s["phase"] not in ("preparing", "warming") and s, 180, interval=0.3, what="attempt running")
    assert st["status"] == "running", st
    try:
        wait_until(lambda: _ready_probe(both) == 1, 30, interval=0.5, what="replicas_ready 1 (llm-1)")
        # the attempt's track is the default: v1 means the LLM v1, `scale 2` the LLM replicas
        assert both.console("deploy", version="v1-int8")["data"]["track"] == "llm"
        grown = both.console("scale", replicas=2)["data"]
        assert grown["track"] == "llm" and grown["models"] == ["llm-1", "llm-2"]
        assert both.console("deploy", version="v2", track="fraud")["data"]["track"] == "fraud"
        wait_until(lambda: _ready_probe(both) == 2, 60, interval=0.5, what="replicas_ready 2 (llm-1, llm-2)")
        both.console("drain", replica="llm-2")
        wait_until(lambda: _ready_probe(both) == 1, 30, interval=0.5, what="replicas_ready 1 (llm-2 drained)")
    finally:
        both.http.post(f"{api}/attempts/{attempt_id}/abort", json={"reason": "test"})

    def reset() -> bool:
        if both.http.get(api + "/attempts/active").json()["attempt"] is not None:
            return False
        names = {s["name"] for s in both.status()["services"]}
        return "llm-2" not in names
    wait_until(reset, 180, interval=0.5, what="the reset after the attempt")
    llm = both.console("deploys", track="llm")["data"]
    assert llm["replicas"][LLM1]["version"] == "v1" and not llm["drained"]
    fraud = both.console("deploys", track="fraud")["data"]
    assert fraud["replicas"]["model-1"]["default"] == "v1"
    _llm_ready(both)
