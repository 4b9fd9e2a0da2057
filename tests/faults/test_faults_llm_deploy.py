"""deploy.llm on a real LLM stack (`faultline up -d --track llm`, two replicas, one private stack for the module):
one part of a version rolled out to every replica at once (v2's weights on v1's tokenizer: the canary perplexity
far above v1's), a whole version to one replica (v1-int4 on llm-2 only, llm-1 untouched), each reverted to what the
replicas served; the refusals (another track's name, a replica the stack does not run) and a revert that finds
the learner's own redeploy leave it alone.

Everything is real: processes on loopback ports, the lab's fault API, the console's `deploys` and `eval`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import Lab, llm_lab, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPLICAS = ("llm-1", "llm-2")
V1 = {"weights": "v1", "tokenizer": "v1", "generation_config": "v1"}


@pytest.fixture(scope="module")
def llm(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with llm_lab(trained_registry, tmp_path_factory.mktemp("llm-deploy"), llm_replicas=2) as lab:
        yield lab


def _served(lab: Lab) -> dict[str, dict[str, Any]]:
    """Each replica's running version and tokenizer (its own /v1/models, through the console's `deploys`)."""
    return lab.console("deploys")["data"]["replicas"]


def _perplexity(lab: Lab) -> dict[str, float]:
    return {n: r["perplexity"] for n, r in lab.console("eval")["data"]["replicas"].items()}


def _ready(lab: Lab) -> None:
    wait_until(lambda: all(lab.service(n)["ready"] for n in REPLICAS), 120, interval=0.2, what="replicas ready")


def test_v2_weights_on_v1_tokenizer_everywhere_and_back(llm: Lab) -> None:
    _ready(llm)
    before = _perplexity(llm)
    applied = llm.apply({"id": "half", "kind": "deploy", "action": "llm",
                         "params": {"version": "v2", "part": "weights", "at_once": True}})
    assert applied["description"] == "the weights of LLM v2 deployed to every LLM replica at once"
    assert all("--tokenizer" in applied["changes"]["argv"][n] for n in REPLICAS)
    served = _served(llm)
    for n in REPLICAS:
        assert served[n]["version"] == "v2" and served[n]["tokenizer"] == "v1", served[n]
    broken = _perplexity(llm)
    assert all(broken[n] > 10 * before[n] for n in REPLICAS), (before, broken)  # ids read by the wrong tokenizer

    llm.revert("half")
    _ready(llm)
    served = _served(llm)
    assert all(served[n]["version"] == "v1" and served[n]["tokenizer"] == "v1" for n in REPLICAS), served
    assert _perplexity(llm) == pytest.approx(before, rel=0.01)


def test_int4_on_one_replica_leaves_the_other_running(llm: Lab) -> None:
    _ready(llm)
    before = _perplexity(llm)
    pid1 = llm.service("llm-1")["pid"]
    llm.apply({"id": "int4", "kind": "deploy", "action": "llm", "target": "llm-2", "params": {"version": "v1-int4"}})
    served = _served(llm)
    assert served["llm-2"]["version"] == "v1-int4" and served["llm-1"]["version"] == "v1"
    assert llm.service("llm-1")["pid"] == pid1  # the other replica was not restarted
    worse = _perplexity(llm)
    assert worse["llm-2"] > before["llm-2"] and worse["llm-1"] == pytest.approx(before["llm-1"], rel=1e-3)
    llm.revert("int4")
    _ready(llm)
    assert _served(llm)["llm-2"]["version"] == "v1"
    assert _perplexity(llm)["llm-2"] == pytest.approx(before["llm-2"], rel=1e-3)


def test_revert_leaves_a_replica_the_learner_redeployed(llm: Lab) -> None:
    _ready(llm)
    llm.apply({"id": "tok", "kind": "deploy", "action": "llm", "target": "llm-1",
               "params": {"version": "v2", "part": "tokenizer"}})
    assert _served(llm)["llm-1"]["tokenizer"] == "v2"
    llm.console("deploy", version="v1-int8")  # the learner's own rollout, every replica
    pid = llm.service("llm-1")["pid"]
    notes = llm.revert("tok")
    assert "redeployed" in str(notes)
    assert llm.service("llm-1")["pid"] == pid and _served(llm)["llm-1"]["version"] == "v1-int8"
    llm.console("rollback", version="v1")
    _ready(llm)
    assert all(_served(llm)[n]["version"] == "v1" for n in REPLICAS)


def test_refusals(llm: Lab) -> None:
    missing = llm.apply({"id": "x", "kind": "deploy", "action": "llm", "target": "llm-5",
                         "params": {"version": "v1-int4"}}, expect=422)
    assert "llm-1, llm-2" in str(missing)
    unknown = llm.apply({"id": "y", "kind": "deploy", "action": "llm", "params": {"version": "v9"}}, expect=422)
    assert "v1-int4" in str(unknown)
    assert not llm.active()
