"""Helpers for the load generator tests: a real recording peer process (lgpeer.py) and real locust processes.

Ports, the children's environment, process start and stop come from the harness (tests/kit.py); every process
binds 127.0.0.1 on a port found free just before start, and is stopped (SIGTERM, then SIGKILL) at teardown so
nothing outlives the tests.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kit import REPO, ServiceProc, child_env
from kit import free_port as free_port  # `X as X`: also re-exported, the tests import these from here
from kit import loadgen_argv as loadgen_argv
from kit import stop_process as stop_process
from kit import wait_until as wait_until

from lab.parts.loadgen import LoadgenClient

ROOT = REPO  # the old name
PEER = Path(__file__).with_name("lgpeer.py")
LOADGEN_READY_S = 30.0


@dataclass
class Peer:
    url: str
    service: ServiceProc = field(repr=False)
    http: httpx.Client = field(repr=False)

    @property
    def proc(self) -> subprocess.Popen[Any]:
        return self.service.popen

    def log(self, since_score: int = 0, since_feedback: int = 0) -> dict[str, Any]:
        r = self.http.get("/peer/log", params={"since_score": since_score, "since_feedback": since_feedback})
        r.raise_for_status()
        return r.json()

    def counts(self) -> tuple[int, int]:
        log = self.log(since_score=10**9, since_feedback=10**9)
        return log["n_scores"], log["n_feedback"]

    def configure(self, **cfg: Any) -> None:
        self.http.post("/peer/config", json=cfg).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        self.service.client.close()
        self.service.stop()


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


def start_peer(log_dir: Path | None = None) -> Peer:
    """The recording peer, ready; its log in `log_dir` (a new temporary directory by default)."""
    log_dir = Path(tempfile.mkdtemp(prefix="lgpeer-")) if log_dir is None else log_dir
    port = free_port()
    service = ServiceProc("lgpeer", [sys.executable, str(PEER), "--port", str(port)], port, log_dir,
                          ready_path="/healthz")
    return Peer(url=service.url, service=service, http=httpx.Client(base_url=service.url, timeout=10, trust_env=False))


def run_loadgen(argv: list[str], log_path: Path) -> subprocess.Popen[Any]:
    # Output goes to a file, not a pipe: a pipe nobody reads would block the process once full.
    with log_path.open("wb") as out:
        return subprocess.Popen(argv, env=child_env(), cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT)


def start_loadgen(target: str, rps: float, log_dir: Path, profile: str = "baseline", **kwargs: Any) -> Loadgen:
    port = free_port()
    argv = loadgen_argv(target, rps, profile, port, python=sys.executable, **kwargs)
    log_path = log_dir / f"loadgen-{port}.log"
    proc = run_loadgen(argv, log_path)
    url = f"http://127.0.0.1:{port}"
    client = LoadgenClient(url)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"loadgen exited at start ({proc.returncode}):\n{log_path.read_text()}")
        return client.ready()

    try:
        wait_until(ready, LOADGEN_READY_S, what="loadgen ready")
    except BaseException:
        client.close()
        stop_process(proc)
        raise
    return Loadgen(proc=proc, client=client, url=url, argv=argv, log_path=log_path)
