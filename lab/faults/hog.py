"""A CPU hog: `python -m lab.faults.hog --cores N --duty D` keeps N cores busy D of the time until killed.

Started by the cpu.hog fault as a scenario-owned process (the learner may find it and `kill` it). One process,
N threads: each hashes a buffer in slices (hashlib releases the GIL on large inputs, so the threads really run in
parallel) for `duty` of every period and sleeps the rest. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import threading
import time

PERIOD_S = 0.1
CHUNK = b"\xa5" * (256 * 1024)


def burn(duty: float, stop: threading.Event) -> None:
    busy = PERIOD_S * duty
    while not stop.is_set():
        start = time.perf_counter()
        h = hashlib.sha256()
        while time.perf_counter() - start < busy:
            h.update(CHUNK)
        rest = PERIOD_S - (time.perf_counter() - start)
        if rest > 0:
            stop.wait(rest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.faults.hog", description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--duty", type=float, default=1.0)
    args = p.parse_args(argv)
    if not 1 <= args.cores <= 64 or not 0 < args.duty <= 1:
        print("hog: --cores must be 1..64 and --duty in (0, 1]", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=burn, args=(args.duty, stop), daemon=True) for _ in range(args.cores)]
    for t in threads:
        t.start()
    print(f"busy on {args.cores} core(s) at {args.duty:.0%} duty", flush=True)
    while not stop.wait(1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
