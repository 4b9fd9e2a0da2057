"""What injectors may touch, in one place: the running stack through HTTP and the supervisor, nothing else.

`FaultContext(lab)` gives an injector the Toxiproxy API (lab/toxiproxy.py's client), each service's /admin/config,
the model servers' reload, the registry's HTTP API, the load generator's control API, and the supervisor (status,
signals, memory limits, argv, restarts, scenario-owned helper processes). Every service call goes to the service's
own port (not through its proxy): a fault on a hop must never stop the lab from undoing it.

Failures become FaultError with the HTTP status the lab API should answer: the service's refusal of a bad value
is a 422 carrying its message, a service that does not answer is a 503.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx

from lab.faults.base import FaultError
from lab.parts.loadgen import LoadgenClient
from lab.process import RestartPolicy, ServiceSpec
from lab.specs import PACKAGE_ROOT
from lab.toxiproxy import ToxiproxyClient, ToxiproxyError, ToxiproxyUnavailable

HTTP_TIMEOUT_S = 10.0
RUNNING_PHASES = ("running", "degraded")
HELPER_PREFIX = "scenario-"


class FaultContext:
    def __init__(self, lab: Any, *, loadgen_url: str | None = None, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.lab = lab
        self.loadgen_override = loadgen_url
        self.http = httpx.Client(timeout=timeout_s, trust_env=False)
        self._helpers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # --- the stack -------------------------------------------------------------------------------------------

    @property
    def stack(self) -> Any:
        return self.lab.stack

    @property
    def topology(self) -> Any:
        return self.lab.stack.topology  # read each time: scaling replaces it

    @property
    def supervisor(self) -> Any:
        return self.lab.stack.supervisor

    def check_running(self) -> None:
        phase = self.stack.phase
        if phase not in RUNNING_PHASES:
            raise FaultError(f"the stack is not running (phase {phase}); faults apply to a running stack", 409)

    def service_names(self) -> list[str]:
        """Services a fault may target: the stack's own, not its infrastructure (netproxy) or traffic (loadgen)."""
        return self.stack.targets()

    def replicas(self) -> list[str]:
        return list(self.topology.model_names())

    def check_service(self, name: str) -> str:
        if name not in self.service_names():
            raise FaultError(f"no service {name!r} in this stack; services are: {', '.join(self.service_names())}",
                             422)
        return name

    def check_hop(self, name: str) -> str:
        hops = [h.name for h in self.topology.hops()]
        if name not in hops:
            raise FaultError(f"no hop {name!r} in this stack; hops are: {', '.join(hops)}", 422)
        return name

    def service_url(self, name: str) -> str:
        return self.topology.service_url(name)

    # --- HTTP ------------------------------------------------------------------------------------------------

    def call(self, method: str, url: str, who: str, body: Any = None, timeout: float | None = None) -> Any:
        """One JSON call; FaultError with a status the lab can pass on when it fails."""
        try:
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            if timeout is not None:
                kwargs["timeout"] = timeout
            r = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise FaultError(f"{who} did not answer {method} {_path(url)}: {exc!r}", 503) from exc
        if r.status_code >= 400:
            detail = _detail(r)
            if r.status_code in (400, 404, 413, 422):
                raise FaultError(f"{who} refused {method} {_path(url)}: {detail}", 422)
            if r.status_code == 409:
                raise FaultError(f"{who} refused {method} {_path(url)}: {detail}", 409)
            raise FaultError(f"{who} failed {method} {_path(url)}: {r.status_code} {detail}", 502)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    # --- live service config ---------------------------------------------------------------------------------

    def get_config(self, name: str) -> dict[str, Any]:
        return self.call("GET", self.service_url(name) + "/admin/config", name)

    def patch_config(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", self.service_url(name) + "/admin/config", name, values)

    def spec_argv(self, name: str) -> list[str]:
        return list(self.supervisor.spec(name).argv)

    def set_argv(self, name: str, argv: list[str]) -> None:
        self.supervisor.update_spec(name, argv=list(argv))

    def rollout_config(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """PATCH the live config and keep the same values in the start-up `--config`, so a restart does not undo
        them (what a config rollout does); returns the live config."""
        new = self.patch_config(name, values)
        self.persist_config(name, values)
        return new

    def persist_config(self, name: str, values: dict[str, Any]) -> list[str]:
        """Write `values` into the service's start-up `--config` too, so a restart keeps them (as a real config
        rollout would); returns the argv before the change."""
        before = self.spec_argv(name)
        self.set_argv(name, argv_with_config(before, values))
        return before

    # --- the network proxy (Toxiproxy API, through lab/toxiproxy.py) -----------------------------------------

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.stack.netproxy_url, timeout=HTTP_TIMEOUT_S)

    def _toxiproxy(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ToxiproxyUnavailable as exc:
            raise FaultError(f"the network proxy did not answer ({what}): {exc.message}", 503) from exc
        except ToxiproxyError as exc:
            status = {400: 422, 404: 422, 409: 409}.get(exc.status, 502)
            raise FaultError(f"the network proxy refused {what}: {exc.message}", status) from exc

    def proxy(self, name: str) -> dict[str, Any]:
        return self._toxiproxy(f"reading proxy {name}", self.toxiproxy.get_proxy, name)

    def set_proxy_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        return self._toxiproxy(f"enabled={enabled} on {name}", self.toxiproxy.update_proxy, name, enabled=enabled)

    def add_toxic(self, proxy: str, name: str, type_: str, stream: str, toxicity: float,
                  attributes: dict[str, Any]) -> dict[str, Any]:
        return self._toxiproxy(f"a {type_} toxic on {proxy}", self.toxiproxy.add_toxic, proxy, type_,
                               attributes=attributes, name=name, stream=stream, toxicity=toxicity)

    def remove_toxic(self, proxy: str, toxic: str) -> bool:
        """False when it was not there (already removed, or the proxy server restarted without it)."""
        try:
            self.toxiproxy.remove_toxic(proxy, toxic)
        except ToxiproxyUnavailable as exc:
            raise FaultError(f"the network proxy did not answer (removing {toxic}): {exc.message}", 503) from exc
        except ToxiproxyError as exc:
            if exc.status == 404:
                return False
            raise FaultError(f"the network proxy refused removing {toxic}: {exc.message}", 502) from exc
        return True

    # --- model servers and the registry ----------------------------------------------------------------------

    def loaded_versions(self, replica: str) -> list[str]:
        """Versions a replica holds, its default first."""
        got = self.call("GET", self.service_url(replica) + "/v1/models", replica)
        return [v["version"] for v in got.get("versions", [])]

    def reload(self, replica: str, versions: list[str]) -> dict[str, Any]:
        return self.call("POST", self.service_url(replica) + "/admin/reload", replica, {"versions": versions},
                         timeout=120)

    def registry(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.call(method, self.service_url("registry") + path, "the registry", body, timeout)

    # --- the load generator ------------------------------------------------------------------------------------

    def loadgen_url(self) -> str:
        """Where the load generator's control API is: an explicit URL, else the stack's own (it runs the load
        generator under the supervisor), else the topology's locust web port (docs/architecture.md)."""
        if self.loadgen_override:
            return self.loadgen_override
        url = getattr(self.stack, "loadgen_url", None)
        if isinstance(url, str):
            return url
        return f"http://{self.topology.host}:{self.topology.ports.locust_web}"

    def loadgen(self) -> LoadgenClient:
        client = LoadgenClient(self.loadgen_url())
        if not client.ready():
            client.close()
            raise FaultError(f"no load generator answers at {self.loadgen_url()}; start traffic first", 409)
        return client

    # --- the supervisor ----------------------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any]:
        return self.supervisor.service_status(name)

    def pid(self, name: str) -> int:
        pid = self.status(name)["pid"]
        if pid is None:
            raise FaultError(f"{name} is not running (state {self.status(name)['state']})", 409)
        return pid

    def set_memory_limit(self, name: str, limit_bytes: int | None) -> None:
        self.stack.set_limits(name, memory_limit_bytes=limit_bytes, clear_memory_limit=limit_bytes is None)

    def restart(self, name: str) -> None:
        self.supervisor.restart_service(name)

    def stop(self, name: str) -> None:
        self.supervisor.stop_service(name)

    def ensure_running(self, name: str) -> bool:
        """Start the service now if no process of it is alive (stopped, exited, waiting out a backoff).
        True when it had to be started."""
        if name not in self.supervisor.names():
            return False
        if self.status(name)["pid"] is not None:
            return False
        self.supervisor.start_service(name)
        return True

    def wait_ready(self, names: list[str], timeout_s: float) -> list[str]:
        return self.supervisor.wait_ready(names, timeout_s)

    # --- processes a scenario starts (the learner may kill them) ----------------------------------------------

    def spawn_helper(self, fault_id: str, argv: list[str]) -> dict[str, Any]:
        """Start a supervised helper (argv list, never restarted) owned by fault `fault_id`."""
        name = HELPER_PREFIX + fault_id
        spec = ServiceSpec(name=name, argv=list(argv), url=None, ready_path=None, restart=RestartPolicy(mode="no"),
                           memory_limit_bytes=None, cwd=str(PACKAGE_ROOT), env={"FAULTLINE_SERVICE": name})
        with self._lock:
            if name in self.supervisor.names():
                self.supervisor.remove(name, grace_s=2)
            self.supervisor.add(spec)
            self._helpers[name] = {"fault_id": fault_id, "argv": list(argv)}
        return {"name": name, **self.status(name)}

    def stop_helper(self, name: str) -> bool:
        with self._lock:
            self._helpers.pop(name, None)
            if name not in self.supervisor.names():
                return False
            self.supervisor.remove(name, grace_s=2)
            return True

    def scenario_pids(self) -> list[dict[str, Any]]:
        """Live processes that faults started: the only ones the console's `kill PID` may signal."""
        out = []
        with self._lock:
            helpers = dict(self._helpers)
        for name, info in helpers.items():
            if name not in self.supervisor.names():
                continue
            st = self.status(name)
            if st["pid"] is not None:
                out.append({"pid": st["pid"], "name": name, "fault_id": info["fault_id"], "argv": info["argv"],
                            "cpu_percent": st["cpu_percent"], "rss_bytes": st["rss_bytes"]})
        return out

    def kill_scenario_process(self, pid: int, sig: int = signal.SIGKILL) -> dict[str, Any]:
        """Signal a process a fault started; FaultError 403 for any other pid."""
        owned = {p["pid"]: p for p in self.scenario_pids()}
        if pid not in owned:
            raise FaultError(f"pid {pid} was not started by the scenario; only these may be killed: "
                             f"{', '.join(str(p) for p in owned) or 'none'}", 403)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        return owned[pid]


def _config_index(argv: list[str]) -> int | None:
    return max((i for i, a in enumerate(argv[:-1]) if a == "--config"), default=None)


def argv_config(argv: list[str]) -> dict[str, Any]:
    """The object of argv's last `--config JSON` ({} when there is none, or it is not a JSON object)."""
    idx = _config_index(argv)
    if idx is None:
        return {}
    try:
        current = json.loads(argv[idx + 1])
    except ValueError:
        return {}
    return current if isinstance(current, dict) else {}


def argv_with_config(argv: list[str], values: dict[str, Any]) -> list[str]:
    """argv whose last `--config JSON` has `values` merged in (or gains one)."""
    out = list(argv)
    idx = _config_index(out)
    if idx is None:
        return out + ["--config", json.dumps(values, separators=(",", ":"))]
    out[idx + 1] = json.dumps({**argv_config(out), **values}, separators=(",", ":"))
    return out


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        return detail if isinstance(detail, str) else json.dumps(detail)[:300]
    return str(body)[:300]
