"""data.profile against a real load generator (locust, its own process) on the stack's locust port, sending real
traffic through the gateway proxy: the profile and rate switch, a weakened profile is registered, revert goes
back to the baseline."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import Lab, wait_until

from services.loadgen.client import LoadgenClient, loadgen_argv

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loadgen(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadgenClient]:
    port = lab.stack.topology.ports.locust_web  # where the lab looks for it (docs/architecture.md)
    argv = loadgen_argv(lab.stack.public_url, 4, "baseline", port, feedback_delay_s=1.0, seed=3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = (tmp_path_factory.mktemp("loadgen") / "loadgen.log").open("wb")
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
    client = LoadgenClient(f"http://127.0.0.1:{port}")
    try:
        client.wait_ready(60)
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_profile_switches_traffic_and_revert_restores_the_baseline(flab: Lab, loadgen: LoadgenClient) -> None:
    flab.apply({"id": "cents", "kind": "data", "action": "profile", "params": {"profile": "unit-change", "rps": 6}})
    state = loadgen.state()
    assert (state["profile"], state["base_rps"]) == ("unit-change", 6)
    served = wait_until(lambda: loadgen.state()["requests"]["ok"] > state["requests"]["ok"], 20, what="traffic")
    assert served

    flab.revert("cents")
    state = loadgen.state()
    assert (state["profile"], state["base_rps"]) == ("baseline", 4)
    flab.revert("cents")
    assert loadgen.state()["profile"] == "baseline"


def test_strength_registers_a_weakened_profile(flab: Lab, loadgen: LoadgenClient) -> None:
    applied = flab.apply({"id": "drift", "kind": "data", "action": "profile",
                          "params": {"profile": "covariate-shift", "strength": 0.5}})
    assert applied["changes"]["profile"] == "covariate-shift-at-50"
    assert loadgen.state()["profile"] == "covariate-shift-at-50"
    registered = loadgen.profiles()["covariate-shift-at-50"]
    assert registered["shift"]["covariate"] == pytest.approx(loadgen.profiles()["covariate-shift"]["shift"]["covariate"]
                                                             * 0.5)
    flab.revert("drift")
    assert loadgen.state()["profile"] == "baseline"

    r = flab.http.post(flab.api(""), json={"kind": "data", "action": "profile",
                                           "params": {"profile": "unit-change", "strength": 0.3}})
    assert r.status_code == 422 and "strength does not apply to the unit-change profile" in r.json()["detail"]
    assert loadgen.state()["profile"] == "baseline"
