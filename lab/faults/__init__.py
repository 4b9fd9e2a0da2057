"""Fault injectors: one small module per fault kind, each injector registered under its `kind.action` name.

    from lab.faults import FaultContext, FaultManager
    manager = FaultManager(FaultContext(lab))
    applied = manager.apply({"id": "slow", "kind": "network", "action": "toxic", "target": "model-1",
                             "params": {"type": "latency", "latency": 400}, "when": {"at_s": 0}, "until": "fixed"})
    manager.revert("slow")

`attach(lab)` (called by lab/server.py) creates the lab's manager (`lab.components["faults"]`, also returned by
`lab_faults(lab)`), reverts what a crashed lab left behind once the stack runs, and serves /api/faults. The
manager reverts everything when the lab shuts down. See docs/faults.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lab.faults import config, cpu, data, dependency, deploy, memory, network, process  # noqa: F401 - registers
from lab.faults.base import Applied, FaultError, Injector, all_injectors, get, parse_fault, register
from lab.faults.context import FaultContext
from lab.faults.manager import FaultManager

log = logging.getLogger("faultline.faults")
STATE_FILE = "faults-active.json"

__all__ = [
    "Applied",
    "FaultContext",
    "FaultError",
    "FaultManager",
    "Injector",
    "all_injectors",
    "attach",
    "get",
    "lab_faults",
    "parse_fault",
    "register",
]


def lab_faults(lab: Any) -> FaultManager:
    """The lab's one FaultManager (created on first use; the lab closes it, reverting everything)."""
    manager = lab.components.get("faults")
    if manager is None:
        manager = FaultManager(FaultContext(lab), state_path=lab.home / STATE_FILE)
        lab.add_component("faults", manager)
    return manager


def _recover_when_running(lab: Any, manager: FaultManager, timeout_s: float = 600) -> None:
    if not manager.leftovers():
        return
    deadline = time.time() + timeout_s
    while lab.stack.phase not in ("running", "degraded"):
        if lab.stack.phase in ("failed", "stopping", "stopped") or time.time() > deadline:
            return
        time.sleep(0.5)
    for applied in manager.recover():
        log.warning("reverted %s left by a previous lab: %s %s", applied.fault_id, applied.description,
                    applied.notes or "")


def attach(lab: Any) -> Any:
    from lab.faults.api import router

    manager = lab_faults(lab)
    threading.Thread(target=_recover_when_running, args=(lab, manager), name="faultline-faults-recover",
                     daemon=True).start()
    def running_attempt() -> str | None:
        attempts = lab.components.get("attempts")
        return attempts.active_id() if attempts is not None else None

    return router(manager, running_attempt)
