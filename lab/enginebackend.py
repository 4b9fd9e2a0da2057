"""The engine-backed supervisor: the supervisor interface (lab/supervisor.py) over a compose project's containers,
driven through the Docker Engine API (Docker, or Podman's compatible service) on its unix socket.

What the faults and the console ask a supervisor for, the engine answers: `service_status` (state, pid, restarts,
last exit, OOM kills, memory limit) from container inspect; stop/start/restart; `kill` with a signal; pause/unpause
(the compose backend's freeze); `set_memory_limit` through the container's cgroup limit (a real kernel OOM kill,
exit 137, instead of the process backend's RSS watchdog); `logs` from the engine's log stream. Containers are
found by compose's labels (`com.docker.compose.project` / `com.docker.compose.service`), never by name patterns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil

from lab import compose, parts, specs
from lab.logbuffer import iso_utc
from lab.logsearch import line_matcher
from lab.process import ServiceSpec
from lab.stack import Stack, StackError
from lab.supervisor import UnknownService
from lab.topology import Topology

log = logging.getLogger("faultline.engine")

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
API_TIMEOUT_S = 30.0


class EngineError(RuntimeError):
    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class EngineAPI:
    """A small Docker Engine API client over a unix socket (the subset both Docker and Podman answer)."""

    def __init__(self, socket: str | None, project: str = "faultline") -> None:
        transport = httpx.HTTPTransport(uds=socket or "/var/run/docker.sock")
        self.http = httpx.Client(transport=transport, base_url="http://engine/v1.40", timeout=API_TIMEOUT_S)
        self.project = project

    def close(self) -> None:
        self.http.close()

    def _req(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EngineError(f"the container engine did not answer {method} {path}: {exc!r}", 503) from exc
        if r.status_code >= 400 and r.status_code != 304:
            try:
                detail = r.json().get("message", r.text)
            except ValueError:
                detail = r.text
            raise EngineError(f"the container engine refused {method} {path}: {detail}",
                              409 if r.status_code in (404, 409) else 502)
        return r

    def containers(self, every_project: bool = False) -> dict[str, str]:
        """{compose service: container id} of this project (stopped ones too); `every_project`: every container
        the engine has, whoever made it."""
        filters = json.dumps({} if every_project else {"label": [f"{PROJECT_LABEL}={self.project}"]})
        rows = self._req("GET", "/containers/json", params={"all": "true", "filters": filters}).json()
        return {r["Labels"].get(SERVICE_LABEL, r["Names"][0].lstrip("/")): r["Id"] for r in rows}

    def inspect(self, cid: str) -> dict[str, Any]:
        return self._req("GET", f"/containers/{cid}/json").json()

    def project_states(self) -> dict[str, str]:
        """{service: "healthy" | "starting" | "running" | "exited(N)" ...}, for waiting on `up`."""
        out = {}
        for name, cid in self.containers().items():
            st = self.inspect(cid)["State"]
            health = (st.get("Health") or {}).get("Status")
            if st.get("Status") == "exited":
                out[name] = f"exited({st.get('ExitCode')})"
            else:
                out[name] = health or st.get("Status", "?")
        return out

    def action(self, cid: str, verb: str, **params: Any) -> None:
        self._req("POST", f"/containers/{cid}/{verb}", params=params or None)

    def update_memory(self, cid: str, limit_bytes: int) -> None:
        # Swap equal to memory: no swap to hide in, so going over the limit is an OOM kill.
        self._req("POST", f"/containers/{cid}/update", json={"Memory": limit_bytes, "MemorySwap": limit_bytes})

    def logs(self, cid: str, tail: int | None = None, since: float | None = None) -> list[tuple[float, str]]:
        """(epoch time, line), oldest first, from the engine's log of the container (every start of it)."""
        params: dict[str, Any] = {"stdout": "true", "stderr": "true", "timestamps": "true",
                                  "tail": str(tail) if tail else "all"}
        if since is not None:
            params["since"] = str(int(since))
        out = []
        for raw in demux(self._req("GET", f"/containers/{cid}/logs", params=params).content):
            stamp, _, line = raw.partition(" ")
            out.append((_epoch(stamp), line))
        return out


def _epoch(stamp: str) -> float:
    """An engine log timestamp (RFC 3339, nanoseconds) as epoch seconds; now when it is not one."""
    from datetime import datetime

    head, dot, frac = stamp.rstrip("Z").partition(".")
    try:
        value = datetime.fromisoformat(head + (dot + frac[:6] if dot else "") + "+00:00")
    except ValueError:
        return time.time()
    return value.timestamp()


def demux(raw: bytes) -> list[str]:
    """Lines of a (non-TTY) log stream: 8-byte frame headers (stream, size) before each chunk; plain otherwise."""
    if len(raw) >= 8 and raw[0] in (1, 2) and raw[1:4] == b"\0\0\0":
        chunks, i = [], 0
        while i + 8 <= len(raw):
            size = struct.unpack(">I", raw[i + 4:i + 8])[0]
            chunks.append(raw[i + 8:i + 8 + size])
            i += 8 + size
        raw = b"".join(chunks)
    return raw.decode("utf-8", "replace").splitlines()



IMAGE = compose.IMAGE
WATCH_S = 0.5
CRASHLOOP_RESTARTS = 3


def toxiproxy_image() -> str:
    """The Toxiproxy image the user's file names (docker-compose.yml is generated from lab/parts/netproxy.py)."""
    from lab.parts.base import Part

    server: Part = next(p for p in parts.parts() if p.proxy_server)
    return str(server.compose_extra["image"])


def kernel_oom_killed(container_id: str) -> bool:
    """Whether the kernel log names this container's memory cgroup in an OOM kill (`oom-kill:... oom_memcg=...<id>`).
    False when the log cannot be read."""
    import subprocess

    if not container_id:
        return False
    try:
        r = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any("oom-kill:" in line and container_id in line for line in r.stdout.splitlines()[-2000:])


def project_name(home: Path) -> str:
    """One compose project per lab home, so private labs (tests, `faultline run`) never share containers."""
    return f"faultline-{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]}"


def container_command(spec: ServiceSpec) -> list[str]:
    """The spec's argv as the image runs it: the same module and flags, with the image's `python`. The lab's home
    is mounted at the same path, so every path in the argv is valid inside as well."""
    part = parts.part_for(spec.name)
    argv = list(spec.argv)
    if part is not None and part.proxy_server and "-m" not in argv[:3]:
        # A host toxiproxy-server binary: the image's embedded Toxiproxy-API server takes its place.
        return ["python", "-m", part.module, "--host", "127.0.0.1", "--port", str(spec.port)]
    if argv[1:2] == ["-m"]:
        argv[0] = "python"
    return argv


def _exit_record(code: int, oom: bool, at: str | None, stopping: bool) -> dict[str, Any]:
    sig = code - 128 if code > 128 else None
    reason = ("OOMKilled" if oom else "Stopped" if stopping else "Killed" if sig == 9
              else f"Signal {sig}" if sig else "Completed" if code == 0 else "Error")
    return {"code": code, "reason": reason, "signal": "SIGKILL" if sig == 9 else (f"SIG{sig}" if sig else None),
            "at": at or iso_utc(time.time()), "uptime_s": None}


class EngineSupervisor:
    """The supervisor interface (lab/supervisor.py: add, remove, update_spec, start/stop/restart, status, logs,
    wait_ready, shutdown) over containers of one compose project.

    Each service the lab adds becomes a container of docker-compose.yml's service of that name, through a runtime
    override (`<home>/compose.lab.yml`: the spec's command, memory limit, restart policy, the lab's home mounted at
    the same path) and `compose up -d --no-deps NAME`. Readiness is probed over HTTP on the service's own port, as
    the process supervisor does; exits (code, OOM kill) come from inspecting the containers. A start-up argv changed
    while the container runs applies at its next start, as under the process supervisor: the engine restarts a
    container with the command it was created with, so the watcher recreates it with the new one once it has died."""

    def __init__(self, engine: compose.Engine, home: Path, offline: bool, topology_host: str = "127.0.0.1") -> None:
        self.engine = engine
        self.home = home
        self.offline = offline
        self.project = project_name(home)
        self.api = EngineAPI(engine.socket, self.project)
        self.override = home / "compose.lab.yml"
        self.specs: dict[str, ServiceSpec] = {}
        self.host = topology_host
        self._ids: dict[str, str] = {}
        self._pending: set[str] = set()  # argv changed while running: recreate at its next death
        self._stopped: set[str] = set()  # stopped by the lab (not a crash)
        self._ready: dict[str, bool] = {}
        self._hooks: dict[str, Callable[[str], None]] = {}
        self._restarts: dict[str, int] = {}
        self._last_exit: dict[str, dict[str, Any]] = {}
        self._last_state: dict[str, str] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._http = httpx.Client(timeout=1.5, trust_env=False)
        self._thread: threading.Thread | None = None

    # --- compose ------------------------------------------------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        files = ["-f", str(compose.COMPOSE_FILE)]
        if self.offline:
            files += ["-f", str(compose.OFFLINE_FILE)]
        return [*self.engine.compose, "-p", self.project, *files, "-f", str(self.override),
                "--profile", "traffic", *args]

    def _compose(self, *args: str, timeout: float = 300.0) -> None:
        import subprocess

        env = self.engine.environ()
        env["FAULTLINE_UID"], env["FAULTLINE_GID"] = str(self.home.stat().st_uid), str(self.home.stat().st_gid)
        r = subprocess.run(self._argv(*args), cwd=str(compose.PACKAGE_ROOT), env=env, capture_output=True,  # noqa: S603
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise StackError(f"`{' '.join(args)}` failed on {self.engine.kind}: "
                             + (r.stderr or r.stdout).strip()[-600:])

    def _service(self, name: str) -> str:
        """The compose service running `name`: its own, except the proxy server, which runs as `<name>-host` (the
        user's file publishes its ports on a bridge network; ports cannot be dropped by an override, and the lab's
        layout is the host's loopback)."""
        part = parts.part_for(name)
        return f"{name}-host" if part is not None and part.proxy_server else name

    def _write_override(self) -> None:
        import yaml

        home = str(self.home.resolve())
        services: dict[str, Any] = {}
        for name, spec in self.specs.items():
            part = parts.part_for(name)
            svc: dict[str, Any] = {
                "command": container_command(spec),
                "restart": {"always": "always", "never": "no", "no": "no"}.get(spec.restart.mode, "on-failure"),
                "environment": dict(spec.env),
                # The host's loopback, as the process backend: the lab reaches each service on its own port (its
                # probes, config pushes, faults) and nothing listens beyond 127.0.0.1.
                "network_mode": "host",
            }
            if spec.memory_limit_bytes:
                svc["mem_limit"] = spec.memory_limit_bytes
                svc["memswap_limit"] = spec.memory_limit_bytes  # no swap to hide in: over the limit is an OOM kill
            if part is not None and part.proxy_server:
                if self.offline:
                    svc.update(image=IMAGE, init=True)
                else:  # the real Toxiproxy image, on loopback, with the process backend's hops
                    svc["image"] = toxiproxy_image()
                    svc["command"] = ["-host=127.0.0.1", f"-port={spec.port}", "-config=/config/toxiproxy.json"]
                    svc["volumes"] = ["./docker/toxiproxy.offline.json:/config/toxiproxy.json:ro"]
            else:
                svc["image"] = IMAGE
                svc["volumes"] = [f"{home}:{home}"]
                svc["depends_on"] = {}
            services[self._service(name)] = svc
        text = ("# Written by the lab (lab/enginebackend.py) for this run: the lab's specs as compose overrides.\n"
                + yaml.safe_dump({"services": services}, sort_keys=False))
        self.override.write_text(text)

    # --- the supervisor interface -------------------------------------------------------------------------------

    def start(self) -> EngineSupervisor:
        self._write_override()
        self._thread = threading.Thread(target=self._watch, name="faultline-engine-watch", daemon=True)
        self._thread.start()
        threading.Thread(target=self._events, name="faultline-engine-events", daemon=True).start()
        return self

    def names(self) -> list[str]:
        return list(self.specs)

    def spec(self, name: str) -> ServiceSpec:
        if name not in self.specs:
            raise UnknownService(name, self.specs)
        return self.specs[name]

    def _cid(self, name: str) -> str | None:
        service = self._service(name)
        if service not in self._ids:
            self._ids = self.api.containers()
        return self._ids.get(service)

    def add(self, spec: ServiceSpec, start: bool = True, on_ready: Callable[[str], None] | None = None) -> None:
        if self._closed.is_set():
            raise StackError("the stack is shutting down")
        with self._lock:
            self.specs[spec.name] = spec
            if on_ready is not None:
                self._hooks[spec.name] = on_ready
            self._ready[spec.name] = False
            self._write_override()
            if start:
                self._recreate(spec.name)

    def _recreate(self, name: str) -> None:
        # Under the lock, and never once shutdown began (which takes the lock to begin): a start racing the
        # shutdown (a traffic start, the watcher's recreation) would otherwise create its container after
        # `compose down`, and leave it behind.
        with self._lock:
            if self._closed.is_set():
                raise StackError("the stack is shutting down")
            self._pending.discard(name)
            self._stopped.discard(name)
            self._ready[name] = False
            self._compose("up", "-d", "--no-deps", "--force-recreate", "--no-build", self._service(name))
            self._ids.pop(self._service(name), None)
            self._last_state.pop(name, None)  # a new container: its first start is not a restart

    def update_spec(self, name: str, **changes: Any) -> None:
        with self._lock:
            spec = self.spec(name)
            if "restart" in changes and isinstance(changes["restart"], str):
                changes["restart"] = dataclasses.replace(spec.restart, mode=changes["restart"])
            new = dataclasses.replace(spec, **changes)
            self.specs[name] = new
            self._write_override()
            cid = self._cid(name)
            if cid is None:
                return
            if "memory_limit_bytes" in changes:
                # Live, as `docker update --memory`: the kernel enforces it in the container's cgroup at once.
                limit = new.memory_limit_bytes or 0
                try:
                    if self.engine.kind == "podman":  # Podman's compatible API has no /update: its CLI does it
                        self._update_memory_cli(cid, limit)
                    else:
                        self.api.update_memory(cid, limit if limit else -1)
                except (StackError, EngineError) as exc:
                    # The kernel refuses a cgroup v1 limit below what the container uses now (EBUSY): the container
                    # is recreated under it instead, so it starts over its limit and the kernel OOM-kills it.
                    log.warning("%s: live memory limit refused (%s); recreating it under the new limit", name, exc)
                    self._recreate(name)
                    return
            if "argv" in changes and list(changes["argv"]) != list(spec.argv):
                self._pending.add(name)

    def _update_memory_cli(self, cid: str, limit: int) -> None:
        import subprocess

        engine = "podman" if self.engine.kind == "podman" else "docker"
        value = str(limit) if limit else "-1"
        r = subprocess.run([engine, "update", "--memory", value, "--memory-swap", value, cid],  # noqa: S603
                           env=self.engine.environ(), capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise StackError(f"could not change the memory limit: {(r.stderr or r.stdout).strip()[-300:]}")

    def start_service(self, name: str) -> None:
        self.spec(name)
        self._recreate(name)

    def stop_service(self, name: str, grace_s: float = 5.0) -> None:
        self.spec(name)
        cid = self._cid(name)
        self._stopped.add(name)
        if cid is not None:
            self.api.action(cid, "stop", t=max(1, int(grace_s)))
        self._ready[name] = False

    def restart_service(self, name: str, grace_s: float = 5.0) -> None:
        self.stop_service(name, grace_s)
        self._recreate(name)  # a restart runs the current spec, as the process supervisor's does

    def remove(self, name: str, grace_s: float = 5.0) -> None:
        self.spec(name)
        cid = self._cid(name)
        if cid is not None:
            self._stopped.add(name)
            self.api.action(cid, "stop", t=max(1, int(grace_s)))
            self.api._req("DELETE", f"/containers/{cid}", params={"force": "true", "v": "true"})
        with self._lock:
            self.specs.pop(name, None)
            self._ids.pop(self._service(name), None)
            self._write_override()

    def kill(self, name: str, signal_name: str = "KILL") -> None:
        cid = self._cid(name)
        if cid is not None:
            self.api.action(cid, "kill", signal=signal_name)

    def freeze(self, name: str) -> None:
        cid = self._cid(name)
        if cid is not None:
            self.api.action(cid, "pause")

    def thaw(self, name: str) -> None:
        cid = self._cid(name)
        if cid is not None:
            self.api.action(cid, "unpause")

    def shutdown(self, grace_s: float = 5.0, order: list[list[str]] | None = None) -> None:
        """Stop tier by tier (traffic first, the proxy server last), then `compose down`: no container, network or
        volume of the project is left; the Podman service this lab started goes too when nothing else uses it."""
        with self._lock:  # waits for a container being created: it is then stopped and removed below
            if self._closed.is_set():
                return
            self._closed.set()
        for tier in order or []:
            for name in tier:
                cid = self._cid(name) if name in self.specs else None
                if cid is not None:
                    try:
                        self.api.action(cid, "stop", t=max(1, int(grace_s)))
                    except EngineError as exc:
                        log.warning("stopping %s: %s", name, exc)
        try:
            self._compose("down", "--volumes", "--remove-orphans", "-t", str(max(1, int(grace_s))))
        finally:
            self.override.unlink(missing_ok=True)
            if self.engine.kind == "podman" and not self.api.containers(every_project=True):
                compose.stop_podman_service()
            self._http.close()

    # --- reading ------------------------------------------------------------------------------------------------

    def _probe(self, spec: ServiceSpec) -> bool:
        if not spec.url or spec.ready_path is None:
            return True
        try:
            return self._http.get(spec.url + spec.ready_path).status_code == 200
        except httpx.HTTPError:
            return False

    def _inspect(self, name: str) -> dict[str, Any] | None:
        cid = self._cid(name)
        if cid is None:
            return None
        try:
            return self.api.inspect(cid)
        except EngineError:
            self._ids.pop(self._service(name), None)
            return None

    def service_status(self, name: str) -> dict[str, Any]:
        spec = self.spec(name)
        info = self._inspect(name)
        st = (info or {}).get("State") or {}
        alive = bool(st.get("Running")) or bool(st.get("Paused"))
        pid = st.get("Pid") or None if alive else None
        rss = 0
        if pid:
            try:
                proc = psutil.Process(pid)
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                rss = 0
        restarts = self._restarts.get(name, 0)
        if info is None:
            state = "stopped" if name in self._stopped else "starting"
        elif st.get("Restarting") or (not alive and st.get("Status") in ("exited", "stopped") and
                                      name not in self._stopped and spec.restart.mode != "no"):
            state = "crashloop" if restarts >= CRASHLOOP_RESTARTS else "backoff"
        elif not alive:
            state = "stopped" if name in self._stopped else "exited"
        elif self._ready.get(name):
            state = "running"
        else:
            state = "starting"
        # The lab's own record: Podman's inspect keeps the creation-time limit after `podman update`.
        limit = spec.memory_limit_bytes
        return {
            "name": name,
            "url": spec.url,
            "port": spec.port,
            "pid": pid,
            "state": state,
            "ready": alive and self._ready.get(name, False),
            "not_ready_reason": None if self._ready.get(name) or not alive else "not answering its readiness probe",
            "rss_bytes": rss,
            "cpu_percent": 0.0,
            "restarts": restarts,
            "last_exit": self._last_exit.get(name),
            "memory_limit_bytes": limit or None,
            "restart_policy": spec.restart.mode,
            "started_at": st.get("StartedAt") if alive else None,
            "restart_in_s": None,
            "argv": list(spec.argv),
            "log_file": None,
            "container": ((info or {}).get("Id") or "")[:12] or None,
            "oom_killed": bool(st.get("OOMKilled")),
        }

    def status(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return [self.service_status(n) for n in (list(names) if names is not None else self.names())]

    def logs(self, name: str, grep: str | None = None, tail: int | None = None, since: float | None = None,
             regex: bool = False, match: Any = None) -> list[dict[str, Any]]:
        self.spec(name)
        keep = match if match is not None else line_matcher(grep, regex)
        cid = self._cid(name)
        lines = self.api.logs(cid, since=since) if cid else []
        rows = [{"t": t, "ts": iso_utc(t), "line": line} for t, line in lines if keep is None or keep(line)]
        return rows[-tail:] if tail else rows

    def log_file(self, name: str) -> Path | None:
        return None

    def wait_ready(self, names: Iterable[str], timeout_s: float) -> list[str]:
        names = list(names)
        deadline = time.time() + timeout_s
        while True:
            pending = [n for n in names if not self._ready.get(n)]
            if not pending or time.time() >= deadline:
                return pending
            time.sleep(0.1)

    # --- the watcher: readiness, exits, restarts, pending start-up argv ----------------------------------------------

    def _watch(self) -> None:
        while not self._closed.wait(WATCH_S):
            for name in list(self.specs):
                try:
                    self._watch_one(name)
                except Exception as exc:  # noqa: BLE001 - one container's trouble must not stop the watcher
                    log.warning("watching %s: %s", name, exc)

    def _watch_one(self, name: str) -> None:
        spec = self.specs.get(name)
        info = self._inspect(name) if spec is not None else None
        if spec is None or info is None:
            return
        st = info.get("State") or {}
        count = int(info.get("RestartCount") or 0)
        started = st.get("StartedAt", "")
        key = f"{started}|{count}"
        previous = self._last_state.get(name)
        if previous is not None and previous != key and name not in self._stopped:
            # It died and the engine started it again since the last look: a restart, with the exit it had.
            self._restarts[name] = self._restarts.get(name, 0) + 1
            self._ready[name] = False
            self._note_exit(name, info)
            if name in self._pending:
                self._recreate(name)  # its new start-up argv, which the engine's restart did not use
                return
        self._last_state[name] = key
        alive = bool(st.get("Running"))
        if not alive or st.get("Restarting"):
            self._ready[name] = False
            if st.get("Status") in ("exited", "stopped") or st.get("Restarting"):
                self._note_exit(name, info)
            if name in self._pending and name not in self._stopped:
                self._recreate(name)
            return
        ready = self._probe(spec)
        if ready and not self._ready.get(name):
            hook = self._hooks.get(name)
            if hook is not None:
                try:
                    hook(name)
                except Exception as exc:  # noqa: BLE001 - the stack records its own errors
                    log.warning("on_ready of %s: %s", name, exc)
        self._ready[name] = ready

    def _events(self) -> None:
        """Every death of the project's containers, from the engine's event stream: the exit code the engine
        reports, and whether the kernel's OOM killer did it (the engine's `oom` event, or — Podman 4 with runc on
        cgroup v1 reports neither OOMKilled nor an `oom` event — the kernel log naming the container's memory
        cgroup). Polling inspect would miss these: Podman restarts a container within milliseconds."""
        # Filtered by type and label only: Podman's compatible API ignores Docker's event names in filters.
        filters = json.dumps({"type": ["container"], "label": [f"{PROJECT_LABEL}={self.project}"]})
        by_service = {}
        while not self._closed.is_set():
            try:
                with self.api.http.stream("GET", "/events", params={"filters": filters}, timeout=None) as r:
                    for line in r.iter_lines():
                        if self._closed.is_set():
                            return
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        attrs = (event.get("Actor") or {}).get("Attributes") or {}
                        service = attrs.get(SERVICE_LABEL, "")
                        name = service.removesuffix("-host") if service.endswith("-host") else service
                        cid = (event.get("Actor") or {}).get("ID") or event.get("id") or ""
                        if event.get("Action") == "oom":
                            by_service[name] = True
                        elif event.get("Action") == "die" and name in self.specs:
                            code = int(attrs.get("exitCode", 0) or 0)
                            oom = by_service.pop(name, False) or (code == 137 and kernel_oom_killed(cid))
                            self._last_exit[name] = _exit_record(code, oom, iso_utc(time.time()),
                                                                 name in self._stopped)
            except (httpx.HTTPError, ValueError) as exc:
                if self._closed.wait(1.0):
                    return
                log.debug("engine events: %s; reconnecting", exc)

    def _note_exit(self, name: str, info: dict[str, Any]) -> None:
        st = info.get("State") or {}
        code = st.get("ExitCode")
        if code is None or (code == 0 and not st.get("OOMKilled")) or name in self._last_exit:
            return  # the event stream (_events) records exits; this is the fallback for ones it never saw
        finished = st.get("FinishedAt")
        rec = self._last_exit.get(name)
        if rec is not None and rec.get("at") == finished:
            return
        self._last_exit[name] = _exit_record(int(code), bool(st.get("OOMKilled")), finished, name in self._stopped)


class ComposeStack(Stack):
    """The stack on the compose backend: the process backend's start order, hops, status, traffic and faults, with
    an EngineSupervisor in place of the process supervisor (every service a container of docker-compose.yml)."""

    backend = "compose"

    def __init__(self, topology: Topology, settings: specs.StackSettings, run_id: str,
                 toxiproxy_url: str | None = None, ready_timeout_s: float = 90.0) -> None:
        settings = dataclasses.replace(settings, python="python", netproxy_argv=None)
        super().__init__(topology, settings, run_id, toxiproxy_url=toxiproxy_url, ready_timeout_s=ready_timeout_s)
        try:
            engine = compose.detect()
        except compose.ComposeUnavailable as exc:
            raise StackError(str(exc)) from exc
        self.engine = engine
        self.supervisor = EngineSupervisor(engine, settings.home, compose.offline_default(), topology.host)

    def status(self) -> dict[str, Any]:
        st = super().status()
        st["backend"] = "compose"
        st["engine"] = self.engine.kind
        st["compose_project"] = self.supervisor.project
        return st

    def log_path(self, name: str) -> Path | None:
        self._check_service(name)
        return None
