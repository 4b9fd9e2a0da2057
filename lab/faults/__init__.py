"""Fault injectors: one small module per fault kind, each injector registered under its `kind.action` name.

    from lab.faults import FaultContext, FaultManager
    manager = FaultManager(FaultContext(lab))
    applied = manager.apply({"id": "slow", "kind": "network", "action": "toxic", "target": "model-1",
                             "params": {"type": "latency", "latency": 400}, "when": {"at_s": 0}, "until": "fixed"})
    manager.revert("slow")

`attach(lab)` (called by lab/server.py) creates the lab's manager (`lab.components["faults"]`, also returned by
`lab_faults(lab)`), reverts what a crashed lab left behind once the stack runs, and serves /api/faults. The
manager reverts everything when the lab shuts down. See docs/faults.md.

The kinds themselves are found by lab/faults/registry.py (one module each in lab/faults/kinds/). This package's
names are loaded on first use: lab.scenario imports lab.faults.registry while it builds the scenario schema, and
must not pull in the manager, which parses faults with that very schema.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.faults.base import Applied, FaultError, Injector, all_injectors, get, register
    from lab.faults.context import FaultContext
    from lab.faults.manager import FaultManager
    from lab.faults.parse import parse_fault

log = logging.getLogger("faultline.faults")
STATE_FILE = "faults-active.json"
_EXPORTS = {
    "Applied": "lab.faults.base", "FaultError": "lab.faults.base", "Injector": "lab.faults.base",
    "all_injectors": "lab.faults.base", "get": "lab.faults.base", "register": "lab.faults.base",
    "FaultContext": "lab.faults.context", "FaultManager": "lab.faults.manager", "parse_fault": "lab.faults.parse",
    "catalog": "lab.faults.api",
}

__all__ = [
    "Applied",
    "FaultContext",
    "FaultError",
    "FaultManager",
    "Injector",
    "all_injectors",
    "attach",
    "catalog",
    "get",
    "lab_faults",
    "parse_fault",
    "register",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lab.faults' has no attribute {name!r}")


def lab_faults(lab: Any) -> FaultManager:
    """The lab's one FaultManager (created on first use; the lab closes it, reverting everything)."""
    from lab.faults.context import FaultContext
    from lab.faults.manager import FaultManager

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
