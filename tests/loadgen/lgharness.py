"""Helpers for the load generator tests: start a real recording peer process and real locust processes.

Every process binds 127.0.0.1 on a port found free just before start, and is stopped (SIGTERM, then SIGKILL)
at teardown so nothing outlives the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kit import wait_until as wait_until

from lab.parts.loadgen import LoadgenClient, loadgen_argv

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("lgpeer.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class Peer:
    url: str
    proc: subprocess.Popen[Any]
    http: httpx.Client = field(repr=False)

    def log(self, since_score: int = 0, since_feedback: int = 0) -> dict[str, Any]:
        r = self.http.get("/peer/log", params={"since_score": since_score, "since_feedback": since_feedback})
        r.raise_for_status()
        return r.json()

    def counts(self) -> tuple[int, int]:
        log = self.log(since_score=10**9, since_feedback=10**9)
        return log["n_scores"], log["n_feedback"]

    def configure(self, **cfg: Any) -> None:
        self.http.post("/peer/config", json=cfg).raise_for_status()


@dataclass
class Loadgen:
    proc: subprocess.Popen[Any]
    client: LoadgenClient
    url: str
    argv: list[str]
    log_path: Path

    def stop(self) -> int:
        self.client.close()
        return stop_process(self.proc)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_peer() -> Peer:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PEER), "--port", str(port)],
        env=child_env(),
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=10, trust_env=False)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError("peer exited at start")
        try:
            return http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 20)
    return Peer(url=url, proc=proc, http=http)


def run_loadgen(argv: list[str], log_path: Path) -> subprocess.Popen[Any]:
    # Output goes to a file, not a pipe: a pipe nobody reads would block the process once full.
    with log_path.open("wb") as out:
        return subprocess.Popen(argv, env=child_env(), cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)


def start_loadgen(target: str, rps: float, log_dir: Path, profile: str = "baseline", **kwargs: Any) -> Loadgen:
    port = free_port()
    argv = loadgen_argv(target, rps, profile, port, python=sys.executable, **kwargs)
    log_path = log_dir / f"loadgen-{port}.log"
    proc = run_loadgen(argv, log_path)
    url = f"http://127.0.0.1:{port}"
    client = LoadgenClient(url)
    try:
        deadline = time.monotonic() + 30
        while not client.ready():
            if proc.poll() is not None:
                raise AssertionError(f"loadgen exited at start ({proc.returncode}):\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("loadgen not ready after 30s")
            time.sleep(0.1)
    except BaseException:
        client.close()
        stop_process(proc)
        raise
    return Loadgen(proc=proc, client=client, url=url, argv=argv, log_path=log_path)
