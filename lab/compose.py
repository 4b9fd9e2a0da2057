"""The compose backend: `faultline up --backend compose` drives `docker compose` on docker-compose.yml.

Same services, entrypoints, flags, ports and restart policies as the process backend: the file is generated from
the part declarations (`python -m lab.compose generate [--check]`, lab/composegen.py; tests/stack/test_compose.py
checks it), with the real Toxiproxy image in front of every hop. Only argv lists are run, never a shell string.
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


def main(argv: list[str] | None = None) -> int:
    """`python -m lab.compose generate [--check]`: write docker-compose.yml and docker/toxiproxy.json from the
    part declarations, or with --check exit 1 when the committed files are stale."""
    import argparse

    from lab.composegen import generate

    parser = argparse.ArgumentParser(prog="faultline compose", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write docker-compose.yml and docker/toxiproxy.json from lab/parts/")
    gen.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    changed = generate(PACKAGE_ROOT, check=args.check)
    for path in changed:
        rel = path.relative_to(PACKAGE_ROOT)
        print(f"{rel} is stale — run `python -m lab.compose generate`" if args.check else f"wrote {rel}",
              file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
