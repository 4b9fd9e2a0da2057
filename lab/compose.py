"""The compose backend: `faultline up --backend compose` drives `docker compose` on docker-compose.yml.

Same services, entrypoints, flags, ports and restart policies as the process backend (checked by
tests/stack/test_compose.py), with the real Toxiproxy image in front of every hop. Only argv lists are run, never
a shell string.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lab.specs import PACKAGE_ROOT

COMPOSE_FILE = PACKAGE_ROOT / "docker-compose.yml"
PROJECT = "faultline"


class ComposeUnavailable(RuntimeError):
    pass


def compose_argv(*args: str, file: Path = COMPOSE_FILE) -> list[str]:
    return ["docker", "compose", "-p", PROJECT, "-f", str(file), *args]


def check_docker() -> None:
    """Clear errors for the two usual problems: no docker CLI, or no compose plugin / engine."""
    if shutil.which("docker") is None:
        raise ComposeUnavailable(
            "docker is not installed (no `docker` on PATH) — install Docker with the compose plugin, "
            "or use the default process backend: `faultline up`"
        )
    try:
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComposeUnavailable(f"`docker compose version` failed: {exc}") from exc
    if r.returncode != 0:
        raise ComposeUnavailable(
            "`docker compose` is not available (" + (r.stderr or r.stdout).strip().splitlines()[0]
            + ") — install the Docker compose plugin, or use the default process backend: `faultline up`"
        )


def _run(argv: list[str]) -> int:
    try:
        check_docker()
    except ComposeUnavailable as exc:
        print(f"faultline: {exc}", file=sys.stderr)
        return 1
    return subprocess.run(argv, cwd=str(PACKAGE_ROOT)).returncode  # noqa: S603


def up(detach: bool = True) -> int:
    return _run(compose_argv("up", "-d", "--wait") if detach else compose_argv("up"))


def down() -> int:
    return _run(compose_argv("down"))


def ps() -> int:
    return _run(compose_argv("ps"))
