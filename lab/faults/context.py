"""What injectors may touch, in one place: the lab's clients of the running stack, plus scenario processes.

`FaultContext(lab)` is `lab.stackclients.StackClients` (each part's typed client, the one Toxiproxy client, the
supervisor) raising `FaultError`, plus what only faults need: checks on the targets they name and the helper
processes a scenario starts (the only ones the console's `kill` may signal). Its methods are thin delegations,
so injectors keep calling `ctx.get_config(...)`, `ctx.add_toxic(...)`, `ctx.registry(...)` as before.

Failures become FaultError with the HTTP status the lab API should answer: the service's refusal of a bad value
is a 422 carrying its message, a service that does not answer is a 503.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from lab.faults.base import FaultError
from lab.process import RestartPolicy, ServiceSpec
from lab.specs import PACKAGE_ROOT
from lab.stackclients import HTTP_TIMEOUT_S, StackClients, argv_config, argv_with_config, wait_until

__all__ = ["HTTP_TIMEOUT_S", "FaultContext", "argv_config", "argv_with_config", "wait_until"]

RUNNING_PHASES = ("running", "degraded")
HELPER_PREFIX = "scenario-"


class FaultContext(StackClients):
    def __init__(self, lab: Any, *, loadgen_url: str | None = None, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        super().__init__(lab, error=FaultError, timeout_s=timeout_s, loadgen_url=loadgen_url)
        self._helpers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # --- what a fault may name --------------------------------------------------------------------------------

    def check_running(self) -> None:
        phase = self.stack.phase
        if phase not in RUNNING_PHASES:
            raise FaultError(f"the stack is not running (phase {phase}); faults apply to a running stack", 409)

    def service_names(self) -> list[str]:
        """Services a fault may target: the stack's declared targets (not its proxy server or traffic)."""
        return self.stack.targets()

    def replicas(self) -> list[str]:
        return list(self.topology.model_names())

    def check_service(self, name: str) -> str:
        if name not in self.service_names():
            raise FaultError(f"no service {name!r} in this stack; services are: {', '.join(self.service_names())}",
                             422)
        return name

    def check_hop(self, name: str) -> str:
        hops = [h.name for h in self.topology.hops()]
        if name not in hops:
            raise FaultError(f"no hop {name!r} in this stack; hops are: {', '.join(hops)}", 422)
        return name

    # --- processes a scenario starts (the learner may kill them) ----------------------------------------------

    def spawn_helper(self, fault_id: str, argv: list[str]) -> dict[str, Any]:
        """Start a supervised helper (argv list, never restarted) owned by fault `fault_id`."""
        name = HELPER_PREFIX + fault_id
        spec = ServiceSpec(name=name, argv=list(argv), url=None, ready_path=None, restart=RestartPolicy(mode="no"),
                           memory_limit_bytes=None, cwd=str(PACKAGE_ROOT), env={"FAULTLINE_SERVICE": name})
        with self._lock:
            if name in self.supervisor.names():
                self.supervisor.remove(name, grace_s=2)
            self.supervisor.add(spec)
            self._helpers[name] = {"fault_id": fault_id, "argv": list(argv)}
        return {"name": name, **self.status(name)}

    def stop_helper(self, name: str) -> bool:
        with self._lock:
            self._helpers.pop(name, None)
            if name not in self.supervisor.names():
                return False
            self.supervisor.remove(name, grace_s=2)
            return True

    def scenario_pids(self) -> list[dict[str, Any]]:
        """Live processes that faults started: the only ones the console's `kill PID` may signal."""
        out = []
        with self._lock:
            helpers = dict(self._helpers)
        for name, info in helpers.items():
            if name not in self.supervisor.names():
                continue
            st = self.status(name)
            if st["pid"] is not None:
                out.append({"pid": st["pid"], "name": name, "fault_id": info["fault_id"], "argv": info["argv"],
                            "cpu_percent": st["cpu_percent"], "rss_bytes": st["rss_bytes"]})
        return out

    def kill_scenario_process(self, pid: int, sig: int = signal.SIGKILL) -> dict[str, Any]:
        """Signal a process a fault started; FaultError 403 for any other pid."""
        owned = {p["pid"]: p for p in self.scenario_pids()}
        if pid not in owned:
            raise FaultError(f"pid {pid} was not started by the scenario; only these may be killed: "
                             f"{', '.join(str(p) for p in owned) or 'none'}", 403)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        return owned[pid]
