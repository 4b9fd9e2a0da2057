"""The one guard in front of every route of the lab server (the JSON API, the UI's pages, /static, /events).

`Guard` is ASGI middleware wrapped around the whole app by lab/server.py, so no route can be left out of it. In
this order, each refusal a 4xx with a JSON `{"detail": ...}` saying why:

1. **Host** (421): the lab answers only to the names it is reached by — 127.0.0.1, localhost or [::1] with its
   port (or no port), the address it is bound to (every address of this machine for 0.0.0.0/::), and names the
   operator allowed (`--allowed-host`, `FAULTLINE_ALLOWED_HOSTS`). A DNS-rebinding page (evil.example resolving
   to 127.0.0.1) is same-origin with itself in the browser, but still sends `Host: evil.example`.
2. **Token** (401, only when the lab has one: bound beyond loopback): every /api request, and every request from a
   non-loopback peer, must carry it (`Authorization: Bearer T` or `X-Faultline-Token: T`). A Host header is no
   proof of where a request comes from; the peer address is.
3. **Method** (405 with `Allow`): a path that exists with other methods says which, for every route alike (a
   path a route spells out, like /api/faults/kinds, has that route's methods only).
4. **Origin** (403), for POST/PUT/PATCH/DELETE: an `Origin` header, when sent, must be this lab's own (`null`,
   what sandboxed frames and file: pages send, is refused); `Sec-Fetch-Site` other than same-origin/none is
   refused. Browsers send Origin on every cross-origin POST, so a page on another site cannot drive the lab even
   with a "simple" request that skips the CORS preflight. The CLI, httpx and the headless runner send no Origin.
5. **Body** (413, 415, 400), for POST/PUT/PATCH/DELETE: at most `max_bytes` (by Content-Length, or while
   reading a chunked body; read here and replayed to the app). Under /api the Content-Type must be
   `application/json`, on the UI's routes `application/x-www-form-urlencoded` (415 otherwise: no text/plain
   "simple request" reaches a parser), and an /api route that takes no body refuses one (400) instead of
   ignoring it and acting; a JSON body holding NaN or Infinity (not JSON, though Python reads them) is a 400. A
   body-less request may omit Content-Type (the CLI's `POST /api/down`); a browser
   cannot use that to attack, because its cross-site requests carry Origin and step 4 refuses them.

The UI's CSRF token (ui/security.py) stays with the UI's routes: forms need it on top of all this.
`is_loopback(host)` is what counts as loopback for `--host` (the CLI refuses anything else without a token).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
TOKEN_HEADER = "x-faultline-token"
ALLOWED_HOSTS_ENV = "FAULTLINE_ALLOWED_HOSTS"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "[::]", ""})
# Routes whose endpoint reads the body itself (no pydantic body parameter FastAPI could tell us about) say so
# with `openapi_extra={TAKES_BODY: True}`.
TAKES_BODY = "x-faultline-takes-body"
_SAME_SITE_OK = frozenset({"same-origin", "none"})

Send = Callable[..., Awaitable[Any]]


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_form(address: str) -> str:
    """How an address appears in a Host header: IPv6 in brackets, names lower-cased."""
    address = address.strip().lower()
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def split_host(value: str) -> tuple[str, int | None]:
    """`name[:port]` of a Host header (IPv6 in brackets) → (name, port or None); ValueError when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        name, rest = value[:end + 1], value[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after ]")
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
    if not name:
        raise ValueError("no name")
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return name, int(port_text)


def machine_addresses() -> set[str]:
    """Every address of this machine's interfaces, in Host form: what a lab bound to 0.0.0.0/:: is reached by."""
    import psutil

    found: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name in ("AF_INET", "AF_INET6"):
                found.add(_host_form(a.address.split("%")[0]))
    return found


def allowed_hosts_from_env(env: dict[str, str] | None = None) -> list[str]:
    raw = (os.environ if env is None else env).get(ALLOWED_HOSTS_ENV, "")
    return [h.strip() for h in raw.split(",") if h.strip()]


class HostRule:
    """Which Host headers this lab answers to. Loopback names and the bound address need the lab's port (or none);
    an allowed name given without a port matches any port (it may sit behind a reverse proxy), with one only that."""

    def __init__(self, port: int, bind_host: str = "127.0.0.1", allowed: Iterable[str] = ()) -> None:
        self.port = port
        own = set(LOOPBACK_NAMES)
        bind = bind_host.strip().lower()
        if bind in WILDCARD_BINDS:
            own |= machine_addresses()
        else:
            own.add(_host_form(bind))
        self.own = frozenset(own)
        any_port: set[str] = set()
        exact: set[tuple[str, int]] = set()
        for entry in allowed:
            name, entry_port = split_host(entry)  # ValueError: the CLI reports it
            if entry_port is None:
                any_port.add(name)
            else:
                exact.add((name, entry_port))
        self.any_port = frozenset(any_port)
        self.exact = frozenset(exact)

    def allows(self, value: str) -> bool:
        try:
            name, port = split_host(value)
        except ValueError:
            return False
        if name in self.own and port in (None, self.port):
            return True
        return name in self.any_port or (port is not None and (name, port) in self.exact)

    def names(self) -> list[str]:
        return sorted(self.own | self.any_port | {f"{n}:{p}" for n, p in self.exact})


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class RouteEntry:
    """One route as the guard sees it: its full path (prefixes of included routers applied) and methods."""

    path: str
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method (a mount)
    takes_body: bool


def route_table(routes: Sequence[BaseRoute]) -> list[RouteEntry]:
    """Every route of an app, flattened through included routers (FastAPI includes them lazily)."""
    table = []
    for ctx in iter_route_contexts(routes):
        regex = getattr(ctx, "path_regex", None)
        if regex is None:
            continue
        methods = ctx.methods
        # a pydantic/Body parameter, or an endpoint that reads the body itself and says so (TAKES_BODY)
        takes_body = getattr(ctx, "body_field", None) is not None or bool(
            (getattr(ctx, "openapi_extra", None) or {}).get(TAKES_BODY))
        table.append(RouteEntry(path=str(ctx.path), regex=regex,
                                methods=frozenset(methods) if methods else None, takes_body=takes_body))
    return table


def _non_finite(body: bytes) -> str | None:
    """The first NaN / Infinity / -Infinity in a JSON body, or None (also for a body that is not JSON at all: the
    route's own parser says what is wrong with it). Python's json reads these constants, but they are not JSON, and
    a route's 422, which echoes its input, could not even be written with one in it."""
    found: list[str] = []

    def constant(name: str) -> float:
        found.append(name)
        raise ValueError(name)

    try:
        json.loads(body, parse_constant=constant)
    except (ValueError, RecursionError):
        pass
    return found[0] if found else None


class Guard:
    """Host, token, method, Origin and body checks for every request (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]], hosts: HostRule,
                 token: str | None = None, max_bytes: int = MAX_BODY_BYTES, api_prefix: str = "/api") -> None:
        self.app = app
        self.routes = routes  # the app's routes, read at request time: components attach after the middleware
        self.hosts = hosts
        self.token = token.encode() if token else None
        self.max_bytes = max_bytes
        self.api_prefix = api_prefix
        self._table: list[RouteEntry] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # the lab has no websocket route; never let one past the Host check either
        if scope["type"] == "websocket" and not self.hosts.allows(self._header(scope, b"host")):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_headers(scope)
        if refusal is not None:
            await send_json(send, *refusal)
            return
        method = scope["method"]
        route, allow = self._route(scope)
        if route is None and allow:
            await send_json(send, 405, f"{method} is not allowed on {scope['path']}; allowed: {', '.join(allow)}",
                            [(b"allow", ", ".join(allow).encode())])
            return
        if method not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        refusal = self._check_origin(scope)
        if refusal is not None:
            await send_json(send, 403, refusal)
            return
        declared = self._header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        body = await self._read_body(receive)
        if body is None:  # disconnected
            return
        if isinstance(body, int):
            await self._too_large(send)
            return
        refusal = self._check_body(scope, route, body)
        if refusal is not None:
            await send_json(send, *refusal)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect like the server would

        await self.app(scope, replay, send)

    # --- the checks ---------------------------------------------------------------------------------------------

    @staticmethod
    def _header(scope: dict[str, Any], name: bytes) -> str:
        for key, value in scope.get("headers") or []:
            if key == name:
                return value.decode("latin-1")
        return ""

    def _is_api(self, scope: dict[str, Any]) -> bool:
        path = scope.get("path", "")
        return path == self.api_prefix or path.startswith(self.api_prefix + "/")

    def _check_headers(self, scope: dict[str, Any]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = self._header(scope, b"host")
        if not self.hosts.allows(host):
            return (421, f"this lab only answers to its own address (127.0.0.1:{self.hosts.port}, localhost, or a "
                         f"name allowed with --allowed-host / {ALLOWED_HOSTS_ENV}); the request was for host "
                         f"{host!r}", [])
        if self.token is None:
            return None
        client = scope.get("client") or ("", 0)
        if self._is_api(scope) or not is_loopback(str(client[0])):
            sent = self._sent_token(scope)
            if sent is None or not hmac.compare_digest(sent, self.token):
                why = "missing" if sent is None else "wrong"
                return (401, f"{why} token: this lab requires `Authorization: Bearer <token>` (the token given to "
                             "`faultline serve/up --token` or FAULTLINE_TOKEN)", [(b"www-authenticate", b"Bearer")])
        return None

    def _sent_token(self, scope: dict[str, Any]) -> bytes | None:
        direct = self._header(scope, TOKEN_HEADER.encode())
        if direct:
            return direct.strip().encode("latin-1")
        scheme, _, value = self._header(scope, b"authorization").partition(" ")
        return value.strip().encode("latin-1") if scheme.lower() == "bearer" and value.strip() else None

    def _route(self, scope: dict[str, Any]) -> tuple[RouteEntry | None, list[str]]:
        """The route that will answer (None when no route has this method), and the methods the path has."""
        if self._table is None:  # built at the first request: every component has attached by then
            self._table = route_table(self.routes())
        path, method = scope["path"], scope["method"]
        matching = [e for e in self._table if e.regex.match(path)]
        # A path spelled out by a route (/api/faults/kinds) is that resource, even where a parameterised route
        # (/api/faults/{fault_id}) would match it too: its methods are the ones allowed.
        literal = [e for e in matching if "{" not in e.path]
        for entry in literal or matching:
            if entry.methods is None or method in entry.methods:
                return entry, []
        return None, sorted(set().union(*(e.methods or () for e in literal or matching)))

    def _check_origin(self, scope: dict[str, Any]) -> str | None:
        origin = self._header(scope, b"origin").strip()
        if origin:
            parts = urlsplit(origin.lower())
            host = self._header(scope, b"host").strip().lower()
            if parts.scheme not in ("http", "https") or parts.netloc != host:
                return (f"cross-origin request refused: Origin {origin!r} is not this lab "
                        f"(http://{host}); the lab never acts for another site's page")
        fetch_site = self._header(scope, b"sec-fetch-site").strip().lower()
        if fetch_site and fetch_site not in _SAME_SITE_OK:
            return f"cross-origin request refused (Sec-Fetch-Site: {fetch_site}); the lab never acts for another site"
        return None

    async def _read_body(self, receive: Any) -> bytes | int | None:
        """The whole body (at most max_bytes held), its size once over the limit, or None on a disconnect."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check_body(self, scope: dict[str, Any], route: RouteEntry | None, body: bytes) -> tuple[int, str] | None:
        """/api takes JSON, the UI's routes urlencoded forms: no other type reaches a parser (415). An /api route
        without a body parameter refuses a body (400) rather than ignore it and act."""
        ctype = self._header(scope, b"content-type").split(";")[0].strip().lower()
        what = f"{scope['method']} {scope['path']}"
        wanted = "application/json" if self._is_api(scope) else "application/x-www-form-urlencoded"
        if ctype and ctype != wanted:
            return 415, f"{what}: send `Content-Type: {wanted}` (got {ctype!r})"
        if not body.strip():
            return None
        if not ctype:
            return 415, f"{what}: a body needs `Content-Type: {wanted}`"
        if self._is_api(scope) and route is not None and not route.takes_body:
            return 400, f"{what} takes no body (got {len(body)} bytes): send none"
        if self._is_api(scope) and (b"NaN" in body or b"Infinity" in body):
            constant = _non_finite(body)
            if constant is not None:
                return 400, f"{what}: {constant} is not valid JSON (JSON numbers are finite): send a number"
        return None

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, f"request body larger than {self.max_bytes} bytes")
