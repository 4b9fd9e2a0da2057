"""data.profile against the lab's real load generator (locust in its own process, sending real traffic through the
gateway proxy): the profile and rate switch, a weakened profile is registered, revert goes back to the baseline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit import Lab, lab_traffic, wait_until

from lab.parts.loadgen import LoadgenClient

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def loadgen(lab: Lab) -> Iterator[LoadgenClient]:
    """The lab's own load generator (POST /api/traffic: locust under the supervisor, through the gateway proxy)."""
    with lab_traffic(lab, rps=4, profile="baseline", feedback_delay_s=1.0, seed=3) as client:
        yield client


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
