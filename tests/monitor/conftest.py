"""Real service processes on free loopback ports for the monitor's tests, and a clock the tests advance.

Processes are started as `python -m services.<name>` with their logs in the test's tmp dir and stopped by
pid at teardown; nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0  # generous: the machine is shared by several engineers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProc:
    """One started service; `stop()` ends it by pid, `restart()` starts the same argv on the same port."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, ready_path: str = "/readyz") -> None:
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        try:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
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

    def restart(self) -> None:
        self.stop()
        self.start()


def start_featurestore(log_dir: Path, name: str = "feature-store", config: dict[str, Any] | None = None
                       ) -> ServiceProc:
    port = free_port()
    argv = [sys.executable, "-m", "services.featurestore", "--host", "127.0.0.1", "--port", str(port),
            "--db", str(log_dir / f"{name}.db"), "--seed", "7", "--n-cards", "500", "--log-level", "WARNING"]
    if config:
        argv += ["--config", json.dumps(config)]
    return ServiceProc(name, argv, port, log_dir)


class FakeClock:
    """Monitor time that only moves when a test says so: windows of seconds without waiting seconds."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("monitor-logs")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def featurestore(log_dir: Path) -> Iterator[ServiceProc]:
    proc = start_featurestore(log_dir)
    yield proc
    proc.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
