"""Where the lab keeps its state on disk, and how a CLI finds the running lab.

FAULTLINE_HOME (default ./.faultline) holds the registry, the feature store's db, run logs and `lab.json`:
the running lab's pid, URL and process start time. A pid alone can be reused after a crash; the start time
tells a live lab from a stale file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LAB_FILE = "lab.json"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get("FAULTLINE_HOME")
    return Path(env).expanduser().resolve() if env else (Path.cwd() / ".faultline").resolve()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


@dataclass(frozen=True)
class LabInfo:
    pid: int
    url: str
    home: str
    run_id: str
    backend: str
    create_time: float

    def alive(self) -> bool:
        """The process in lab.json is running and is the same process (not a reused pid)."""
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def write_lab_info(home: Path, url: str, run_id: str, backend: str = "process") -> LabInfo:
    pid = os.getpid()
    info = LabInfo(pid=pid, url=url, home=str(home), run_id=run_id, backend=backend,
                   create_time=psutil.Process(pid).create_time())
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{LAB_FILE}.{pid}"
    tmp.write_text(json.dumps(asdict(info), indent=2))
    tmp.replace(home / LAB_FILE)
    return info


def read_lab_info(home: Path) -> LabInfo | None:
    try:
        data = json.loads((home / LAB_FILE).read_text())
        return LabInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_lab_info(home: Path, pid: int | None = None) -> None:
    """Remove lab.json, but only our own (a newer lab may have replaced it)."""
    info = read_lab_info(home)
    if info is None or pid is None or info.pid == pid:
        try:
            (home / LAB_FILE).unlink()
        except FileNotFoundError:
            pass


def running_lab(home: Path) -> LabInfo | None:
    info = read_lab_info(home)
    return info if info is not None and info.alive() else None


def lab_url(home: Path, explicit: str | None = None) -> str | None:
    """--lab-url, else FAULTLINE_LAB_URL, else the live lab recorded in HOME/lab.json."""
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("FAULTLINE_LAB_URL")
    if env:
        return env.rstrip("/")
    info = running_lab(home)
    return info.url if info else None
