"""The lab's clients of a running stack: each part's typed client (lab/parts/), the one Toxiproxy client, and the
supervisor — with errors that carry the status the lab's API should answer.

`lab_clients(lab)` is what the console, the probes and the baseline use; the fault package's `FaultContext` is
this plus what only faults need (scenario-started processes). Every service call goes to the service's own port
(not through its proxy): a fault on a hop must never stop the lab from reading or undoing things.

Failures raise `ServiceCallError` (or the class given as `error`, e.g. the faults' `FaultError`): a service's
refusal of a bad value (400/404/413/422) is a 422 carrying its message, a conflict a 409, any other refusal a
502, and a service that does not answer a 503.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from typing import Any

import httpx

from lab import parts
from lab.parts.client import PartClient
from lab.parts.loadgen import LoadgenClient
from lab.parts.registry import NAME as REGISTRY
from lab.toxiproxy import ToxiproxyClient, ToxiproxyError, ToxiproxyUnavailable

HTTP_TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 120.0


class ServiceCallError(RuntimeError):
    """A call to a service (or the supervisor) failed; `status` is the HTTP status the lab API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def lab_status(code: int | None) -> int:
    """The lab API's status for a service's answer (None: it did not answer)."""
    if code is None:
        return 503
    if code in (400, 404, 413, 422):
        return 422
    return 409 if code == 409 else 502


class StackClients:
    def __init__(self, lab: Any, *, error: type[Exception] = ServiceCallError,
                 timeout_s: float = HTTP_TIMEOUT_S, loadgen_url: str | None = None) -> None:
        self.lab = lab
        self.error = error
        self.loadgen_override = loadgen_url
        self.http = httpx.Client(timeout=timeout_s, trust_env=False)

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

    def service_url(self, name: str) -> str:
        return self.topology.service_url(name)

    def client(self, name: str) -> Any:
        """The typed client of service `name` (its part's `client`, else the shared base), on its own port."""
        part = parts.part_for(name)
        cls = part.client if part is not None and part.client is not None else PartClient
        return cls(self.service_url(name), http=self.http, name=name)

    def _fail(self, message: str, status: int) -> Exception:
        return self.error(message, status)

    # --- HTTP ------------------------------------------------------------------------------------------------

    def call(self, method: str, url: str, who: str, body: Any = None, timeout: float | None = None) -> Any:
        """One JSON call to a full URL; an error with a status the lab can pass on when it fails."""
        try:
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            if timeout is not None:
                kwargs["timeout"] = timeout
            r = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise self._fail(f"{who} did not answer {method} {_path(url)}: {exc!r}", 503) from exc
        if r.status_code >= 400:
            verb = "failed" if lab_status(r.status_code) == 502 else "refused"
            code = f"{r.status_code} " if verb == "failed" else ""
            raise self._fail(f"{who} {verb} {method} {_path(url)}: {code}{_detail(r)}", lab_status(r.status_code))
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

    # --- the network proxy (the one Toxiproxy client, lab/toxiproxy.py) --------------------------------------

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.stack.netproxy_url, timeout=HTTP_TIMEOUT_S)

    def _toxiproxy(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ToxiproxyUnavailable as exc:
            raise self._fail(f"the network proxy did not answer ({what}): {exc.message}", 503) from exc
        except ToxiproxyError as exc:
            status = {400: 422, 404: 422, 409: 409}.get(exc.status, 502)
            raise self._fail(f"the network proxy refused {what}: {exc.message}", status) from exc

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
            raise self._fail(f"the network proxy did not answer (removing {toxic}): {exc.message}", 503) from exc
        except ToxiproxyError as exc:
            if exc.status == 404:
                return False
            raise self._fail(f"the network proxy refused removing {toxic}: {exc.message}", 502) from exc
        return True

    # --- model replicas and the registry ---------------------------------------------------------------------

    def loaded_versions(self, replica: str) -> list[str]:
        """Versions a replica holds, its default first."""
        got = self.call("GET", self.service_url(replica) + "/v1/models", replica)
        return [v["version"] for v in got.get("versions", [])]

    def reload(self, replica: str, versions: list[str]) -> dict[str, Any]:
        return self.call("POST", self.service_url(replica) + "/admin/reload", replica, {"versions": versions},
                         timeout=RELOAD_TIMEOUT_S)

    def registry(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.call(method, self.service_url(REGISTRY) + path, "the registry", body, timeout)

    def stages(self) -> dict[str, str]:
        """{version: stage} from the registry."""
        return {m["version"]: m.get("stage") for m in self.registry("GET", "/v1/models")}

    def restore_stages(self, wanted: dict[str, str]) -> None:
        """Put every version back on its recorded stage; exclusive stages first (their promotion archives whoever
        holds them), the rest after."""
        from lab.parts.registry import EXCLUSIVE_STAGES

        current = self.stages()
        changed = [v for v, s in wanted.items() if v in current and current[v] != s]
        for v in sorted(changed, key=lambda v: wanted[v] not in EXCLUSIVE_STAGES):
            if self.stages().get(v) != wanted[v]:
                self.registry("POST", f"/v1/models/{v}/stage", {"stage": wanted[v]})

    # --- the load generator ------------------------------------------------------------------------------------

    def loadgen_url(self) -> str:
        """Where the load generator's control API is: an explicit URL, else the stack's own."""
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
            raise self._fail(f"no load generator answers at {self.loadgen_url()}; start traffic first", 409)
        return client

    # --- the supervisor ----------------------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any]:
        return self.supervisor.service_status(name)

    def pid(self, name: str) -> int:
        pid = self.status(name)["pid"]
        if pid is None:
            raise self._fail(f"{name} is not running (state {self.status(name)['state']})", 409)
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


_BY_LAB: weakref.WeakKeyDictionary[Any, StackClients] = weakref.WeakKeyDictionary()
_BY_LAB_LOCK = threading.Lock()


def lab_clients(lab: Any) -> StackClients:
    """The lab's one StackClients (one connection pool), made on first use."""
    with _BY_LAB_LOCK:
        found = _BY_LAB.get(lab)
        if found is None:
            found = _BY_LAB[lab] = StackClients(lab)
        return found


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
