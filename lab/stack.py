"""The Faultline stack on the process backend: start order, proxies on every hop, scaling, status, teardown.

Builds on the generic Supervisor (lab/supervisor.py) and the launch plan (lab/specs.py). Order of `start()`:
by the parts' tiers (lab/parts/): the model replicas, then the netproxy (unless an external Toxiproxy is used),
the feature store and the registry at once — none of them dials another service; once the Toxiproxy API answers,
every hop of the topology is created (populate); only then do the parts that dial others (the gateway) start,
with proxy URLs for their upstreams. If the netproxy restarts, the proxies are populated again as soon as it is ready.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from lab import parts, rules, specs
from lab.logbuffer import iso_utc
from lab.parts.client import PartClient, PartError
from lab.parts.loadgen import NAME as LOADGEN
from lab.ports import PortUse, check_free, stack_ports
from lab.supervisor import Supervisor, UnknownService
from lab.topology import MAX_REPLICAS, Topology
from lab.toxiproxy import ToxiproxyClient, ToxiproxyError

PROXY_TIMEOUT_S = 5.0


def _own_rss() -> int:
    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:
        return 0


def service_error_line(line: str) -> bool:
    """A service's own error line, not the supervisor's "[faultline] exited code=3 reason=Error" about it."""
    return not line.startswith("[faultline]") and ("rror" in line or "Errno" in line)


def last_error_line(supervisor: Supervisor, name: str) -> str:
    """The last error line a service wrote (e.g. uvicorn's bind error), so start-up failures say why."""
    found = supervisor.logs(name, tail=1, match=service_error_line)
    return found[0]["line"].strip()[:240] if found else ""


def _is_proxy_server(name: str) -> bool:
    part = parts.part_for(name)
    return part is not None and part.proxy_server


class StackError(RuntimeError):
    """An operation on the stack failed; the message is meant for the learner."""


BACKENDS = ("process", "compose")


def make_stack(backend: str, topology: Topology, settings: specs.StackSettings, run_id: str,
               toxiproxy_url: str | None = None, ready_timeout_s: float = 90.0) -> Stack:
    """The stack on the chosen backend: processes under the lab's supervisor, or containers of docker-compose.yml
    driven through a Docker-API engine (lab/enginebackend.py, docs/compose.md)."""
    if backend == "compose":
        from lab.enginebackend import ComposeStack

        return ComposeStack(topology, settings, run_id, toxiproxy_url=toxiproxy_url, ready_timeout_s=ready_timeout_s)
    if backend != "process":
        raise StackError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    return Stack(topology, settings, run_id, toxiproxy_url=toxiproxy_url, ready_timeout_s=ready_timeout_s)


def hop_records(topology: Topology, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The topology's proxies (or only those named) as `ToxiproxyClient.populate` takes them."""
    return [{"name": h.name, "listen": h.listen, "upstream": h.upstream, "enabled": True}
            for h in topology.hops() if only is None or h.name in only]


class Stack:
    def __init__(
        self,
        topology: Topology,
        settings: specs.StackSettings,
        run_id: str,
        toxiproxy_url: str | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.run_id = run_id
        self.log_dir = settings.home / "runs" / run_id / "logs"
        self.external_proxy = toxiproxy_url is not None
        self.netproxy_url = (toxiproxy_url or topology.netproxy_url).rstrip("/")
        self.ready_timeout_s = ready_timeout_s
        self.supervisor = Supervisor(self.log_dir)
        self.phase = "idle"
        self.error: str | None = None
        self.started_at: float | None = None
        self.ready_after_s: float | None = None
        self._proxies_ready = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._toxiproxy: ToxiproxyClient | None = None
        self._populate_error: str | None = None

    # --- helpers ----------------------------------------------------------------------------------------------

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        """The one Toxiproxy client (lab/toxiproxy.py), for any Toxiproxy server."""
        if self._toxiproxy is None:
            self._toxiproxy = ToxiproxyClient(self.netproxy_url, timeout=PROXY_TIMEOUT_S)
        return self._toxiproxy

    def service_names(self) -> list[str]:
        names = specs.service_names(self.topology, with_netproxy=not self.external_proxy)
        return [*names, LOADGEN] if self._has_loadgen() else names

    def targets(self) -> list[str]:
        """Services a learner may name (console operations, service faults): the declared targets
        (lab/parts/), never the proxy server or the load generator. The one list the console, the faults, the
        baseline and the UI use."""
        return [n for n in self.service_names() if (p := parts.part_for(n)) is not None and p.target
                and not p.on_demand and not p.proxy_server]

    def target_choices(self) -> dict[str, list[str]]:
        """Names a form may offer: hops, target services, replicas, dependencies (the sandbox and fault forms)."""
        deps = set(parts.dependencies())
        return {"hop": self.topology.hop_names(), "service": self.targets(),
                "replica": self.topology.model_names(), "dependency": [n for n in self.targets() if n in deps]}

    def _has_loadgen(self) -> bool:
        return self.phase != "idle" and LOADGEN in self.supervisor.names()

    def _spec(self, name: str) -> specs.ServiceSpec:
        return specs.service_spec(name, self.topology, self.settings)

    def _populate(self, _name: str = "") -> None:
        try:
            self.toxiproxy.populate(hop_records(self.topology))
        except Exception as exc:
            # Kept for start(): a proxy that cannot listen (port taken) must fail the start with its reason.
            self._populate_error = f"creating the proxies failed: {exc}"
            raise
        self._populate_error = None
        self._proxies_ready.set()

    def preflight(self) -> None:
        """Checks before anything starts: what the track's parts need (trained models), every port free."""
        for part in parts.parts():
            if part.preflight is not None and self.topology.instances(part) and (
                    problem := part.preflight(self.settings)):
                raise StackError(problem)
        check_free(stack_ports(self.topology, include_netproxy=not self.external_proxy, include_lab=False),
                   self.topology.host)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and wait for readiness. Raises StackError; phase tells the outcome."""
        with self._lock:
            if self.phase != "idle":
                raise StackError(f"the stack was already started (phase {self.phase})")
            self.phase, self.started_at = "starting", time.time()
            try:
                self._start()
            except Exception as exc:
                if self.phase == "starting":
                    self.phase, self.error = "failed", str(exc)
                raise
        # Waiting happens outside the lock so that `down` (Ctrl-C, POST /api/down) is never held up by it.
        pending = self._wait_ready([n for n in self.service_names() if n != LOADGEN], self.ready_timeout_s)
        if self._stopping.is_set():
            raise StackError("stopped while starting")
        if pending:
            self.phase = "degraded"
            self.error = f"not ready: {self._describe(pending)}"
            raise StackError(self.error)
        self.ready_after_s = round(time.time() - self.started_at, 3)
        self.phase = "running"

    def _wait_ready(self, names: list[str], timeout_s: float) -> list[str]:
        """Names not ready at the deadline; returns early when one of them is crash-looping or gave up."""
        deadline = time.time() + timeout_s
        while True:
            pending = self.supervisor.wait_ready(names, min(0.5, max(0.0, deadline - time.time())))
            if not pending or self._stopping.is_set() or time.time() >= deadline:
                return pending
            if any(s["state"] in ("crashloop", "exited") for s in self.supervisor.status(pending)):
                return pending

    def _describe(self, names: list[str]) -> str:
        parts = []
        for s in self.supervisor.status(names):
            e = s["last_exit"]
            why = f", last exit {e['code']} {e['reason']}" if e else ""
            if s.get("not_ready_reason"):
                why += f", {s['not_ready_reason']}"
            if e and (said := last_error_line(self.supervisor, s["name"])):
                why += f": {said}"
            parts.append(f"{s['name']} ({s['state']}{why})")
        return ", ".join(parts) + " — see `faultline logs SERVICE`"

    def _start(self) -> None:
        self.supervisor.start()
        # By tier (lab/parts: the model replicas first, they are the slowest to become ready), the proxy server first
        # in its tier: it populates every hop once it answers; parts that dial others start once the hops exist.
        later: list[str] = []
        for part in sorted(parts.parts(), key=lambda p: (p.tier, not p.proxy_server)):
            if part.on_demand or (part.proxy_server and self.external_proxy):
                continue
            for name in self.topology.instances(part):
                if part.after_proxies:
                    later.append(name)
                elif part.proxy_server:
                    self.supervisor.add(self._spec(name), on_ready=self._populate)
                else:
                    self.supervisor.add(self._spec(name))
        if self.external_proxy:
            self._wait_external_proxy()
            self._populate()
        deadline = time.time() + 30
        while not self._proxies_ready.wait(0.1):
            if self._stopping.is_set():
                raise StackError("stopped while starting")
            if self._populate_error:
                raise StackError(self._populate_error)
            if time.time() > deadline:
                server = next((n for n in self.service_names() if _is_proxy_server(n)), "")
                st = self.supervisor.service_status(server) if server else {}
                raise StackError(f"the network proxy at {self.netproxy_url} did not come up ({st.get('state')}); "
                                 f"see `faultline logs {server or 'SERVICE'}`")
        for name in later:
            self.supervisor.add(self._spec(name))

    def _wait_external_proxy(self) -> None:
        try:
            self.toxiproxy.wait_ready(15)
        except ToxiproxyError as exc:
            raise StackError(f"no Toxiproxy answering at {self.netproxy_url} (TOXIPROXY_URL)") from exc

    def down(self, grace_s: float = 5.0) -> None:
        """Stop everything: traffic and the public entry first (no new traffic), then the rest, the proxy server
        last."""
        self._stopping.set()
        with self._lock:
            if self.phase == "stopped":
                return
            self.phase = "stopping"
            first: list[str] = []
            rest: list[str] = []
            last: list[str] = []
            for part in parts.parts():
                names = self.topology.instances(part)
                (first if part.on_demand or part.public else last if part.proxy_server else rest).extend(names)
            if self.external_proxy:
                self.supervisor.shutdown(grace_s, order=[first, rest])
                for hop in self.topology.hops():
                    try:
                        self.toxiproxy.delete_proxy(hop.name)
                    except Exception:  # noqa: BLE001 - best effort on someone else's Toxiproxy
                        pass
            else:
                self.supervisor.shutdown(grace_s, order=[first, rest, last])
            self.phase = "stopped"

    # --- operations ---------------------------------------------------------------------------------------------

    def _check_service(self, name: str) -> None:
        if name not in self.service_names():
            raise UnknownService(name, self.service_names())

    def restart(self, name: str) -> dict[str, Any]:
        self._check_service(name)
        self.supervisor.restart_service(name)
        return self.supervisor.service_status(name)

    def stop_service(self, name: str) -> dict[str, Any]:
        self._check_service(name)
        self.supervisor.stop_service(name)
        return self.supervisor.service_status(name)

    def start_service(self, name: str) -> dict[str, Any]:
        self._check_service(name)
        self.supervisor.start_service(name)
        return self.supervisor.service_status(name)

    def set_limits(
        self, name: str, memory_limit_bytes: int | None = None, restart_policy: str | None = None,
        clear_memory_limit: bool = False,
    ) -> dict[str, Any]:
        """Change a service's memory limit (None with clear_memory_limit: no limit) or restart policy, live."""
        self._check_service(name)
        changes: dict[str, Any] = {}
        if memory_limit_bytes is not None or clear_memory_limit:
            changes["memory_limit_bytes"] = memory_limit_bytes
        if restart_policy is not None:
            changes["restart"] = restart_policy
        self.supervisor.update_spec(name, **changes)
        return self.supervisor.service_status(name)

    def scale(self, replicas: int, wait_s: float | None = None, track: str | None = None) -> dict[str, Any]:
        """Add or remove model replicas, their proxies, and tell the gateway its new replica set."""
        # The fraud track's replicas when it runs; on a stack without it, the replicas of the track it runs (llm-N);
        # `track` names one (an LLM scenario's setup on a stack running both).
        part = parts.replica_part(track or parts.DEFAULT_TRACK)
        if track is None and not self.topology.runs(part):
            part = next((p for p in parts.replica_parts() if self.topology.runs(p)), part)
        if not self.topology.runs(part):
            raise StackError(f"this stack does not run the {track} track")
        limit = MAX_REPLICAS if parts.DEFAULT_TRACK in part.tracks else part.max_replicas
        if not 1 <= replicas <= limit:
            raise StackError(f"replicas must be between 1 and {limit}, got {replicas}")
        with self._lock:
            if self.phase not in ("running", "degraded"):
                raise StackError(f"the stack is not running (phase {self.phase})")
            old = self.topology
            new = old.with_count(part, replicas)
            if replicas > old.replica_count(part):
                self._scale_up(old, new, self.ready_timeout_s if wait_s is None else wait_s, part)
            elif replicas < old.replica_count(part):
                self._scale_down(old, new, part)
            return {"replicas": replicas, "models": new.instances(part)}

    def add_track(self, track: str, wait_s: float | None = None) -> dict[str, Any]:
        """Bring up `track`'s parts beside the running ones (an attempt on a scenario of a track this stack does not
        run yet): their hops, their processes by tier, then their callers told (replicas by PATCH, as `scale` does;
        a single part's caller restarted on its new flag). Nothing running is stopped."""
        wait = self.ready_timeout_s if wait_s is None else wait_s
        with self._lock:
            if self.phase not in ("running", "degraded"):
                raise StackError(f"the stack is not running (phase {self.phase})")
            old = self.topology
            if track in old.tracks:
                return {"track": track, "added": []}
            parts.replica_part(track)  # an unknown track raises here, before anything changes
            new = Topology(ports=old.ports, replicas=old.replicas, host=old.host, tracks=(*old.tracks, track),
                           counts=old.counts)
            added_parts = [p for p in sorted(parts.parts(), key=lambda p: p.tier)
                           if not p.on_demand and not p.proxy_server and new.instances(p) and not old.instances(p)]
            added = [n for p in added_parts for n in new.instances(p)]
            check_free([u for u in stack_ports(new, include_netproxy=False, include_lab=False)
                        if any(u.role.endswith(n) for n in added)], new.host)
            self.topology = new
            self.toxiproxy.populate(hop_records(new, only=added))
            for name in added:
                self.supervisor.add(self._spec(name))
            pending = self._wait_ready(added, wait)
            restart: set[str] = set()
            for part in added_parts:
                if part.replicated:
                    self._push_replicas(part)
                else:
                    for dial in part.dials:
                        self.supervisor.update_spec(dial.caller, argv=specs.service_argv(dial.caller, new,
                                                                                          self.settings))
                        restart.add(dial.caller)
            for caller in sorted(restart):
                self.supervisor.restart_service(caller)
            pending += self._wait_ready(sorted(restart), wait) if restart else []
            if pending:
                raise StackError(f"the {track} track was started, but not ready after {wait:.0f}s: "
                                 f"{self._describe(pending)}")
            return {"track": track, "added": added, "restarted": sorted(restart)}

    def _scale_up(self, old: Topology, new: Topology, wait_s: float, part: Any = None) -> None:
        part = part or parts.replica_part()
        added = [n for n in new.instances(part) if n not in old.instances(part)]
        wanted = [u for u in stack_ports(new, include_netproxy=False, include_lab=False)
                  if any(u.role.endswith(n) for n in added)]
        check_free(wanted, new.host)
        self.topology = new
        # Only the new hops: the existing proxies may carry a scenario's toxics or be disabled on purpose.
        self.toxiproxy.populate(hop_records(new, only=added))
        for name in added:
            self.supervisor.add(self._spec(name))
        pending = self._wait_ready(added, wait_s)
        self._push_replicas(part)
        if pending:
            raise StackError(f"scaled to {new.replica_count(part)}, but not ready after {wait_s:.0f}s: "
                             f"{', '.join(pending)}")

    def _scale_down(self, old: Topology, new: Topology, part: Any = None) -> None:
        part = part or parts.replica_part()
        removed = [n for n in old.instances(part) if n not in new.instances(part)]
        self.topology = new
        self._push_replicas(part)  # first stop sending traffic, then stop the processes
        for name in removed:
            self.supervisor.remove(name)
            try:
                self.toxiproxy.delete_proxy(name)
            except Exception as exc:  # noqa: BLE001 - the replica is gone either way; say so in status
                self.error = f"could not delete proxy {name}: {exc}"

    def _push_replicas(self, part: Any = None) -> None:
        """The replicas' caller learns them by PATCH /admin/config, and from its argv if it restarts later."""
        part = part or parts.replica_part()
        for dial in part.dials:
            self.supervisor.update_spec(dial.caller, argv=specs.service_argv(dial.caller, self.topology,
                                                                              self.settings))
            if dial.config_key is None:
                continue
            client = PartClient(self.topology.service_url(dial.caller), timeout_s=5, name=dial.caller)
            try:
                client.patch_config({dial.config_key: self.topology.dial_config(part)})
            except PartError as exc:
                if exc.status is None:
                    raise StackError(f"could not reach the {dial.caller} to update its replicas: {exc}") from exc
                raise StackError(f"the {dial.caller} refused its new replicas: {exc.status} {exc.message}") from exc
            finally:
                client.close()

    # --- traffic (the load generator) ------------------------------------------------------------------------------

    @property
    def loadgen_url(self) -> str:
        return f"http://{self.topology.host}:{self.topology.ports.locust_web}"

    def traffic(self, rps: float, profile: str | None = None, feedback_delay_s: float | None = None,
                seed: int | None = None, wait_s: float = 60.0, *, track: str | None = None,
                retry_policy: str | None = None, retries: int | None = None,
                max_users: int | None = None) -> dict[str, Any]:
        """Start the load generator at `rps` (or change its rate/profile/settings when it runs); returns its state.

        One load generator drives one track: `track` None means the track of a built-in `profile` named (when the
        stack runs it), else the running one's, else the stack's fraud track when it runs, else llm; another track
        than the running one's restarts it on that track. Every
        value is checked first (lab/rules.py: RuleError 422 naming the valid choices), so a refusal is quick and
        starts, stops or changes nothing: an unknown profile once started a load generator that crash-looped
        while this waited `wait_s` for it."""
        from lab.parts.loadgen import DEFAULT_PROFILES, LoadgenClient, LoadgenError, default_track

        rules.check_traffic_rate(rps)
        rules.check_traffic_track(track, retry_policy, retries, max_users)
        with self._lock:
            if self.phase not in ("running", "degraded"):
                raise StackError(f"the stack is not running (phase {self.phase})")
            running = self._has_loadgen() and self.supervisor.service_status(LOADGEN)["pid"] is not None
            current_track = self._loadgen_track() if running else None
            wanted = track or self._profile_track(profile) or current_track or default_track(self.topology)
            if not self.topology.runs(parts.replica_part(wanted)):
                raise StackError(f"this stack runs the {', '.join(self.topology.tracks)} track only: no {wanted} "
                                 f"traffic — start it with `faultline up -d --track {wanted}` (or `--track all`)")
            if running and current_track != wanted:
                self.supervisor.remove(LOADGEN, grace_s=10)  # one track at a time: switch it
                running = False
            rules.check_traffic(rps, profile, self._traffic_profiles(running, wanted), feedback_delay_s, seed)
            start_profile = profile or DEFAULT_PROFILES[wanted]
            if not running:
                if LOADGEN in self.supervisor.names():
                    self.supervisor.remove(LOADGEN)
                port = self.topology.ports.locust_web
                check_free([PortUse(port, "loadgen web UI", "--base-port")], self.topology.host)
                spec = specs.loadgen_spec(self.topology, self.settings, rps, start_profile,
                                          2.0 if feedback_delay_s is None else feedback_delay_s, seed,
                                          track=wanted, retry_policy=retry_policy, retries=retries)
                self.supervisor.add(spec)
                pending = self.supervisor.wait_ready([LOADGEN], wait_s)
                if pending:
                    raise StackError(f"the load generator did not become ready in {wait_s:.0f}s; "
                                     "see `faultline logs loadgen`")
            with LoadgenClient(self.loadgen_url) as client:
                try:
                    state = client.configure(rps=rps, profile=profile, feedback_delay_s=feedback_delay_s,
                                             retry_policy=retry_policy, retries=retries, max_users=max_users)
                except LoadgenError as exc:
                    raise StackError(str(exc)) from exc
            # A restart (crash, OOM) must come back at the rate asked for last, not the first one.
            current = specs.loadgen_spec(self.topology, self.settings, state.get("base_rps", rps),
                                         state.get("profile", start_profile),
                                         state.get("feedback_delay_s", feedback_delay_s or 2.0), seed,
                                         track=wanted, retry_policy=state.get("retry_policy", retry_policy),
                                         retries=state.get("retries", retries))
            self.supervisor.update_spec(LOADGEN, argv=current.argv)
            return state

    def _profile_track(self, profile: str | None) -> str | None:
        """The track whose built-in profile `profile` is, when the stack runs it (a fraud scenario's `baseline`
        keeps meaning the fraud track whatever the load generator drove before); None when it says nothing."""
        from services.loadgen.profiles import TRAFFIC_TRACKS, profile_names

        if profile is None:
            return None
        owners = [t for t in TRAFFIC_TRACKS if profile in profile_names(t)]
        if len(owners) == 1 and self.topology.runs(parts.replica_part(owners[0])):
            return owners[0]
        return None

    def _loadgen_track(self) -> str:
        """The running load generator's track, from its command line (no --track: fraud)."""
        argv = self.supervisor.spec(LOADGEN).argv
        return argv[argv.index("--track") + 1] if "--track" in argv else "fraud"

    def _traffic_profiles(self, running: bool, track: str = "fraud") -> list[str]:
        """The profiles the load generator knows: a running one's (scenarios may have added some), else the
        built-ins a new one starts with (services/loadgen/profiles.py is data, importable without locust)."""
        from lab.parts.loadgen import LoadgenClient, LoadgenError
        from services.loadgen.profiles import profile_names

        if not running:
            return profile_names(track)
        with LoadgenClient(self.loadgen_url) as client:
            try:
                return list(client.profiles())
            except LoadgenError as exc:
                raise StackError(f"could not ask the load generator for its profiles: {exc}") from exc

    def traffic_state(self) -> dict[str, Any]:
        from lab.parts.loadgen import LoadgenClient, LoadgenError

        if not self._has_loadgen():
            return {"running": False}
        with LoadgenClient(self.loadgen_url) as client:
            try:
                return {"running": True, **client.state()}
            except LoadgenError as exc:
                return {"running": False, "error": str(exc), **self.supervisor.service_status(LOADGEN)}

    def stop_traffic(self) -> dict[str, Any]:
        with self._lock:
            if self._has_loadgen():
                self.supervisor.remove(LOADGEN, grace_s=10)  # SIGTERM: it delivers pending labels first
            return {"running": False}

    # --- reading ------------------------------------------------------------------------------------------------

    def logs(self, name: str, grep: str | None = None, tail: int | None = None,
             since: float | None = None, regex: bool = False) -> list[dict[str, Any]]:
        """A service's captured lines; `grep` is a plain substring, or an RE2 expression with `regex`
        (lab/logsearch.py; BadSearch, before any line is read, for a refused one)."""
        self._check_service(name)
        return self.supervisor.logs(name, grep, tail, since, regex=regex)

    def proxies(self) -> tuple[list[dict[str, Any]], str | None]:
        try:
            found = {p["name"]: {k: p.get(k) for k in ("name", "listen", "upstream", "enabled", "toxics")}
                     for p in self.toxiproxy.proxies().values()}
        except Exception as exc:  # noqa: BLE001 - status must answer even when the proxy server is down
            return [], f"could not read proxies from {self.netproxy_url}: {exc}"
        order = [h.name for h in self.topology.hops()]
        listed = [found[n] for n in order if n in found] + [p for n, p in found.items() if n not in order]
        return listed, None

    def status(self) -> dict[str, Any]:
        services = self.supervisor.status(self.service_names()) if self.phase != "idle" else []
        hops = {h.name: h for h in self.topology.hops()}
        for s in services:
            hop = hops.get(s["name"])
            s["proxy"] = {"name": hop.name, "listen": hop.listen, "url": hop.url} if hop else None
        if self.external_proxy:
            server = next(p.name for p in parts.parts() if p.proxy_server)
            services.append({"name": server, "url": self.netproxy_url, "pid": None, "state": "external",
                             "ready": self._proxies_ready.is_set(), "rss_bytes": 0, "cpu_percent": 0.0,
                             "restarts": 0, "last_exit": None})
        if self.phase == "degraded" and services and all(s["ready"] for s in services):
            # Whatever was late at start-up caught up.
            self.phase, self.error = "running", None
        proxies, proxy_error = self.proxies() if self.phase not in ("idle", "stopped") else ([], None)
        return {
            "supervisor_pid": os.getpid(),
            "backend": "process",
            "phase": self.phase,
            "error": self.error or proxy_error,
            "ready": bool(services) and all(s["ready"] for s in services),
            "run_id": self.run_id,
            "home": str(self.settings.home),
            "log_dir": str(self.log_dir),
            "replicas": self.topology.replicas,
            "tracks": list(self.topology.tracks),
            "public_url": self.topology.public_url,
            "netproxy_url": self.netproxy_url,
            "started_at": iso_utc(self.started_at) if self.started_at else None,
            "ready_after_s": self.ready_after_s,
            "total_rss_bytes": sum(s["rss_bytes"] or 0 for s in services),
            "lab_rss_bytes": _own_rss(),
            "services": services,
            "proxies": proxies,
        }

    def log_path(self, name: str) -> Path | None:
        self._check_service(name)
        return self.supervisor.log_file(name)
