"""The process supervisor: runs services as child processes and keeps them in the state they should be in.

One long-lived thread runs an asyncio loop that owns every child: it forks them (so PR_SET_PDEATHSIG, which
fires when the *forking thread* exits, is tied to a thread that lives as long as the supervisor), reads their
output, reaps them, samples RSS/CPU, enforces memory limits like the kernel's OOM killer, probes readiness and
restarts by policy with backoff. Other threads (API handlers, the CLI's foreground run) call the thread-safe
methods below; each hops onto the loop and waits for the answer.

Knows nothing about Faultline's services: lab/stack.py tells it what to run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lab.logsearch import LineMatch, line_matcher
from lab.process import ManagedProcess, RestartPolicy, ServiceSpec

T = TypeVar("T")

TICK_S = 0.2
CPU_EVERY_TICKS = 5
PROBE_TIMEOUT_S = 2.0
PROBE_FAST_S = 0.1  # while starting: readiness is what `faultline up` waits on
PROBE_SLOW_S = 1.0
UNREADY_AFTER_FAILURES = 2


def _reason(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("reason") or body.get("detail") or body)[:300]
    except (ValueError, AttributeError):
        return r.text[:300]


class SupervisorClosed(RuntimeError):
    """The supervisor is shutting down: it starts nothing new."""


class UnknownService(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.message = f"no service named {name!r}; services are: {', '.join(known) or '(none)'}"

    def __str__(self) -> str:
        return self.message


class Supervisor:
    def __init__(self, log_dir: Path | None = None, log_capacity: int = 5000) -> None:
        self.log_dir = log_dir
        self.log_capacity = log_capacity
        self._procs: dict[str, ManagedProcess] = {}
        self._ready_hooks: dict[str, Callable[[str], None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="faultline-supervisor", daemon=True)
        self._started = threading.Event()
        self._closed = False
        self._closing = False
        self._http: httpx.AsyncClient | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._readers: dict[str, int] = {}
        self._tick_task: asyncio.Task[None] | None = None
        atexit.register(self.kill_all)

    # --- lifecycle of the supervisor itself ---------------------------------------------------------------------

    def start(self) -> Supervisor:
        self._thread.start()
        self._started.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False)
        self._tick_task = self._loop.create_task(self._ticker())
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()

    def _call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run fn on the supervisor thread and return its result."""
        if threading.current_thread() is self._thread or self._closed or not self._thread.is_alive():
            # After shutdown nothing mutates any more: reading (status, logs) from the caller's thread is safe.
            return fn()
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def _await(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot block the supervisor thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def shutdown(self, grace_s: float = 5.0, order: list[list[str]] | None = None) -> None:
        """Stop every service (tier by tier when `order` is given), then the supervisor thread."""
        if self._closed:
            return
        self._closing = True  # no new services from here on: nothing may start behind the teardown
        if not self._thread.is_alive():
            self._closed = True
            return
        tiers = order or []
        named = {n for tier in tiers for n in tier}
        rest = [n for n in self.names() if n not in named]
        for tier in [*tiers, rest]:
            present = [n for n in tier if n in self._procs]
            if present:
                self.stop_many(present, grace_s)
        self._closed = True

        async def close() -> None:
            for task in self._probes.values():
                task.cancel()
            if self._tick_task is not None:
                self._tick_task.cancel()
            if self._http is not None:
                await self._http.aclose()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        for p in self._procs.values():
            p.log.close()

    def kill_all(self) -> None:
        """Last resort (atexit, fatal errors): SIGKILL every process group we started. Thread-agnostic."""
        for p in list(self._procs.values()):
            if p.alive():
                p.stopping = True
                p.signal_group(signal.SIGKILL)

    # --- the loop -----------------------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        n = 0
        while True:
            n += 1
            now = time.time()
            for p in list(self._procs.values()):
                try:
                    self._tick_one(p, now, with_cpu=n % CPU_EVERY_TICKS == 0)
                except Exception as exc:  # noqa: BLE001 - one bad process must not stop supervision of the others
                    p.event(f"supervisor error: {exc!r}")
            await asyncio.sleep(TICK_S)

    def _tick_one(self, p: ManagedProcess, now: float, with_cpu: bool) -> None:
        if p.alive():
            p.sample(with_cpu)
            limit = p.spec.memory_limit_bytes
            if limit and p.rss_bytes > limit and not p.oom_pending:
                p.oom_kill()
        if p.reap(now):
            self._detach_reader(p)
        if p.due_restart(now):
            p.note_restart(now)
            self._spawn(p)

    def _spawn(self, p: ManagedProcess) -> None:
        self._detach_reader(p)
        p.start()
        if p.popen is not None and p.popen.stdout is not None:
            fd = p.popen.stdout.fileno()
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_output, p, fd)
            self._readers[p.name] = fd
        old = self._probes.pop(p.name, None)
        if old is not None:
            old.cancel()
        if p.alive():
            self._probes[p.name] = self._loop.create_task(self._probe(p, p.generation))

    def _on_output(self, p: ManagedProcess, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            p.log.feed(data)
        else:
            self._detach_reader(p)

    def _detach_reader(self, p: ManagedProcess) -> None:
        fd = self._readers.pop(p.name, None)
        if fd is None:
            return
        self._loop.remove_reader(fd)
        # Drain what the process wrote before dying: its last words are usually the reason.
        with contextlib.suppress(OSError):
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                p.log.feed(data)
        p.log.flush_partial()
        if p.popen is not None and p.popen.stdout is not None:
            with contextlib.suppress(OSError):
                p.popen.stdout.close()

    async def _probe(self, p: ManagedProcess, generation: int) -> None:
        """Readiness: GET url+ready_path on the service itself. No path: ready once the process is up."""
        assert self._http is not None
        while p.alive() and p.generation == generation:
            ok, why = True, None
            if p.spec.url and p.spec.ready_path:
                try:
                    r = await self._http.get(p.spec.url + p.spec.ready_path)
                    ok = r.status_code == 200
                    if not ok:
                        why = f"{p.spec.ready_path} answered {r.status_code}: {_reason(r)}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{p.spec.ready_path} unreachable: {type(exc).__name__}"
            p.not_ready_reason = why
            if p.generation != generation or not p.alive():
                return
            self._apply_probe(p, ok)
            await asyncio.sleep(PROBE_SLOW_S if p.ready else PROBE_FAST_S)

    def _apply_probe(self, p: ManagedProcess, ok: bool) -> None:
        if ok:
            p.probe_failures = 0
            if not p.ready:
                p.ready = True
                p.state = "running"
                elapsed = time.time() - (p.started_at or time.time())
                p.event(f"ready after {elapsed:.2f}s")
                hook = self._ready_hooks.get(p.name)
                if hook is not None:
                    self._loop.run_in_executor(None, self._run_hook, hook, p)
            return
        p.probe_failures += 1
        if p.ready and p.probe_failures >= UNREADY_AFTER_FAILURES:
            p.ready = False
            p.state = "unready"
            p.event("readiness probe failing: unready")

    @staticmethod
    def _run_hook(hook: Callable[[str], None], p: ManagedProcess) -> None:
        try:
            hook(p.name)
        except Exception as exc:  # noqa: BLE001 - reported where the learner looks
            p.event(f"on-ready hook failed: {exc!r}")

    # --- thread-safe API ----------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._procs)

    def _get(self, name: str) -> ManagedProcess:
        p = self._procs.get(name)
        if p is None:
            raise UnknownService(name, self._procs)
        return p

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise SupervisorClosed("the lab is shutting down: no service can be started")

    def add(self, spec: ServiceSpec, start: bool = True, on_ready: Callable[[str], None] | None = None) -> None:
        self._check_open()

        def do() -> None:
            if spec.name in self._procs:
                raise ValueError(f"service {spec.name!r} already exists")
            path = self.log_dir / f"{spec.name}.log" if self.log_dir is not None else None
            p = ManagedProcess(spec, path, self.log_capacity)
            self._procs[spec.name] = p
            if on_ready is not None:
                self._ready_hooks[spec.name] = on_ready
            if start:
                self._spawn(p)

        self._call(do)

    def start_service(self, name: str) -> None:
        self._check_open()

        def do() -> None:
            p = self._get(name)
            if p.alive():
                return
            p.forget_failures(time.time())
            self._spawn(p)

        self._call(do)

    def update_spec(self, name: str, **changes: Any) -> None:
        """Change how a service runs (argv, limits, policy). Applies at its next start, except the memory
        limit and restart policy, which apply at once.

        A new argv is a new rollout of the service (as a changed pod template is in Kubernetes): the failures
        counted against the old one no longer say anything, so its backoff starts over. Without that, a
        crash-looping service fixed by a config change would sit out the crash loop's longest wait (30 s) before
        trying the fixed config."""

        def do() -> None:
            p = self._get(name)
            for key, value in changes.items():
                if not hasattr(p.spec, key):
                    raise ValueError(f"unknown spec field {key!r}")
                if key == "restart" and isinstance(value, str):
                    value = RestartPolicy(mode=value)
                if key == "argv" and list(value) != list(p.spec.argv):
                    p.forget_failures(time.time())
                setattr(p.spec, key, value)

        self._call(do)

    def spec(self, name: str) -> ServiceSpec:
        return self._call(lambda: self._get(name).spec)

    def stop_many(self, names: list[str], grace_s: float = 5.0) -> None:
        """SIGTERM each process group, wait up to grace_s, then SIGKILL what is left. In parallel."""
        for n in names:
            self._get(n)

        async def stop() -> None:
            procs = [self._procs[n] for n in names]
            for p in procs:
                p.want_running = False
                p.stopping = True
                p.restart_at = None
                if p.alive():
                    p.event("stopping (SIGTERM)")
                    p.signal_group(signal.SIGTERM)
            deadline = time.time() + grace_s
            while time.time() < deadline and any(p.alive() for p in procs):
                await asyncio.sleep(0.05)
                for p in procs:
                    if p.reap(time.time()):
                        self._detach_reader(p)
            for p in procs:
                if p.alive():
                    p.event(f"still running after {grace_s:.0f}s: SIGKILL")
                    p.signal_group(signal.SIGKILL)
            while any(p.alive() for p in procs):
                await asyncio.sleep(0.02)
                for p in procs:
                    if p.reap(time.time()):
                        self._detach_reader(p)
            for p in procs:
                p.state = "stopped"
                p.ready = False

        self._await(stop(), timeout=grace_s + 30)

    def stop_service(self, name: str, grace_s: float = 5.0) -> None:
        self.stop_many([name], grace_s)

    def restart_service(self, name: str, grace_s: float = 5.0) -> None:
        self._check_open()
        self.stop_many([name], grace_s)

        def do() -> None:
            p = self._get(name)
            p.note_restart(time.time())
            p.consecutive_failures = 0
            self._spawn(p)

        self._call(do)

    def remove(self, name: str, grace_s: float = 5.0) -> None:
        self.stop_many([name], grace_s)

        def do() -> None:
            p = self._procs.pop(name)
            self._ready_hooks.pop(name, None)
            task = self._probes.pop(name, None)
            if task is not None:
                task.cancel()
            p.log.close()

        self._call(do)

    def status(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = list(names) if names is not None else None

        def do() -> list[dict[str, Any]]:
            order = wanted if wanted is not None else list(self._procs)
            return [self._procs[n].snapshot() for n in order if n in self._procs]

        return self._call(do)

    def service_status(self, name: str) -> dict[str, Any]:
        return self._call(lambda: self._get(name).snapshot())

    def logs(
        self, name: str, grep: str | None = None, tail: int | None = None, since: float | None = None,
        regex: bool = False, match: LineMatch | None = None,
    ) -> list[dict[str, Any]]:
        """Captured lines of one service; `grep` is a plain substring, or with `regex` an RE2 expression
        (lab/logsearch.py: BadSearch if refused); `match` is the lab's own predicate instead of `grep`."""
        p = self._get(name)
        if match is None:
            match = line_matcher(grep, regex)
        return p.log.query(match, tail, since)

    def log_file(self, name: str) -> Path | None:
        return self._get(name).log.path

    def wait_ready(self, names: Iterable[str], timeout_s: float) -> list[str]:
        """Wait until all named services are ready; returns the names still not ready at the deadline."""
        names = list(names)
        deadline = time.time() + timeout_s
        while True:
            pending = [s["name"] for s in self.status(names) if not s["ready"]]
            if not pending or time.time() >= deadline:
                return pending
            time.sleep(0.05)
