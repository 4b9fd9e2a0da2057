"""Helpers for the attempt tests: the lab's console and attempt routes over real HTTP, and waiting on an attempt."""

from __future__ import annotations

import time
from typing import Any

import httpx


class LabApi:
    """A running lab (tests/conftest.py's StackHandle) through its JSON API."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.url = stack.lab_url
        self.http = httpx.Client(base_url=self.url, timeout=660, trust_env=False)
        self.traffic_was_running = bool(self.call("GET", "/api/traffic").get("running"))

    def close(self) -> None:
        """Leave the shared stack as found: attempts keep an idle load generator, other suites may not expect one.
        While an attempt runs the lab refuses to touch its traffic (409, lab/rules.py): the attempt owns it then."""
        try:
            if not self.traffic_was_running and self.call("GET", "/api/traffic").get("running"):
                self.call("DELETE", "/api/traffic", expect=(200, 409))
        finally:
            self.http.close()

    def call(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)) -> Any:
        r = self.http.request(method, path, json=body)
        wanted = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in wanted, (method, path, r.status_code, r.text)
        return r.json()

    def console(self, op: str, expect: int = 200, **args: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/console/{op}", args, expect)

    def console_until(self, op: str, ready: Any, timeout: float = 60, interval: float = 1.0,
                      **args: Any) -> dict[str, Any]:
        """The console op's answer once `ready(data)` holds (the monitor needs traffic and a drift refresh first); a
        404 ("no distributions yet": no live window on a stack that had no traffic) is waited out like an answer
        that is not ready, any other refusal fails at once."""
        deadline = time.time() + timeout
        while True:
            r = self.http.post(f"/api/console/{op}", json=args)
            assert r.status_code in (200, 404), (op, r.status_code, r.text[:3000])
            if r.status_code == 200 and ready(r.json()["data"]):
                return r.json()
            assert time.time() < deadline, (op, r.status_code, r.text[:3000])
            time.sleep(interval)

    def service_config(self, name: str) -> dict[str, Any]:
        port = self.stack.topology.service_port(name)
        return httpx.get(f"http://127.0.0.1:{port}/admin/config", timeout=10, trust_env=False).json()

    def state(self, attempt_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/attempts/{attempt_id}")

    def wait(self, attempt_id: str, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(attempt_id)
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout}s: phase {st['phase']}, {st}")
            time.sleep(0.5)

    def abort_active(self) -> None:
        active = self.call("GET", "/api/attempts/active")["attempt"]
        if active is not None:
            self.call("POST", f"/api/attempts/{active['attempt_id']}/abort", {"reason": "test cleanup"}, (200, 409))
