"""Helpers for the UI tests: a browser-like httpx session on the real lab (cookie jar, CSRF token from the page)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
TOKEN = re.compile(r'hx-headers=\'\{"X-CSRF-Token": "([0-9a-f]+)"\}\'')


class Session:
    """What a browser tab does over HTTP: keeps the session cookie and sends the page's CSRF token on changes."""

    def __init__(self, lab_url: str, timeout: float = 60.0) -> None:
        self.base = lab_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=timeout, trust_env=False, follow_redirects=False)
        self.token = ""

    def close(self) -> None:
        self.http.close()

    def page(self, path: str = "/", **kw: Any) -> httpx.Response:
        r = self.http.get(path, **kw)
        found = TOKEN.search(r.text)
        if found:
            self.token = found.group(1)
        return r

    def headers(self, htmx: bool = True) -> dict[str, str]:
        h = {"X-CSRF-Token": self.token}
        if htmx:
            h["HX-Request"] = "true"
        return h

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        if not self.token:
            self.page("/")
        return self.http.post(path, data=data or {}, headers={**self.headers(), **kw.pop("headers", {})}, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        if not self.token:
            self.page("/")
        return self.http.delete(path, headers={**self.headers(), **kw.pop("headers", {})}, **kw)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        r.raise_for_status()
        return r.json()

    def wait_no_attempt(self, timeout: float = 180.0) -> None:
        """Attempts end asynchronously (revert, grade, baseline reset): wait until none is active."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.api("GET", "/api/attempts/active")["attempt"] is None:
                return
            time.sleep(0.5)
        raise AssertionError("an attempt is still active")


def valid_scenarios() -> list[Any]:
    """Every scenario file that validates (the UI lists those; a broken file is reported, not carded)."""
    from lab.scenario import check_file
    from lab.scenario.loader import CATALOG_DIR

    found = [check_file(p)[0] for p in sorted(CATALOG_DIR.glob("*.yaml"))]
    return [s for s in found if s is not None]


def sse_events(session: Session, path: str, want: set[str], timeout: float = 30.0) -> dict[str, str]:
    """Read a server-sent event stream until every event name in `want` arrived; {event: data}."""
    got: dict[str, str] = {}
    event, data = None, []
    deadline = time.time() + timeout
    with session.http.stream("GET", path, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
            elif line == "" and event is not None:
                got.setdefault(event, "\n".join(data))
                event, data = None, []
                if want <= set(got):
                    return got
            if time.time() > deadline:
                break
    raise AssertionError(f"events {sorted(want - set(got))} did not arrive in {timeout}s (got {sorted(got)})")
