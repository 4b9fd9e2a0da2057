"""What several test folders share: a started service process, a free port, waiting for a condition.

ServiceProc is for tests that run services without the lab (gateway, monitor, model tests). A service runs as
`python -m services.<name>` (or a test peer script) on a free loopback port, with its log in the test's tmp dir;
`stop()` ends it by pid and `start()` runs the same argv on the same port again. The shared stack
(tests/conftest.py) is the lab's business; this is for tests that need a service alone or a small hand-wired set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0  # generous: imports (torch) are slow on a loaded 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class ServiceProc:
    """One started service: its URL, pid (`popen`), log and a client on its base URL."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, ready_path: str | None = "/readyz",
                 wait: bool = True) -> None:
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        self.popen: subprocess.Popen[bytes]
        self.start(wait)

    def start(self, wait: bool = True) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          env=child_env())
        if wait and self.ready_path is not None:
            self.wait_ready()

    def wait_ready(self, path: str | None = None, timeout: float = START_TIMEOUT_S) -> None:
        """Until `path` (the ready path by default) answers 200; the log's tail in the error otherwise."""
        path = path or self.ready_path or "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name}: {path} not 200 after {timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """predicate()'s first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)
