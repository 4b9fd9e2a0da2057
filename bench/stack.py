"""A private Faultline stack for a benchmark: `faultline up -d` on a free block of ports in a temporary home.

The home holds a copy of the default trained registry; the lab is told to exit with this process
(`--exit-with`), and `stop()` runs `faultline down` and then makes sure the lab's pid is gone. Everything is
reached the way a learner reaches it: the CLI and the lab's JSON API.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import PYTHON, REPO, child_env, copy_registry
from lab.ports import find_free_block
from lab.topology import Ports, Topology


def faultline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The real CLI (`python -m lab.cli ...`), output captured."""
    return subprocess.run([PYTHON, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=REPO)


@dataclass
class BenchStack:
    home: Path
    topology: Topology
    lab_url: str
    lab_pid: int
    up_seconds: float
    client: httpx.Client = field(repr=False)

    @property
    def public_url(self) -> str:
        return self.topology.public_url

    def api(self, method: str, path: str, timeout: float = 120.0, **kwargs: Any) -> Any:
        r = self.client.request(method, self.lab_url + path, timeout=timeout, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def status(self) -> dict[str, Any]:
        return self.api("GET", "/api/status", timeout=30)

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return faultline(*args, "--home", str(self.home), timeout=timeout)

    def stop(self) -> None:
        try:
            faultline("down", "--home", str(self.home), timeout=120)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                p = psutil.Process(self.lab_pid)
                try:
                    p.wait(15)
                except psutil.TimeoutExpired:
                    p.kill()  # its services die with it (PR_SET_PDEATHSIG)
            self.client.close()


def up(home: Path, cache: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> BenchStack:
    """`faultline up -d` in `home` on a free block of ports; a port grabbed meanwhile means another block."""
    copy_registry(home, cache)
    last = ""
    for _ in range(3):
        ports: Ports = find_free_block(replicas)
        t0 = time.monotonic()
        proc = faultline("up", "-d", "--home", str(home), "--replicas", str(replicas), "--base-port",
                         str(ports.base), "--netproxy-port", str(ports.netproxy), "--lab-port", str(ports.lab),
                         "--exit-with", str(os.getpid()), *extra)
        took = time.monotonic() - t0
        if proc.returncode == 0:
            info = json.loads((home / "lab.json").read_text())
            return BenchStack(home, Topology(ports=ports, replicas=replicas), info["url"], info["pid"], took,
                              httpx.Client(timeout=30, trust_env=False))
        last = proc.stdout + proc.stderr
        faultline("down", "--home", str(home), timeout=120)
        if "already in use" not in last:
            break
    raise RuntimeError(f"faultline up -d failed:\n{last[-2000:]}")


@contextlib.contextmanager
def running(home: Path, cache: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> Iterator[BenchStack]:
    stack = up(home, cache, replicas, extra)
    try:
        yield stack
    finally:
        stack.stop()
