"""Helpers for the monitor's tests: real service processes on free loopback ports, a mini stack, a test clock.

Processes are started as `python -m services.<name>` with their logs in the test's tmp dir and stopped by
pid at teardown; nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0  # generous: the machine is shared by several engineers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProc:
    """One started service; `stop()` ends it by pid, `start()` runs the same argv on the same port again."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, ready_path: str = "/readyz",
                 wait: bool = True) -> None:
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start(wait)

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        try:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


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
