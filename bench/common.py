"""Shared plumbing of the benchmarks: machine facts, child processes that die with us, readiness waits, rows.

Every benchmark starts its servers as child processes (own session, so the whole process tree can be stopped
by the id we started), on free loopback ports, and stops them in `finally`. Figures are recorded with the load
average at the time: the machine is shared and a figure without it cannot be judged.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from lab import privatelab
from lab.privatelab import child_env as child_env  # the environment every child of a benchmark gets

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOST = "127.0.0.1"


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the benchmark dies, even by SIGKILL (PR_SET_PDEATHSIG = 1)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gib = round(int(first.split()[1]) / 1024**2, 1)
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": load_average(),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Child:
    """A child process in its own session, with its output in a log file; `stop()` ends its whole group."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env or child_env(), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group we created (LitServe forks workers), SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever of the group is left (forked workers outliving their parent) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()


def wait_http(url: str, timeout: float, child: Child | None = None, ok: tuple[int, ...] = (200,)) -> float:
    """Poll `url` until it answers one of `ok`; returns the seconds waited. Raises with the child's log tail."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code in ok:
                    return time.monotonic() - t0
            time.sleep(0.05)
    tail = f":\n{child.log_tail()}" if child is not None else ""
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s{tail}")


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to put started children in; all of them are stopped on the way out, whatever happened."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def source_registry(cache: Path) -> Path:
    """The default trained registry: $FAULTLINE_HOME/registry, else ./.faultline/registry, else trained once."""
    return privatelab.source_registry(train_into=cache)


def copy_registry(dest_home: Path, cache: Path) -> Path:
    """A private copy of the default registry under `dest_home` (benchmarks never write the learner's)."""
    return privatelab.copy_registry(source_registry(cache), dest_home)


def model_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """n rows as the model sees them (every MODEL_FEATURE): generator transactions joined with card features."""
    from services.common.schema import MODEL_FEATURES
    from services.trainer.generator import Generator

    gen = Generator(seed)
    rows = []
    for txn in gen.sample(n):
        full = {**txn, **gen.card_features(txn["card_id"])}
        rows.append({k: full[k] for k in MODEL_FEATURES})
    return rows


def transactions(n: int, seed: int = 7, id_prefix: str = "bench") -> list[dict[str, Any]]:
    """n POST /v1/score bodies (no label), with ids unique to this run."""
    from services.trainer.generator import Generator

    stamp = f"{id_prefix}-{os.getpid()}-{int(time.time())}"
    out = []
    for i, txn in enumerate(Generator(seed).sample(n)):
        txn.pop("label", None)
        txn["transaction_id"] = f"{stamp}-{i}"
        out.append(txn)
    return out


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
