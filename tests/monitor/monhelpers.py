"""Helpers for the monitor's tests: real service processes on free loopback ports, a mini stack, a test clock.

Processes are started as `python -m services.<name>` with their logs in the test's tmp dir and stopped by
pid at teardown; nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
from kit import ServiceProc, free_port


def start_featurestore(log_dir: Path, name: str = "feature-store", config: dict[str, Any] | None = None
                       ) -> ServiceProc:
    port = free_port()
    argv = [sys.executable, "-m", "services.featurestore", "--host", "127.0.0.1", "--port", str(port),
            "--db", str(log_dir / f"{name}.db"), "--seed", "7", "--n-cards", "500", "--log-level", "WARNING"]
    if config:
        argv += ["--config", json.dumps(config)]
    return ServiceProc(name, argv, port, log_dir)


class MiniStack:
    """The scoring stack without the lab: registry, feature store, model replicas, gateway and real locust."""

    def __init__(self, root: Path, registry_src: Path, replicas: int = 2, rps: float = 40.0) -> None:
        self.procs: dict[str, ServiceProc] = {}
        registry = root / "registry"
        shutil.copytree(registry_src, registry)
        py = sys.executable
        try:
            # the slow starters (torch imports) start together; the gateway needs their URLs only
            self._add("registry", [py, "-m", "services.registry", "--root", str(registry)], root)
            self._add("feature-store", [py, "-m", "services.featurestore", "--db", str(root / "features.db"),
                                        "--seed", "7", "--n-cards", "5000"], root)
            for n in range(1, replicas + 1):
                self._add(f"model-{n}", [py, "-m", "services.modelserver", "--registry", str(registry),
                                         "--replica", f"model-{n}", "--versions", "v1"], root)
            for proc in self.procs.values():
                proc.wait_ready()
            models = ",".join(f"model-{n}={self.procs[f'model-{n}'].url}" for n in range(1, replicas + 1))
            self._add("gateway", [py, "-m", "services.gateway", "--feature-store", self.procs["feature-store"].url,
                                  "--models", models], root)
            self.procs["gateway"].wait_ready()
            port = free_port()
            argv = [py, "-m", "services.loadgen", "--target", self.procs["gateway"].url, "--rps", f"{rps:g}",
                    "--profile", "baseline", "--web-port", str(port), "--feedback-delay-s", "1", "--seed", "11",
                    "--log-level", "WARNING"]
            self.procs["loadgen"] = ServiceProc("loadgen", argv, port, root)
        except BaseException:
            self.stop()
            raise

    def _add(self, name: str, argv: list[str], root: Path) -> None:
        port = free_port()
        argv = [*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
        self.procs[name] = ServiceProc(name, argv, port, root, wait=False)

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


class FakeClock:
    """Monitor time that only moves when a test says so: windows of seconds without waiting seconds."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now
