"""Crash safety and shutdown on a private stack: a lab SIGKILLed with a rollout applied leaves the registry changed;
the next lab on the same home finds the record of it and undoes what outlived the crash. A lab stopped with
`faultline down` reverts every active fault on its way out."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from faultkit import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(300)]


def _stages(handle: Any) -> dict[str, str]:
    url = handle.topology.service_url("registry") + "/v1/models"
    return {m["version"]: m["stage"] for m in handle.client.get(url).json()}


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_restarted_lab_undoes_what_a_crashed_one_left_in_the_registry(
    root_conftest: Any, trained_registry: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = root_conftest.start_stack(home, trained_registry)
    try:
        r = first.client.post(first.lab_url + "/api/faults",
                              json={"id": "bad-deploy", "kind": "deploy", "action": "variant",
                                    "params": {"variant": "slow"}})
        assert r.status_code == 201, r.text
        vn = r.json()["changes"]["version"]
        assert _stages(first)[vn] == "production" and _stages(first)["v1"] == "archived"
        saved = json.loads((home / "faults-active.json").read_text())
        assert [a["fault_id"] for a in saved] == ["bad-deploy"]

        pids = first.all_pids()
        os.kill(first.lab_pid, signal.SIGKILL)  # no shutdown, no revert: its children die with it
        wait_until(lambda: all(_gone(p) for p in pids), 20, what="the crashed lab's processes gone")
        meta = json.loads((home / "registry" / "versions" / vn / "meta.json").read_text())
        assert meta["stage"] == "production"  # what outlived the crash
    finally:
        first.stop()

    second = root_conftest.start_stack(home, trained_registry)
    try:
        wait_until(lambda: _stages(second).get("v1") == "production", 60, what="stages recovered")
        stages = _stages(second)
        assert stages["v1"] == "production" and stages[vn] == "archived"
        reverted = second.client.get(second.lab_url + "/api/faults").json()["reverted"]
        assert [a["fault_id"] for a in reverted] == ["bad-deploy"]
        assert any(n.startswith("recovered:") for n in reverted[0]["notes"])
        assert json.loads((home / "faults-active.json").read_text()) == []
    finally:
        second.stop()


def test_faultline_down_reverts_every_active_fault(root_conftest: Any, trained_registry: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    handle = root_conftest.start_stack(home, trained_registry)
    try:
        api = handle.lab_url + "/api/faults"
        deploy = handle.client.post(api, json={"id": "canary", "kind": "deploy", "action": "variant",
                                               "params": {"variant": "no_standardisation", "weight": 0.2}})
        hog = handle.client.post(api, json={"id": "hog", "kind": "cpu", "action": "hog",
                                            "params": {"duty": 0.1}})
        assert deploy.status_code == 201 and hog.status_code == 201, (deploy.text, hog.text)
        vn, hog_pid = deploy.json()["changes"]["version"], hog.json()["changes"]["pid"]
        assert _stages(handle)[vn] == "canary"
    finally:
        handle.stop()
    meta = {v: json.loads((home / "registry" / "versions" / v / "meta.json").read_text())["stage"] for v in ("v1", vn)}
    assert meta == {"v1": "production", vn: "archived"}
    assert _gone(hog_pid)
    assert json.loads((home / "faults-active.json").read_text()) == []
