"""The catalog's CPU lock (tests/cpulock.py) hands the machine to every exclusive holder waiting before any shared
one: the catalog queues its exclusive runs first so that they follow one another (tests/catalog/conftest.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cpulock


def test_exclusive_holders_waiting_go_before_shared_ones(tmp_path: Path) -> None:
    order: list[str] = []
    release = threading.Event()

    def take(name: str, exclusive: bool, hold_s: float = 0.2) -> None:
        with cpulock.machine(tmp_path, exclusive=exclusive):
            order.append(name)
            if name == "first":
                release.wait(10)
            else:
                time.sleep(hold_s)

    threads = [threading.Thread(target=take, args=("first", False))]
    threads[0].start()
    while not order:
        time.sleep(0.01)
    # while a shared run holds the machine: an exclusive one, a shared one, then another exclusive one ask for it
    for name, exclusive in (("exclusive-1", True), ("shared", False), ("exclusive-2", True)):
        threads.append(threading.Thread(target=take, args=(name, exclusive)))
        threads[-1].start()
        time.sleep(0.3)
    assert order == ["first"], "an exclusive holder got the machine while a shared one held it"
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first", "exclusive-1", "exclusive-2", "shared"]


def test_shared_holders_share(tmp_path: Path) -> None:
    inside = threading.Barrier(2, timeout=5)  # both must be inside at once, or the barrier breaks

    def take() -> None:
        with cpulock.machine(tmp_path, exclusive=False):
            inside.wait()

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken
