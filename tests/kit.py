"""The test harness: ports, the children's environment, service processes, waiting, and private stacks.

Every test folder sets up through this module; a folder's own helper module keeps only what is its own (a test
peer, a browser-like session, ...). All of it is real: processes started on free loopback ports, real HTTP.
- ports: `free_port()` (one port), `find_free_block()` (a block for a whole stack, lab/ports.py);
- `child_env()`: the environment every child gets (the repo on PYTHONPATH; no lab, Toxiproxy or locust settings
  leaking in from the caller's shell);
- `ServiceProc`: one started process (a service, a test peer, locust): URL, log in the test's tmp dir, ready
  wait, stop by pid, start again with the same argv on the same port; `stop_process` for a bare Popen;
- `service_argv()` / `start_service()`: a service's command line as the lab writes it (lab.specs, through
  bench/standalone.py), wired to the URLs and paths the test gives; `loadgen_argv` is the load generator's;
- `wait_until()`: a condition's first truthy value, or an AssertionError naming it;
- private stacks (`start_stack`, `StackHandle`, `faultline`): lab/privatelab.py's `PrivateLab` with an HTTP
  client, the `faultline` CLI, and `assert_all_gone` for tests that take a stack down.
tests/conftest.py turns these into fixtures (the session's shared `stack`, `stack_factory`, ...).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.standalone import standalone_argv
from lab.client import LabError
from lab.parts.loadgen import loadgen_argv as loadgen_argv
from lab.ports import find_free_block as find_free_block
from lab.ports import free_port as free_port
from lab.ports import is_free
from lab.privatelab import PrivateLab, copy_registry, lab_cli
from lab.privatelab import child_env as _lab_child_env
from lab.privatelab import source_registry as _lab_source_registry
from lab.privatelab import trainer_argv as trainer_argv

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0  # generous: imports (torch) are slow on a loaded 2-core machine
# A private stack's `faultline up -d`: start-up on a machine shared with other test runs can be many times slower.
STACK_UP_ARGS = ("--ready-timeout", "180")
STACK_UP_TIMEOUT_S = 230.0


# --- the children's environment -----------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """What every process a test starts inherits: lab/privatelab.py's child environment, unbuffered output, and no
    LOCUST_* variables (locust reads them as options)."""
    return {k: v for k, v in _lab_child_env({"PYTHONUNBUFFERED": "1"}).items() if not k.startswith("LOCUST_")}


# --- processes ----------------------------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """SIGTERM, SIGKILL after `timeout`; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class ServiceProc:
    """One started service: its URL, pid (`popen`), log and a client on its base URL."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, ready_path: str | None = "/readyz",
                 wait: bool = True) -> None:
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        self.popen: subprocess.Popen[bytes]
        self.start(wait)

    def start(self, wait: bool = True) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          env=child_env())
        if wait and self.ready_path is not None:
            self.wait_ready()

    def wait_ready(self, path: str | None = None, timeout: float = START_TIMEOUT_S) -> None:
        """Until `path` (the ready path by default) answers 200; the log's tail in the error otherwise."""
        path = path or self.ready_path or "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name}: {path} not 200 after {timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        stop_process(self.popen, timeout=10)


def service_argv(name: str, port: int, **wiring: Any) -> list[str]:
    """`python -m services.X --host 127.0.0.1 --port PORT ...` as lab.specs writes it for the lab, wired by
    bench/standalone.py's `standalone_argv` keywords: registry, db, feature_store, models, versions, seed, config,
    extra."""
    return standalone_argv(name, port, **wiring)


def start_service(name: str, log_dir: Path, *, proc_name: str | None = None, ready_path: str | None = "/readyz",
                  wait: bool = True, extra: Sequence[str] = (), **wiring: Any) -> ServiceProc:
    """Service `name` (gateway, feature-store, registry, model-N, netproxy) alone on a free port."""
    port = free_port()
    argv = service_argv(name, port, extra=extra, **wiring)
    return ServiceProc(proc_name or name, argv, port, log_dir, ready_path=ready_path, wait=wait)


# --- waiting ------------------------------------------------------------------------------------------------------


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """predicate()'s first truthy value; AssertionError naming `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


def status_problems(status: dict[str, Any]) -> list[str]:
    """What keeps a lab's /api/status from healthy: services not running and ready, proxies disabled or with toxics."""
    found = [f"{s['name']} {s['state']}" for s in status["services"] if s["state"] != "running" or not s["ready"]]
    found += [f"proxy {p['name']} enabled={p['enabled']} toxics={len(p['toxics'] or [])}"
              for p in status["proxies"] if not p["enabled"] or p["toxics"]]
    return found


# --- private stacks -----------------------------------------------------------------------------------------------


def faultline(*args: str, timeout: float = 180, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real `faultline` CLI (as `python -m lab.cli`) and capture its output."""
    proc = lab_cli(*args, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"faultline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def source_registry(cache: Path) -> Path:
    """The default trained registry: $FAULTLINE_HOME/registry, else ./.faultline/registry, else trained once."""
    return _lab_source_registry(train_into=cache)


def train_defaults(home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m services.trainer defaults --home HOME` (the registry's default v1 and v2), output captured."""
    return subprocess.run(trainer_argv("defaults", "--home", str(home)), cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def prepare_home(home: Path, registry: Path) -> None:
    copy_registry(registry, home)


class StackHandle(PrivateLab):
    """A private stack (lab/privatelab.py's PrivateLab) with what tests ask of it."""

    def status(self) -> dict[str, Any]:
        r = self.client.get(self.lab_url + "/api/status")
        r.raise_for_status()
        return r.json()

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def all_pids(self) -> list[int]:
        return [self.lab_pid] + [s["pid"] for s in self.status()["services"] if s["pid"]]


# A tiny LLM for modules that need the LLM track where `make setup` did not train one (services/llm/train.py).
TINY_LLM_TRAIN = ("--tiny", "--seconds", "0", "--steps", "150", "--draft-seconds", "0", "--draft-steps", "100",
                  "--batch", "8")


def registry_with_llm(registry: Path, scratch: Path) -> Path:
    """`registry` if it holds the LLM versions `make setup` trains; else a copy of it with a tiny LLM trained in
    `scratch` by the real trainer CLI."""
    if (registry / "llm" / "versions" / "v1" / "meta.json").is_file():
        return registry
    home = scratch / "llm-train"
    proc = subprocess.run([sys.executable, "-m", "services.llm.train", "--home", str(home), *TINY_LLM_TRAIN],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = scratch / "registry"
    shutil.copytree(registry, combined)
    shutil.copytree(home / "registry" / "llm", combined / "llm")
    return combined


@contextmanager
def llm_track(registry: Path, home: Path, llm_replicas: int) -> Iterator[StackHandle]:
    """`faultline up -d --track llm` on a free block of ports in `home`, stopped on exit."""
    try:
        handle = StackHandle.start(registry, home=home, track="llm", llm_replicas=llm_replicas, timeout_s=240)
    except LabError as exc:
        raise AssertionError(f"faultline up -d --track llm failed: {exc}") from None
    assert isinstance(handle, StackHandle)
    try:
        yield handle
    finally:
        handle.stop()


def start_stack(home: Path, registry: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> StackHandle:
    """`faultline up -d` on a free block of ports, in `home` (a copy of `registry` goes in it)."""
    try:
        handle = StackHandle.start(registry, replicas=replicas, home=home, up_args=(*STACK_UP_ARGS, *extra),
                                   timeout_s=STACK_UP_TIMEOUT_S)
    except LabError as exc:
        raise AssertionError(f"faultline up -d failed: {exc}") from None
    assert isinstance(handle, StackHandle)
    return handle


def assert_all_gone(pids: list[int], ports: list[int], timeout: float = 10) -> None:
    """Every pid gone (zombies count as gone) and every port without a listener, within `timeout`."""
    deadline = time.time() + timeout
    alive, busy = pids, ports
    while time.time() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        busy = [p for p in ports if not is_free(p)]
        if not alive and not busy:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: processes {alive}, listening ports {busy}")

