"""The compose backend: `faultline up / down / status --backend compose` on any Docker-API engine.

Supported engines, detected in this order (`detect()`): Docker with the compose v2 plugin (`docker compose`), then
docker-compose v1 against $DOCKER_HOST or the Docker socket, then docker-compose v1 against Podman, whose Docker-API
service (`podman system service`) the lab starts on a socket of its own under `.podman/` and stops on `down`. With
none of them the error says what to install. The compose file is docker-compose.yml (the user's file, generated from
the part declarations: `python -m lab.compose generate [--check]`, lab/composegen.py), plus with `offline` the
override docker/compose.offline.yml (our Toxiproxy-API netproxy instead of the Toxiproxy image, for machines with no
registry). Podman here needs `[containers] default_ulimits = []`: given through CONTAINERS_CONF pointing at a file
under `.podman/`, never by editing /etc. Only argv lists are run, never a shell string.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.specs import PACKAGE_ROOT

COMPOSE_FILE = PACKAGE_ROOT / "docker-compose.yml"
OFFLINE_FILE = PACKAGE_ROOT / "docker" / "compose.offline.yml"
PROJECT = "faultline"
PODMAN_DIR = Path(os.environ.get("FAULTLINE_PODMAN_DIR", str(PACKAGE_ROOT / ".podman")))
IMAGE = "faultline:dev"
INSTALL_HINT = ("install Docker with the compose plugin, or docker-compose (v1) with Docker or Podman "
                "(Debian: `apt-get install podman docker-compose`), or use the default process backend: "
                "`faultline up`")


class ComposeUnavailable(RuntimeError):
    pass


@dataclass
class Engine:
    """How to run compose here: the compose argv prefix, the environment it needs, and the Docker-API socket."""

    kind: str  # "docker-compose-v2", "docker-compose-v1", "podman"
    compose: list[str]
    env: dict[str, str] = field(default_factory=dict)
    socket: str | None = None  # the Docker-API unix socket path (None: the docker CLI's default)

    def environ(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        # The data directory is bind-mounted: the services run as its owner (docker-compose.yml's `user:`).
        home = Path(env.get("FAULTLINE_HOME", str(PACKAGE_ROOT / ".faultline")))
        if home.exists():
            env.setdefault("FAULTLINE_UID", str(home.stat().st_uid))
            env.setdefault("FAULTLINE_GID", str(home.stat().st_gid))
        return env


def _ok(argv: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> bool:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def podman_env() -> dict[str, str]:
    """CONTAINERS_CONF / CONTAINERS_STORAGE_CONF for Podman: files under .podman/ (written when missing), so
    /etc stays untouched and images, layers and the socket live with the project."""
    PODMAN_DIR.mkdir(parents=True, exist_ok=True)
    conf = PODMAN_DIR / "containers.conf"
    if not conf.exists():
        # Without default_ulimits runc fails here: "error setting rlimit type 7: operation not permitted"; crun
        # refuses this machine's hybrid cgroups, runc does not.
        conf.write_text("[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n")
    storage = PODMAN_DIR / "storage.conf"
    if not storage.exists():
        storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{PODMAN_DIR / "storage"}"\n'
                           f'runroot = "{PODMAN_DIR / "run"}"\n')
    env = {"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}
    return {k: os.environ.get(k, v) for k, v in env.items()}


def podman_socket() -> Path:
    return PODMAN_DIR / "podman.sock"


def _socket_of(docker_host: str) -> str | None:
    return docker_host[len("unix://"):] if docker_host.startswith("unix://") else None


def detect(start_podman: bool = True) -> Engine:
    """The first engine that works here (see the module's doc); ComposeUnavailable naming what to install."""
    docker = shutil.which("docker")
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker and _ok([docker, "compose", "version"]) and _ok([docker, "info"], timeout=30):
        return Engine("docker-compose-v2", [docker, "compose"], socket=_socket_of(docker_host) or
                      "/var/run/docker.sock")
    v1 = shutil.which("docker-compose")
    if v1 is not None:
        if docker_host:
            return Engine("docker-compose-v1", [v1], socket=_socket_of(docker_host))
        if Path("/var/run/docker.sock").exists() and (docker is None or _ok([docker, "info"], timeout=30)):
            return Engine("docker-compose-v1", [v1], socket="/var/run/docker.sock")
        if shutil.which("podman"):
            env = podman_env()
            sock = podman_socket()
            if start_podman:
                start_podman_service(env)
            env["DOCKER_HOST"] = f"unix://{sock}"
            return Engine("podman", [v1], env=env, socket=str(sock))
    found = ", ".join(n for n in ("docker", "docker-compose", "podman") if shutil.which(n)) or "none of them"
    raise ComposeUnavailable(
        f"no container engine with compose found (on PATH: {found}; `docker compose` "
        f"{'works' if docker and _ok([docker, 'compose', 'version']) else 'is not available'}, "
        f"{'no Docker daemon answers' if docker else 'no docker CLI'}) — {INSTALL_HINT}")


def _service_pid_file() -> Path:
    return PODMAN_DIR / "service.pid"


def podman_service_pid() -> int | None:
    try:
        pid = int(_service_pid_file().read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_podman_service(env: dict[str, str], timeout_s: float = 30.0) -> None:
    """`podman system service --time=0` on .podman/podman.sock, once (its pid in .podman/service.pid)."""
    sock = podman_socket()
    if podman_service_pid() is not None and sock.exists():
        return
    sock.unlink(missing_ok=True)
    log = open(PODMAN_DIR / "service.log", "ab")  # noqa: SIM115 — the child keeps it
    proc = subprocess.Popen(  # noqa: S603
        ["podman", "system", "service", "--time=0", f"unix://{sock}"], env={**os.environ, **env},
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    _service_pid_file().write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ComposeUnavailable(f"`podman system service` did not open {sock} (see {PODMAN_DIR / 'service.log'})")
        time.sleep(0.1)


def stop_podman_service() -> None:
    """Stop the service this lab started and remove its socket: nothing is left behind."""
    pid = podman_service_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
    _service_pid_file().unlink(missing_ok=True)
    podman_socket().unlink(missing_ok=True)


def offline_default() -> bool:
    """The offline override unless FAULTLINE_COMPOSE_OFFLINE=0: no registry answers on the machines we test."""
    return os.environ.get("FAULTLINE_COMPOSE_OFFLINE", "1") != "0"


def _engine_or_report() -> Engine | None:
    try:
        return detect()
    except ComposeUnavailable as exc:
        print(f"faultline: {exc}", file=sys.stderr)
        return None


def down(home: Path | None = None, offline: bool | None = None) -> int:
    """Remove every container, network and volume of the lab's project for `home` (and of the hand-run project
    `faultline`), then stop the Podman service the lab started and remove its socket."""
    try:
        engine = detect()  # with Podman, its service runs for the clean-up and is stopped after
    except ComposeUnavailable as exc:
        print(f"faultline: {exc}", file=sys.stderr)
        return 1
    off = offline_default() if offline is None else offline
    code = 0
    for project in _projects(home):
        r = subprocess.run([*engine.compose, "-p", project, "-f", str(COMPOSE_FILE),  # noqa: S603
                            *(["-f", str(OFFLINE_FILE)] if off else []), "--profile", "traffic",
                            "down", "--volumes", "--remove-orphans", "-t", "2"],
                           cwd=str(PACKAGE_ROOT), env=engine.environ(), text=True)
        code = code or r.returncode
    if engine.kind == "podman":
        from lab.enginebackend import EngineAPI, EngineError

        try:
            others = EngineAPI(engine.socket).containers(every_project=True)
        except EngineError:
            others = {}
        if others:  # another lab's containers still need the service
            print(f"faultline: the Podman service keeps running for {len(others)} other container(s)",
                  file=sys.stderr)
        else:
            stop_podman_service()
    return code


def _podman_json(*args: str) -> list[dict]:
    r = subprocess.run(["podman", *args, "--format", "json"], capture_output=True, text=True,  # noqa: S603, S607
                       env={**os.environ, **podman_env()}, timeout=60)
    if r.returncode != 0:
        raise ComposeUnavailable(f"podman {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout or "[]") or []


def _podman_quiet(*args: str) -> bool:
    return _ok(["podman", *args], env={**os.environ, **podman_env()}, timeout=120)


def sweep() -> int:
    """What a stopped or killed test run can leave in this checkout's Podman storage (`.podman/`): every container
    and volume of a `faultline*` compose project, the networks of the projects whose containers it removed, and the
    Podman service. `make test-compose` runs it after the tests, whatever happened (a failure, its hard timeout);
    after a clean run there is nothing to remove. Podman only (a Docker engine's objects are the user's, never
    swept); networks only by project, because Podman keeps them machine-wide (another checkout's lab may be using
    one). Prints what it removed; exit 0."""
    if not shutil.which("podman"):
        return 0

    def project(labels: dict | None) -> str:
        name = str((labels or {}).get("com.docker.compose.project", ""))
        return name if name.startswith(PROJECT) else ""

    removed: list[str] = []
    containers = [c for c in _podman_json("ps", "-a") if project(c.get("Labels"))]
    projects = {project(c.get("Labels")) for c in containers}
    if containers and _podman_quiet("rm", "-f", "-t", "2", *[c["Id"] for c in containers]):
        removed += [f"container {(c.get('Names') or [c['Id'][:12]])[0]}" for c in containers]
    for v in _podman_json("volume", "ls"):
        if project(v.get("Labels")) and _podman_quiet("volume", "rm", "-f", v["Name"]):
            removed.append(f"volume {v['Name']}")
    for n in _podman_json("network", "ls"):
        name = n.get("name") or n.get("Name", "")
        # no -f: a network some other container still uses is not ours to take away
        if project(n.get("labels") or n.get("Labels")) in projects - {""} and _podman_quiet("network", "rm", name):
            removed.append(f"network {name}")
    if not [c for c in _podman_json("ps", "-a") if project(c.get("Labels"))]:
        stop_podman_service()
    for what in removed:
        print(f"faultline compose sweep: removed {what}", file=sys.stderr)
    return 0


def _projects(home: Path | None) -> list[str]:
    from lab.enginebackend import project_name

    return [PROJECT] + ([project_name(home)] if home is not None else [])


def ps(home: Path | None = None) -> int:
    engine = _engine_or_report()
    if engine is None:
        return 1
    code = 0
    for project in _projects(home):
        print(f"project {project}:")
        r = subprocess.run([*engine.compose, "-p", project, "-f", str(COMPOSE_FILE), "ps"],  # noqa: S603
                           cwd=str(PACKAGE_ROOT), env=engine.environ(), text=True)
        code = code or r.returncode
    return code


def main(argv: list[str] | None = None) -> int:
    """`python -m lab.compose generate [--check]`: write docker-compose.yml and docker/toxiproxy.json from the
    part declarations, or with --check exit 1 when the committed files are stale; `engine`: the engine detected;
    `sweep`: remove what a stopped test run left (`make test-compose` runs it last)."""
    import argparse

    from lab.composegen import generate

    parser = argparse.ArgumentParser(prog="faultline compose", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write docker-compose.yml and docker/toxiproxy.json from lab/parts/")
    gen.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    sub.add_parser("engine", help="print which container engine the compose backend would use")
    sub.add_parser("sweep", help="remove what a stopped test run left in .podman/ (faultline containers, volumes, "
                                 "networks; the Podman service)")
    args = parser.parse_args(argv)
    if args.cmd == "sweep":
        try:
            return sweep()
        except (ComposeUnavailable, subprocess.TimeoutExpired, ValueError) as exc:
            print(f"faultline compose sweep: {exc}", file=sys.stderr)
            return 1
    if args.cmd == "engine":
        try:
            engine = detect(start_podman=False)
        except ComposeUnavailable as exc:
            print(f"faultline: {exc}", file=sys.stderr)
            return 1
        print(engine.kind)
        return 0
    changed = generate(PACKAGE_ROOT, check=args.check)
    for path in changed:
        rel = path.relative_to(PACKAGE_ROOT)
        print(f"{rel} is stale — run `python -m lab.compose generate`" if args.check else f"wrote {rel}",
              file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
