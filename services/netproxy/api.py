"""The Toxiproxy v2 HTTP API: routes, status codes and bodies (see /work/shared/reference/toxiproxy-api.md).

Beyond Toxiproxy: `GET /healthz` (liveness, like every Faultline service) and `GET /metrics` (byte counters per
proxy and direction in Prometheus text format, named like Toxiproxy's optional proxy metrics).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from services.netproxy import VERSION
from services.netproxy.collection import ProxyCollection, proxy_fields
from services.netproxy.errors import BAD_REQUEST_BODY, MISSING_FIELD, ApiError
from services.netproxy.httpserver import Request, Response
from services.netproxy.proxy import Proxy

log = logging.getLogger("netproxy.api")
_DECODER = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON value {name}")


def parse_json(body: bytes) -> Any:
    """The first JSON value of the body (Go's decoder ignores what follows it); 400 if there is none."""
    try:
        text = body.decode("utf-8").lstrip()
    except UnicodeDecodeError:
        raise BAD_REQUEST_BODY.joined("body is not UTF-8") from None
    if not text:
        raise BAD_REQUEST_BODY.joined("EOF")
    try:
        value, _ = _DECODER.raw_decode(text)
    except ValueError as exc:
        raise BAD_REQUEST_BODY.joined(str(exc)) from None
    except RecursionError:
        raise BAD_REQUEST_BODY.joined("JSON nested too deeply") from None
    return value


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode())


def error_response(error: ApiError, extra: dict[str, Any] | None = None) -> Response:
    return json_response(error.status, {**error.to_json(), **(extra or {})})


class Api:
    def __init__(self, collection: ProxyCollection) -> None:
        self.collection = collection

    async def handle(self, request: Request) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", "text/plain; charset=utf-8")
        try:
            return await self._route(request)
        except ApiError as exc:
            if exc.status >= 500:
                log.warning(
                    "api error method=%s path=%s status=%d error=%s",
                    request.method,
                    request.path,
                    exc.status,
                    exc.message,
                )
            return error_response(exc)

    async def _route(self, request: Request) -> Response:
        method = request.method
        parts = request.segments
        if any(not p for p in parts):
            return _no_route(request)
        n = len(parts)
        if n == 1:
            one = {
                ("reset", "POST"): self.reset,
                ("proxies", "GET"): self.proxy_index,
                ("proxies", "POST"): self.proxy_create,
                ("populate", "POST"): self.populate,
                ("version", "GET"): self.version,
                ("healthz", "GET"): self.healthz,
                ("metrics", "GET"): self.metrics,
            }
            handler = one.get((parts[0], method))
            if handler is not None:
                return await handler(request)
            if any(path == parts[0] for path, _ in one):
                return _bad_method(request)
            return _no_route(request)
        if parts[0] != "proxies" or n > 4 or (n >= 3 and parts[2] != "toxics"):
            return _no_route(request)
        if n == 2:
            return await self._proxy_route(request, parts[1])
        if n == 3:
            if method == "GET":
                return json_response(200, [w.to_json() for w in self.collection.get(parts[1]).toxics.toxics()])
            if method == "POST":
                return self.toxic_create(request, parts[1])
            return _bad_method(request)
        return self._toxic_route(request, parts[1], parts[3])

    # /proxies/{proxy}
    async def _proxy_route(self, request: Request, name: str) -> Response:
        if request.method == "GET":
            return json_response(200, self.collection.get(name).to_json())
        if request.method in ("PATCH", "POST"):
            proxy = self.collection.get(name)
            body = parse_json(request.body)
            if not isinstance(body, dict):
                raise BAD_REQUEST_BODY.joined("expected a JSON object")
            fields = proxy_fields(body, {"listen": proxy.listen, "upstream": proxy.upstream, "enabled": proxy.enabled})
            await self.collection.update(proxy, fields["listen"], fields["upstream"], fields["enabled"])
            return json_response(200, proxy.to_json())
        if request.method == "DELETE":
            await self.collection.remove(name)
            return Response(204)
        return _bad_method(request)

    # /proxies/{proxy}/toxics/{toxic}
    def _toxic_route(self, request: Request, proxy_name: str, toxic_name: str) -> Response:
        toxics = self.collection.get(proxy_name).toxics
        if request.method == "GET":
            return json_response(200, toxics.get(toxic_name).to_json())
        if request.method in ("PATCH", "POST"):
            toxics.get(toxic_name)  # 404 before 400, as Toxiproxy checks
            wrapper = toxics.update_json(toxic_name, parse_json(request.body))
            log.info("toxic updated proxy=%s toxic=%s", proxy_name, toxic_name)
            return json_response(200, wrapper.to_json())
        if request.method == "DELETE":
            toxics.remove(toxic_name)
            log.info("toxic removed proxy=%s toxic=%s", proxy_name, toxic_name)
            return Response(204)
        return _bad_method(request)

    async def proxy_index(self, request: Request) -> Response:
        return json_response(200, {p.name: p.to_json() for p in self.collection.sorted()})

    async def proxy_create(self, request: Request) -> Response:
        body = parse_json(request.body)
        if not isinstance(body, dict):
            raise BAD_REQUEST_BODY.joined("expected a JSON object")
        fields = proxy_fields(body, {"name": "", "listen": "", "upstream": "", "enabled": True})
        if not fields["name"]:
            raise MISSING_FIELD.joined("name")
        if not fields["upstream"]:
            raise MISSING_FIELD.joined("upstream")
        proxy = Proxy(fields["name"], fields["listen"], fields["upstream"])
        await self.collection.add(proxy, fields["enabled"])
        return json_response(201, proxy.to_json())

    async def populate(self, request: Request) -> Response:
        proxies, error = await self.collection.populate(parse_json(request.body))
        done = [p.to_json() for p in proxies]
        if error is not None:
            return error_response(error, {"proxies": done})
        log.info("populated proxies=%d", len(done))
        return json_response(201, {"proxies": done})

    def toxic_create(self, request: Request, proxy_name: str) -> Response:
        toxics = self.collection.get(proxy_name).toxics
        wrapper = toxics.add_json(parse_json(request.body))
        log.info(
            "toxic added proxy=%s toxic=%s type=%s stream=%s toxicity=%s",
            proxy_name,
            wrapper.name,
            wrapper.type_name,
            wrapper.stream,
            wrapper.toxicity,
        )
        return json_response(200, wrapper.to_json())

    async def reset(self, request: Request) -> Response:
        await self.collection.reset()
        log.info("reset")
        return Response(204)

    async def version(self, request: Request) -> Response:
        body = json.dumps({"version": VERSION}) + "\n"
        return Response(200, body.encode(), "application/json;charset=utf-8")

    async def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok", "service": "netproxy"})

    async def metrics(self, request: Request) -> Response:
        return Response(200, render_metrics(self.collection).encode(), "text/plain; version=0.0.4; charset=utf-8")


def _no_route(request: Request) -> Response:
    return error_response(ApiError(f"no such endpoint: {request.method} {request.path}", 404))


def _bad_method(request: Request) -> Response:
    return error_response(ApiError(f"method {request.method} not allowed on {request.path}", 405))


def render_metrics(collection: ProxyCollection) -> str:
    lines = [
        "# HELP toxiproxy_proxy_received_bytes_total Bytes read from the source side, by proxy and direction.",
        "# TYPE toxiproxy_proxy_received_bytes_total counter",
    ]
    sent = [
        "# HELP toxiproxy_proxy_sent_bytes_total Bytes written to the destination side, by proxy and direction.",
        "# TYPE toxiproxy_proxy_sent_bytes_total counter",
    ]
    conns = [
        "# HELP toxiproxy_proxy_connections Open connections per proxy.",
        "# TYPE toxiproxy_proxy_connections gauge",
    ]
    for proxy in collection.sorted():
        totals = proxy.byte_totals()
        for direction in ("upstream", "downstream"):
            labels = f'direction="{direction}",proxy="{_label(proxy.name)}"'
            lines.append(f"toxiproxy_proxy_received_bytes_total{{{labels}}} {totals[direction][0]}")
            sent.append(f"toxiproxy_proxy_sent_bytes_total{{{labels}}} {totals[direction][1]}")
        conns.append(f'toxiproxy_proxy_connections{{proxy="{_label(proxy.name)}"}} {len(proxy.connections)}')
    rss = [
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {_rss_bytes()}",
    ]
    return "\n".join(lines + sent + conns + rss) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
