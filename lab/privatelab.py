"""A private lab: `faultline up -d` on a free block of ports, in a home of its own holding a copy of the trained
registry; `stop()` runs `faultline down` and makes sure the lab's process is gone.

The one implementation behind the headless runner's lab (`faultline run`, lab/runner.py), the benchmarks'
(bench/stack.py) and the tests' private stacks (tests/kit.py). Everything goes through the real CLI and, once up,
the lab's JSON API, as a learner's lab would; nothing here binds anything but 127.0.0.1 (the CLI's default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lab import parts
from lab.client import LabError
from lab.ports import find_free_block
from lab.specs import PACKAGE_ROOT
from lab.state import resolve_home
from lab.topology import Ports, Topology

UP_TIMEOUT_S = 240.0  # `up -d --timeout`: start-up on a machine shared with other runs can be many times slower
DOWN_TIMEOUT_S = 120.0
TRAIN_TIMEOUT_S = 900.0
# What a child must not inherit: a lab or Toxiproxy the caller's shell points at is not the private lab's.
FOREIGN_ENV = ("TOXIPROXY_URL", "FAULTLINE_LAB_URL")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child run from the repo: the repo on PYTHONPATH, no foreign lab URLs."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def lab_cli(*args: str, timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """The real `faultline` CLI (`python -m lab.cli ARGS`), output captured; never a shell."""
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=str(PACKAGE_ROOT))


def trainer_argv(*args: str) -> list[str]:
    """The trainer's command line (`python -m services.trainer ARGS`, e.g. `defaults --home DIR`)."""
    return [sys.executable, "-m", "services.trainer", *args]


def source_registry(home: Path | None = None, train_into: Path | None = None) -> Path:
    """The trained registry to copy: HOME/registry ($FAULTLINE_HOME or ./.faultline), else the repo's .faultline;
    else, with `train_into`, the defaults trained once into that directory; else a LabError saying what to run."""
    for candidate in (resolve_home(home) / "registry", PACKAGE_ROOT / ".faultline" / "registry"):
        if (candidate / "versions" / "v1" / "meta.json").is_file():
            return candidate
    if train_into is None:
        raise LabError("no trained models found — run `make setup` (or `python -m services.trainer defaults`)")
    reg = train_into / "registry"
    if not (reg / "versions" / "v1" / "meta.json").is_file():
        subprocess.run(trainer_argv("defaults", "--home", str(train_into)), check=True, env=child_env(),
                       cwd=str(PACKAGE_ROOT), timeout=TRAIN_TIMEOUT_S)
    return reg


def copy_registry(registry: Path, home: Path) -> Path:
    """HOME/registry as a copy of `registry` unless it is there already (a private lab never writes the source)."""
    home.mkdir(parents=True, exist_ok=True)
    dest = home / "registry"
    if not dest.exists():
        shutil.copytree(registry, dest)
    return dest


@dataclass
class PrivateLab:
    """A lab of its own: its home, URL, pid, ports and an HTTP client; stopped (and its home removed, if it made
    it) by `stop()`."""

    home: Path
    url: str
    pid: int
    owns_home: bool
    up_seconds: float
    ports: Ports
    replicas: int
    up_output: str = ""
    # The tracks it runs (`faultline up --track`) and the LLM replicas of the LLM track.
    tracks: tuple[str, ...] = ("fraud",)
    llm_replicas: int = 2
    # For callers that talk to the lab's API or the services directly (tests, benchmarks); closed by stop().
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, trust_env=False), repr=False)

    @property
    def lab_url(self) -> str:
        return self.url

    @property
    def lab_pid(self) -> int:
        return self.pid

    @property
    def topology(self) -> Topology:
        counts = ((parts.replica_part("llm").name, self.llm_replicas),) if "llm" in self.tracks else ()
        return Topology(ports=self.ports, replicas=self.replicas, tracks=self.tracks, counts=counts)

    @property
    def public_url(self) -> str:
        return self.topology.public_url

    @classmethod
    def start(cls, registry: Path, replicas: int = 2, home: Path | None = None, exit_with: int | None = None,
              up_args: tuple[str, ...] = (), timeout_s: float = UP_TIMEOUT_S, track: str = "fraud",
              llm_replicas: int = 2) -> PrivateLab:
        """`faultline up -d` in `home` (a new temporary one by default) on a free block of ports.

        The lab exits with `exit_with` (this process by default). `up_args` go to `faultline up` as they are
        (e.g. `--token T`, `--ready-timeout S`); `track` / `llm_replicas` are up's `--track` / `--llm-replicas`.
        Raises LabError with up's output when the stack does not start.
        """
        owns = home is None
        home = Path(tempfile.mkdtemp(prefix="faultline-run-")) if home is None else home
        copy_registry(registry, home)
        last = ""
        for _ in range(3):  # a port may be taken between the check and the start: another block then
            ports = find_free_block(replicas)
            t0 = time.monotonic()
            proc = lab_cli("up", "-d", "--home", str(home), "--replicas", str(replicas),
                           "--base-port", str(ports.base), "--netproxy-port", str(ports.netproxy),
                           "--lab-port", str(ports.lab), "--exit-with", str(exit_with or os.getpid()),
                           "--timeout", f"{timeout_s:g}", "--track", track, "--llm-replicas", str(llm_replicas),
                           *up_args, timeout=timeout_s + 30)
            if proc.returncode == 0:
                info = json.loads((home / "lab.json").read_text())
                return cls(home=home, url=info["url"], pid=info["pid"], owns_home=owns,
                           up_seconds=round(time.monotonic() - t0, 2), ports=ports, replicas=replicas,
                           up_output=proc.stdout, tracks=parts.resolve_tracks(track), llm_replicas=llm_replicas)
            last = proc.stdout + proc.stderr
            down(home)
            if "already in use" not in last:
                break
        if owns:
            shutil.rmtree(home, ignore_errors=True)
        raise LabError(f"the private stack did not start:\n{last.strip()}")

    def cli(self, *args: str, timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """A `faultline` command on this lab (`--home` added)."""
        return lab_cli(*args, "--home", str(self.home), timeout=timeout)

    def stop(self, keep: bool = False, wait_s: float = 30.0) -> None:
        """`faultline down`, then the lab's pid gone (killed after `wait_s`); the home removed if it is ours."""
        try:
            down(self.home)
        finally:
            wait_gone(self.pid, wait_s)
            self.client.close()
            if self.owns_home and not keep:
                shutil.rmtree(self.home, ignore_errors=True)


def down(home: Path) -> subprocess.CompletedProcess[str]:
    return lab_cli("down", "--home", str(home), timeout=DOWN_TIMEOUT_S)


def wait_gone(pid: int, timeout_s: float) -> None:
    """Wait for `pid` to exit; SIGKILL it after `timeout_s` (a lab's services die with it: PR_SET_PDEATHSIG)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        proc.wait(timeout_s)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        proc.kill()
