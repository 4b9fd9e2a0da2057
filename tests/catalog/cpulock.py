"""Runs that lean on the CPU get the machine to themselves when the catalog runs on several workers.

The catalog may run on several pytest-xdist workers (three in `make test`), each with its own private lab: most runs
spend their time waiting for probe windows (the CPU is ~65 % idle with three labs on two cores), so the labs share the
cores without touching each other's latency. A CPU hog, or replicas starting (torch imports on every core), would:
those runs take the lock exclusively and the others share it. A turnstile in front keeps a waiting exclusive run
from being starved by the other workers' stream of shared runs.
Without xdist nothing contends and the locks cost nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HEAVY_OPS = {"scale"}  # new replicas import torch on every core; a retrain is ~3 s of one thread, shared is fine


def is_cpu_heavy(scenario: Any) -> bool:
    """A CPU fault, or a reference or wrong fix that starts replicas."""
    if any(f.kind == "cpu" for f in scenario.faults):
        return True
    ops = [*scenario.solution, *(scenario.wrong_fix or [])]
    return any(op.op in HEAVY_OPS for op in ops)


@contextmanager
def machine(lock_dir: Path, exclusive: bool) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "turnstile.lock", "a+") as turnstile, open(lock_dir / "cpu.lock", "a+") as cpu:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(cpu, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(cpu, fcntl.LOCK_UN)
