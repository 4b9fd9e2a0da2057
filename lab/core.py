"""The Lab: the one long-lived object that owns the stack and, later, the monitor, the journal and the grader.

It is the lab's Python API. The JSON API (lab/server.py), the CLI (through HTTP), the UI and the headless
runner all go through it, so every operation has one implementation. Other components attach themselves with
`add_component` (see `attach(lab)` in docs/supervisor.md) and are closed when the lab shuts down.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.specs import StackSettings
from lab.stack import make_stack
from lab.state import new_run_id
from lab.topology import Ports, Topology

log = logging.getLogger("faultline.lab")


@dataclass
class LabSettings:
    home: Path
    ports: Ports = field(default_factory=Ports)
    replicas: int = 2
    # The tracks the stack runs (lab/parts: `faultline up --track`) and other replicated parts' counts.
    tracks: tuple[str, ...] = ("fraud",)
    replica_counts: dict[str, int] = field(default_factory=dict)
    toxiproxy_url: str | None = None
    ready_timeout_s: float = 90.0
    stack: StackSettings | None = None
    traffic_rps: float = 0.0  # > 0: start the load generator once the stack is ready
    traffic_profile: str = "baseline"
    backend: str = "process"  # or "compose": the services as containers (lab/enginebackend.py)

    def stack_settings(self) -> StackSettings:
        return self.stack or StackSettings(home=self.home)


class Lab:
    def __init__(self, settings: LabSettings, run_id: str | None = None) -> None:
        self.settings = settings
        self.home = settings.home
        self.run_id = run_id or new_run_id()
        self.topology = Topology(ports=settings.ports, replicas=settings.replicas, tracks=settings.tracks,
                                 counts=tuple(sorted(settings.replica_counts.items())))
        self.stack = make_stack(
            settings.backend,
            self.topology,
            settings.stack_settings(),
            self.run_id,
            toxiproxy_url=settings.toxiproxy_url,
            ready_timeout_s=settings.ready_timeout_s,
        )
        self.components: dict[str, Any] = {}
        self.component_errors: list[str] = []
        self.url = f"http://{self.topology.host}:{settings.ports.lab}"
        self._start_thread: threading.Thread | None = None
        self._closed = False

    @property
    def supervisor(self) -> Any:
        return self.stack.supervisor

    def add_component(self, name: str, component: Any) -> None:
        """Register a lab component (monitor, journal, ...). If it has close(), the lab calls it at shutdown."""
        self.components[name] = component

    def start_stack_in_background(self) -> threading.Thread:
        """Start the stack without blocking the caller (the API serves progress meanwhile). Idempotent."""
        if self._start_thread is not None:
            return self._start_thread

        def run() -> None:
            try:
                self.stack.start()
                log.info("stack ready after %.2fs", self.stack.ready_after_s or 0)
                if self.settings.traffic_rps > 0:
                    self.stack.traffic(self.settings.traffic_rps, self.settings.traffic_profile)
            except Exception as exc:  # noqa: BLE001 - recorded in status for the CLI and the UI
                log.error("stack start failed: %s", exc)
                if self.stack.error is None:
                    self.stack.error = str(exc)

        self._start_thread = threading.Thread(target=run, name="faultline-stack-start", daemon=True)
        self._start_thread.start()
        return self._start_thread

    def status(self) -> dict[str, Any]:
        st = self.stack.status()
        st["lab_url"] = self.url
        st["components"] = sorted(self.components)
        st["component_errors"] = self.component_errors
        return st

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name, comp in reversed(list(self.components.items())):
            close = getattr(comp, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - stopping the stack matters more
                    log.error("closing %s failed: %s", name, exc)
        self.stack.down()
