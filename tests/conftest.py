"""Shared test fixtures: one real Faultline stack per test session, on a free block of ports.

`stack` starts the lab with `faultline up -d` (real processes, real HTTP, proxies on every hop) in a temporary
FAULTLINE_HOME whose registry is a copy of the default trained models, and stops it at the end of the session.
Tests that destroy things (SIGKILL the lab, `down`) start their own with `stack_factory` instead. The pieces
(private stacks, ports, processes, waiting) live in the harness, tests/kit.py; this file only makes fixtures.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests run from a fresh clone without `pip install -e .` too
    sys.path.insert(0, str(ROOT))

import cpulock  # noqa: E402

# The harness (tests/kit.py) holds the pieces; these names stay importable from here for older tests.
from kit import (  # noqa: E402
    StackHandle,
    assert_all_gone,
    faultline,
    prepare_home,
    source_registry,
    start_stack,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files whose every test is `exclusive` first, then files with tests marked `slow`, the most such tests first (a
    stable sort: a file's tests stay together and in order). pytest-xdist hands files to workers in this order
    (`make test` passes `--no-loadscope-reorder`). The exclusive files, handed out first, take the machine one after
    the other while nothing else has started: spread through the session, each one's first test waited for the
    other workers' running tests to end (a drain) while its own worker sat idle. A long file handed out last would
    run alone at the end while the other workers sit idle."""
    slow: dict[Path, int] = {}
    shared: set[Path] = set()
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
        if not is_exclusive(item):
            shared.add(item.path)
    items.sort(key=lambda item: (item.path in shared, -slow[item.path]))


def is_exclusive(item: pytest.Item) -> bool:
    return item.get_closest_marker("exclusive") is not None


def xdist_lock_dir() -> Path | None:
    """The CPU lock's directory for this pytest-xdist run, the same for every worker of it; None without xdist."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return None if run is None else Path(tempfile.gettempdir()) / f"faultline-cpu-locks-{run}"


@pytest.fixture(scope="session")
def cpu_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where cpulock.py's locks live: under pytest-xdist, a directory every worker of this run sees."""
    return xdist_lock_dir() or tmp_path_factory.getbasetemp() / "cpu-locks"


CATALOG = ROOT / "tests" / "catalog"


def takes_lock(item: pytest.Item | None) -> bool:
    return item is not None and CATALOG not in item.path.parents


# The lock this worker holds between two tests: kept from an exclusive test to the next when that one is exclusive too.
_held: contextlib.ExitStack | None = None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist every test holds the CPU lock (tests/cpulock.py) from its setup to its teardown: shared,
    or the machine alone for a test marked `exclusive` (it measures rates, CPU shares or latencies, or drives a real
    browser). Outermost (tryfirst), so the wait for the lock is not counted in the test's timeout. The catalog's
    runs take the lock themselves, per scenario (catalogkit.CatalogLab): not here too, or a run would wait on itself.

    Consecutive exclusive tests on this worker (a file's) keep the machine from one to the next: released in
    between, the other workers' waiting shared tests got in first (measured: about every other time, with no gap at
    all), and the next exclusive test waited for the longest of them to end while its worker sat idle."""
    global _held
    lock_dir = xdist_lock_dir()
    if lock_dir is None or not takes_lock(item):
        yield
        return
    alone = is_exclusive(item)
    if _held is None:
        _held = contextlib.ExitStack()
        _held.enter_context(cpulock.machine(lock_dir, exclusive=alone))
    try:
        yield
    finally:
        if not (alone and takes_lock(nextitem) and is_exclusive(nextitem)):
            _held.close()
            _held = None


@pytest.fixture
def faultline_cli():
    """The `faultline` CLI as a function: faultline_cli("status", "--home", DIR) -> CompletedProcess."""
    return faultline


@pytest.fixture(scope="session")
def root_conftest() -> Any:
    """This file's stack helpers for tests in other folders that start private stacks of their own."""
    return SimpleNamespace(start_stack=start_stack, assert_all_gone=assert_all_gone)


@pytest.fixture
def fresh_home(tmp_path: Path, trained_registry: Path) -> Path:
    """An empty FAULTLINE_HOME holding a copy of the trained registry."""
    home = tmp_path / "home"
    prepare_home(home, trained_registry)
    return home


@pytest.fixture
def stack_factory(tmp_path: Path, trained_registry: Path) -> Iterator[Any]:
    """Start private stacks (for tests that take them down); whatever is still up is stopped at teardown."""
    started: list[StackHandle] = []

    def make(replicas: int = 2, name: str = "own") -> StackHandle:
        handle = start_stack(tmp_path / name, trained_registry, replicas=replicas)
        started.append(handle)
        return handle

    yield make
    for handle in started:
        if psutil.pid_exists(handle.lab_pid):
            handle.stop()
        handle.client.close()


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_registry(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> Iterator[StackHandle]:
    """One running stack shared by the whole session. Don't take it down; restore what you change."""
    handle = start_stack(tmp_path_factory.mktemp("faultline-home"), trained_registry)
    try:
        yield handle
    finally:
        handle.stop()
