"""Shared test fixtures: one real Faultline stack per test session, on a free block of ports.

`stack` starts the lab with `faultline up -d` (real processes, real HTTP, proxies on every hop) in a temporary
FAULTLINE_HOME whose registry is a copy of the default trained models, and stops it at the end of the session.
Tests that destroy things (SIGKILL the lab, `down`) start their own with `start_stack(...)` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests run from a fresh clone without `pip install -e .` too
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from lab.ports import find_free_block, is_free  # noqa: E402
from lab.topology import Topology  # noqa: E402


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOXIPROXY_URL", "FAULTLINE_LAB_URL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def faultline(*args: str, timeout: float = 180, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real `faultline` CLI (as `python -m lab.cli`) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=_child_env(), cwd=str(ROOT))
    if check and proc.returncode != 0:
        raise AssertionError(f"faultline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def source_registry(cache: Path) -> Path:
    """The default trained registry: $FAULTLINE_HOME/registry, else ./.faultline/registry, else trained once."""
    for home in filter(None, [os.environ.get("FAULTLINE_HOME"), str(ROOT / ".faultline")]):
        reg = Path(home) / "registry"
        if (reg / "versions" / "v1" / "meta.json").is_file():
            return reg
    reg = cache / "registry"
    if not (reg / "versions" / "v1" / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "services.trainer", "defaults", "--home", str(cache)], check=True,
                       env=_child_env(), cwd=str(ROOT), timeout=900)
    return reg


@dataclass
class StackHandle:
    home: Path
    topology: Topology
    lab_url: str
    public_url: str
    lab_pid: int
    up_seconds: float
    up_output: str
    client: httpx.Client = field(repr=False)

    def status(self) -> dict[str, Any]:
        r = self.client.get(self.lab_url + "/api/status")
        r.raise_for_status()
        return r.json()

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return faultline(*args, "--home", str(self.home), timeout=timeout)

    def all_pids(self) -> list[int]:
        return [self.lab_pid] + [s["pid"] for s in self.status()["services"] if s["pid"]]

    def stop(self) -> None:
        """`faultline down`; then make sure: nothing of this stack may outlive the test."""
        try:
            faultline("down", "--home", str(self.home), timeout=120)
        finally:
            _kill_if_alive(self.lab_pid)
            self.client.close()


def _kill_if_alive(pid: int) -> None:
    try:
        p = psutil.Process(pid)
        p.wait(15)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        p.kill()  # its children die with it (PR_SET_PDEATHSIG)


def prepare_home(home: Path, registry: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(registry, home / "registry", dirs_exist_ok=True)


def start_stack(home: Path, registry: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> StackHandle:
    """`faultline up -d` on a free block of ports, in `home` (a copy of `registry` goes in it)."""
    if not (home / "registry").exists():
        prepare_home(home, registry)
    last = ""
    for _ in range(3):  # another test run may grab a port between our check and the start: pick another block
        ports = find_free_block(replicas)
        topo = Topology(ports=ports, replicas=replicas)
        t0 = time.time()
        proc = faultline("up", "-d", "--home", str(home), "--replicas", str(replicas),
                         "--base-port", str(ports.base), "--netproxy-port", str(ports.netproxy),
                         "--lab-port", str(ports.lab), "--exit-with", str(os.getpid()),
                         # generous: on a machine shared with other test runs start-up can be many times slower
                         "--ready-timeout", "180", "--timeout", "230", *extra, timeout=240)
        took = time.time() - t0
        if proc.returncode == 0:
            info = json.loads((home / "lab.json").read_text())
            return StackHandle(home=home, topology=topo, lab_url=info["url"], public_url=topo.public_url,
                               lab_pid=info["pid"], up_seconds=took, up_output=proc.stdout,
                               client=httpx.Client(timeout=30, trust_env=False))
        last = proc.stdout + proc.stderr
        faultline("down", "--home", str(home), timeout=120)
        if "already in use" not in last:
            break
    raise AssertionError(f"faultline up -d failed:\n{last}")


def assert_all_gone(pids: list[int], ports: list[int], timeout: float = 10) -> None:
    """Every pid gone (zombies count as gone) and every port without a listener, within `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        busy = [p for p in ports if not is_free(p)]
        if not alive and not busy:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: processes {alive}, listening ports {busy}")


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
