"""The base of every part's typed HTTP client: the conventions all our services share (docs/architecture.md).

`/healthz`, `/readyz`, `/metrics`, `GET|PATCH /admin/config`. Each part module subclasses `PartClient` with its
own calls. Every failure is a `PartError` carrying the service's HTTP status and its `detail` message (status
None when nothing answered), so callers turn it into a clear 4xx/503 without parsing httpx errors.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 10.0


class PartError(RuntimeError):
    """A service refused a call (`status` its HTTP status) or did not answer (`status` None)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


def detail_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict) and "detail" in body:
        d = body["detail"]
        return d if isinstance(d, str) else str(d)
    return resp.text[:500]


class PartClient:
    """HTTP to one service's own port. `http` may be shared (one connection pool for many clients)."""

    what = "service"

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, http: httpx.Client | None = None,
                 name: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.what
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> PartClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None, ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        """One call; a status outside `ok` or no answer raises PartError naming the service and the call."""
        kwargs: dict[str, Any] = {"json": json, "params": params}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = self.http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise PartError(f"{self.name} at {self.url} did not answer {method} {path}: {exc}") from exc
        if resp.status_code not in ok:
            raise PartError(f"{self.name} refused {method} {path}: {resp.status_code} {detail_of(resp)}",
                            resp.status_code, resp.text)
        return resp

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = self.request(method, path, json=body, **kw)
        return resp.json() if resp.content else None

    # --- the shared conventions ---------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return self.call("GET", "/admin/config")

    def patch_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge `changes` into the live config; the service's validation error (422) keeps its message."""
        return self.call("PATCH", "/admin/config", changes)

    def ready(self) -> bool:
        try:
            return self.http.get(self.url + "/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def healthy(self) -> bool:
        try:
            return self.http.get(self.url + "/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        return self.request("GET", "/metrics").text

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.1)
        raise PartError(f"{self.name} at {self.url} not ready after {timeout_s:g}s", 503)
