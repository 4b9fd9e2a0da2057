"""A CPU hog: `python -m lab.faults.hog --cores N --duty D` keeps N cores busy D of the time until killed.

Started by the cpu.hog fault as a scenario-owned process (the learner may find it and `kill` it). One process per
core: the first burns too and forks the others, which die with it (PR_SET_PDEATHSIG, and the supervisor kills the
whole process group when the first one exits). Threads in one process would not do: they take turns on the GIL,
so 16 "busy" threads keep only two or three runnable, and a waking service barely waits for a core. Each worker
hashes a buffer for `duty` of every period and sleeps the rest. Standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import os
import signal
import sys
import time

PERIOD_S = 0.1
CHUNK = b"\xa5" * (64 * 1024)
PR_SET_PDEATHSIG = 1


def burn(duty: float) -> None:
    busy = PERIOD_S * duty
    while True:
        start = time.perf_counter()
        h = hashlib.sha256()
        while time.perf_counter() - start < busy:
            h.update(CHUNK)
        rest = PERIOD_S - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


def _die_with(parent: int) -> None:
    libc = ctypes.util.find_library("c")
    if libc is not None:
        ctypes.CDLL(libc, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.faults.hog", description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--duty", type=float, default=1.0)
    args = p.parse_args(argv)
    if not 1 <= args.cores <= 64 or not 0 < args.duty <= 1:
        print("hog: --cores must be 1..64 and --duty in (0, 1]", file=sys.stderr)
        return 2
    me = os.getpid()
    workers = []
    for _ in range(args.cores - 1):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with(me)
            burn(args.duty)
        workers.append(pid)

    def stop(*_: object) -> None:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"busy on {args.cores} core(s) at {args.duty:.0%} duty ({len(workers) + 1} processes)", flush=True)
    burn(args.duty)
    return 0


if __name__ == "__main__":
    sys.exit(main())
