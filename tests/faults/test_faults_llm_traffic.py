"""data.profile on the LLM track: a real `faultline up -d --track llm` stack (one replica) and its load generator
streaming chats through the gateway. The fault switches the clients to a growing history (their chats outgrow the
context: 400s at the gateway), reverts to the chat profile and rate they had, and refuses a profile of the other
track and a `strength`, naming why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faultkit
import pytest
from faultkit import Lab, lab_traffic
from kit import wait_until

from lab.parts.loadgen import LoadgenClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def llm_lab(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with faultkit.llm_lab(trained_registry, tmp_path_factory.mktemp("llm-traffic"), llm_replicas=1) as lab:
        yield lab


@pytest.fixture(scope="module")
def loadgen(llm_lab: Lab) -> Iterator[LoadgenClient]:
    with lab_traffic(llm_lab, rps=4, profile="chat", track="llm", seed=3) as client:
        yield client


def _codes(lg: LoadgenClient) -> dict[str, int]:
    return lg.state()["requests"]["codes"]


def test_growing_history_overflows_the_context_and_revert_restores_the_chats(llm_lab: Lab,
                                                                              loadgen: LoadgenClient) -> None:
    wait_until(lambda: _codes(loadgen).get("200", 0) >= 4, 90, interval=0.5, what="chats answered")
    before = _codes(loadgen)
    assert before.get("400", 0) == 0, before  # chat prompts fit the context

    applied = llm_lab.apply({"id": "history", "kind": "data", "action": "profile",
                             "params": {"profile": "growing-history", "rps": 6}})
    assert applied["changes"]["profile_before"] == "chat" and applied["changes"]["rps_before"] == 4
    state = loadgen.state()
    assert (state["track"], state["profile"], state["base_rps"]) == ("llm", "growing-history", 6)
    # the chats grow turn by turn until the replica refuses them: 400 context_length_exceeded
    wait_until(lambda: _codes(loadgen).get("400", 0) >= 3, 120, interval=0.5, what="400s from overflowing chats")

    llm_lab.revert("history")
    state = loadgen.state()
    assert (state["profile"], state["base_rps"]) == ("chat", 4)
    llm_lab.revert("history")  # idempotent
    assert loadgen.state()["profile"] == "chat"


def test_profiles_of_the_other_track_and_strength_are_refused(llm_lab: Lab, loadgen: LoadgenClient) -> None:
    r = llm_lab.http.post(llm_lab.api(""), json={"kind": "data", "action": "profile",
                                                 "params": {"profile": "unit-change"}})
    assert r.status_code == 422, r.text
    assert "not a llm-track profile" in r.json()["detail"] and "growing-history" in r.json()["detail"]
    r = llm_lab.http.post(llm_lab.api(""), json={"kind": "data", "action": "profile",
                                                 "params": {"profile": "abandon", "strength": 0.5}})
    assert r.status_code == 422 and "strength does not apply to the abandon profile" in r.json()["detail"], r.text
    assert loadgen.state()["profile"] == "chat"
    assert llm_lab.active() == []
