"""Tests that lean on the CPU get the machine to themselves when the suite runs on several pytest-xdist workers.

Both parts of `make test` run on workers (see the Makefile). Most tests spend their time waiting on real processes
(probe windows, readiness, sleeps), so workers share two cores without touching each other's timings. A few would:
- in the catalog (tests/catalog/), a CPU hog, or replicas starting (torch imports on every core: judged on the ops
  the run applies), or a whole stack starting; those runs take the lock exclusively (`is_cpu_heavy`) and the others
  share it;
- in the rest of the suite, tests marked `exclusive` (a real Chromium driving the UI, the benchmarks' smoke runs,
  load generators held to a rate, CPU hogs whose share is measured, a 10 s bound): tests/conftest.py holds the lock
  around every test, exclusively for those.
A turnstile in front keeps a waiting exclusive holder from being starved by the other workers' stream of shared ones,
and a shared taker also waits while any exclusive holder runs or waits (`exclusive.lock`): exclusive holders queued
together (the catalog queues its exclusive runs first) take the machine one after the other, drained once.
Without xdist nothing contends and the locks cost nothing. The lock files live in a directory every worker of one
pytest run sees (`xdist_lock_dir` in tests/conftest.py, keyed by xdist's run id); two separate pytest runs do not
see each other's locks.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HEAVY_OPS = {"scale"}  # new replicas import torch on every core; a retrain is ~3 s of one thread, shared is fine


def is_cpu_heavy(scenario: Any, mode: str | None = None) -> bool:
    """A CPU fault, or a run whose ops start replicas: `mode` "solve" applies the reference solution only,
    "wrong-fix" the wrong fix only (a solved stale-draft never scales: only its wrong fix does); None, either."""
    if any(f.kind == "cpu" for f in scenario.faults):
        return True
    solution = scenario.solution if mode in (None, "solve") else []
    wrong = (scenario.wrong_fix or []) if mode in (None, "wrong-fix") else []
    return any(op.op in HEAVY_OPS for op in [*solution, *wrong])


@contextmanager
def machine(lock_dir: Path, exclusive: bool) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (open(lock_dir / "exclusive.lock", "a+") as queued, open(lock_dir / "turnstile.lock", "a+") as turnstile,
          open(lock_dir / "cpu.lock", "a+") as cpu):
        if exclusive:
            fcntl.flock(queued, fcntl.LOCK_SH)  # until the machine is released: see below
        else:
            # Wait until no exclusive holder runs or waits. Without this a shared taker that reached the turnstile
            # between two exclusive ones got in, and the second then waited for that whole shared run to end (with
            # every other worker waiting behind it): exclusive runs queued together alternated with shared ones.
            fcntl.flock(queued, fcntl.LOCK_EX)
            fcntl.flock(queued, fcntl.LOCK_UN)
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(cpu, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(cpu, fcntl.LOCK_UN)
            fcntl.flock(queued, fcntl.LOCK_UN)
