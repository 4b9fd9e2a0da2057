"""Helpers for the monitor's tests: real service processes on free loopback ports, a mini stack, a test clock.

Processes are started through the harness (tests/kit.py) with their command lines from lab.specs
(bench/standalone.py), their logs in the test's tmp dir, and stopped by pid at teardown; nothing here touches
the default ports or ./.faultline.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
from kit import ServiceProc, free_port, start_service, wait_until

from bench.standalone import scoring_stack_argv


def start_featurestore(log_dir: Path, name: str = "feature-store", config: dict[str, Any] | None = None
                       ) -> ServiceProc:
    return start_service("feature-store", log_dir, proc_name=name, db=log_dir / f"{name}.db", config=config,
                         extra=["--n-cards", "500", "--log-level", "WARNING"])


class MiniStack:
    """The scoring stack without the lab: registry, feature store, model replicas, gateway and real locust."""

    def __init__(self, root: Path, registry_src: Path, replicas: int = 2, rps: float = 40.0) -> None:
        self.procs: dict[str, ServiceProc] = {}
        registry = root / "registry"
        shutil.copytree(registry_src, registry)
        models = [f"model-{n}" for n in range(1, replicas + 1)]
        ports = {name: free_port() for name in ("registry", "feature-store", *models, "gateway", "loadgen")}
        argv = scoring_stack_argv(ports, registry, root / "features.db", replicas=replicas, rps=rps, loadgen_seed=11)
        try:
            # the slow starters (torch imports) start together; the gateway needs their URLs only
            for name in ("registry", "feature-store", *models):
                self.procs[name] = ServiceProc(name, argv[name], ports[name], root, wait=False)
            for proc in self.procs.values():
                proc.wait_ready()
            for name in ("gateway", "loadgen"):
                self.procs[name] = ServiceProc(name, argv[name], ports[name], root)
        except BaseException:
            self.stop()
            raise

    def url(self, name: str) -> str:
        return self.procs[name].url

    def targets(self) -> dict[str, str]:
        return {n: p.url for n, p in self.procs.items()}

    def loadgen(self, **body: Any) -> dict[str, Any]:
        resp = httpx.post(self.url("loadgen") + "/control", json=body, timeout=10.0, trust_env=False)
        resp.raise_for_status()
        return resp.json()

    def patch(self, name: str, **config: Any) -> None:
        resp = httpx.patch(self.url(name) + "/admin/config", json=config, timeout=10.0, trust_env=False)
        resp.raise_for_status()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def wait_for(what: str, check: Any, timeout_s: float) -> Any:
    """Poll (every 0.5 s) until check() is truthy, returning its value; fail naming `what` and the last value."""
    return wait_until(check, timeout_s, interval=0.5, what=what)


class FakeClock:
    """Monitor time that only moves when a test says so: windows of seconds without waiting seconds."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now
