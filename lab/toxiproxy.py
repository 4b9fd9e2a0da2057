"""The lab's Toxiproxy client: `toxiproxy-python`, wrapped to add what it lacks, and the choice of server.

What the package gives and we use: its HTTP layer (`APIConsumer.get/post/delete`), its response check
(`validate_response`, mapping 400/404/409 to its exceptions). What it lacks and this module adds:
- per-instance host and port: the package keeps one class-wide `APIConsumer.host/port` for the whole process;
  each `ToxiproxyClient` gets its own `APIConsumer` subclass instead, so clients never share or mutate the global;
- a timeout on every request (`requests` waits forever by default);
- toxic and proxy updates (`PATCH`, which the package has no call for);
- errors on every failure: 4xx and 5xx raise `ToxiproxyError(status, message)`, and an unreachable or silent
  server raises `ToxiproxyUnavailable` (a `ToxiproxyError` with status 503).

Server selection (`select_server`): a Toxiproxy at `TOXIPROXY_URL`, else a `toxiproxy-server` binary on PATH,
else our embedded server (`python -m services.netproxy`). The lab talks to all three through this client only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from toxiproxy.api import APIConsumer, validate_response
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

DEFAULT_URL = "http://127.0.0.1:8474"
# The package's exceptions carry only the body; their class tells the status.
_PACKAGE_ERRORS: dict[type[Exception], int] = {InvalidToxic: 400, NotFound: 404, ProxyExists: 409}


class ToxiproxyError(Exception):
    """A failed Toxiproxy call: `status` is the HTTP status, `message` the server's `error` text."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"toxiproxy {status}: {message}")
        self.status = status
        self.message = message
        self.body = body  # the decoded error body (populate puts the proxies it did create here)


class ToxiproxyUnavailable(ToxiproxyError):
    """The server could not be reached, or did not answer within the timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class ToxiproxyClient:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Toxiproxy URL must look like http://HOST:PORT, got {url!r}")
        self.url = f"http://{parts.netloc}"
        self.timeout = timeout
        # The package's consumer, bound to this instance's server (its class attributes are the only knob).
        self._consumer: type[APIConsumer] = type(
            "BoundAPIConsumer", (APIConsumer,), {"host": parts.hostname, "port": parts.port or 80}
        )

    # proxies
    def version(self) -> str:
        response = self._call("GET", "/version")
        try:
            return str(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            return response.text.strip()  # Toxiproxy before 2.6 answers plain text

    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies").json()

    def get_proxy(self, name: str) -> dict:
        return self._call("GET", f"/proxies/{_seg(name)}").json()

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return self._call("POST", "/proxies", body).json()

    def populate(self, proxies: list[dict]) -> list[dict]:
        """Create or replace proxies in one call; a proxy with the same listen and upstream keeps its toxics."""
        return self._call("POST", "/populate", proxies).json()["proxies"] or []

    def update_proxy(self, name: str, **fields: Any) -> dict:
        """Merge fields into a proxy, e.g. `enabled=False` takes it down (closes its listener and connections)."""
        return self._call("PATCH", f"/proxies/{_seg(name)}", fields).json()

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{_seg(name)}")

    # toxics
    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{_seg(proxy)}/toxics").json()

    def add_toxic(
        self,
        proxy: str,
        type: str,  # noqa: A002 - Toxiproxy's own field name
        attributes: dict | None = None,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> dict:
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes or {}}
        if name is not None:
            body["name"] = name
        return self._call("POST", f"/proxies/{_seg(proxy)}/toxics", body).json()

    def update_toxic(
        self, proxy: str, name: str, attributes: dict | None = None, toxicity: float | None = None
    ) -> dict:
        """Merge attributes into a toxic (others keep their values); toxicity is kept unless given."""
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = attributes
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self._call("PATCH", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}", body).json()

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}")

    def reset(self) -> None:
        """Re-enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll /version until the server answers; ToxiproxyUnavailable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.version()
                return
            except ToxiproxyUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise ToxiproxyUnavailable(f"{self.url} not ready after {timeout:g}s: {exc.message}") from None
            time.sleep(0.05)

    # transport
    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        try:
            if method == "GET":
                response = self._consumer.get(path, **kwargs)
            elif method == "DELETE":
                response = self._consumer.delete(path, **kwargs)
            elif method == "POST":
                response = self._consumer.post(path, json=body, **kwargs)
            else:  # PATCH: not in the package; same check on the response
                url = f"http://{self._consumer.host}:{self._consumer.port}{path}"
                response = validate_response(requests.request(method, url, json=body, **kwargs))
        except tuple(_PACKAGE_ERRORS) as exc:
            status = _PACKAGE_ERRORS[type(exc)]
            raw = exc.args[0] if exc.args else b""
            raise _error(status, raw) from None
        except requests.Timeout:
            raise ToxiproxyUnavailable(f"{method} {self.url}{path}: no answer within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise ToxiproxyUnavailable(f"{method} {self.url}{path}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response.status_code, response.content)
        return response


def _seg(name: str) -> str:
    return quote(name, safe="")


def _error(status: int, raw: bytes | str) -> ToxiproxyError:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        body = json.loads(text)
    except ValueError:
        return ToxiproxyError(status, text.strip() or f"HTTP {status}")
    message = body.get("error") if isinstance(body, dict) else None
    return ToxiproxyError(status, str(message or text.strip()), body)


@dataclass(frozen=True)
class ServerChoice:
    """Which Toxiproxy server to use: its API URL and, when we must start it, the argv to run (never a shell)."""

    kind: str  # "external" (already running at TOXIPROXY_URL), "binary" (toxiproxy-server) or "embedded"
    url: str
    argv: list[str] | None


def select_server(
    host: str = "127.0.0.1",
    port: int = 8474,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    python: str = sys.executable,
    prefer: str | None = None,
) -> ServerChoice:
    """TOXIPROXY_URL, else `toxiproxy-server` on PATH, else ours. `prefer="embedded"` skips the first two.

    `config` is a JSON file of proxies to create at start (both servers take the same format).
    """
    env = os.environ if env is None else env
    url = f"http://{host}:{port}"
    if prefer not in (None, "embedded", "binary"):
        raise ValueError(f"prefer must be None, 'embedded' or 'binary', got {prefer!r}")
    external = env.get("TOXIPROXY_URL", "").strip()
    if external and prefer is None:
        return ServerChoice("external", external.rstrip("/"), None)
    binary = which("toxiproxy-server") if prefer != "embedded" else None
    if binary:
        argv = [binary, "-host", host, "-port", str(port)]
        if config:
            argv += ["-config", config]
        return ServerChoice("binary", url, argv)
    if prefer == "binary":
        raise FileNotFoundError("toxiproxy-server is not on PATH")
    argv = [python, "-m", "services.netproxy", "--host", host, "--port", str(port)]
    if config:
        argv += ["--config", config]
    return ServerChoice("embedded", url, argv)
