"""One named proxy: a loopback listener that pipes each accepted connection to its upstream through toxics.

Lifecycle as in Toxiproxy: `start` binds and listens (the listen address is then reported with the real port);
`stop` ("down", `enabled: false`) closes the listener and drops every connection; changing listen or upstream
restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from services.netproxy.addresses import join_hostport, parse_listen, parse_upstream
from services.netproxy.errors import ApiError
from services.netproxy.link import Connection
from services.netproxy.toxic_collection import ToxicCollection

log = logging.getLogger("netproxy")
BACKLOG = 1024


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        # An empty listen address means "any port" (Go listens on ":0"); we stay on loopback.
        self.listen = listen or "127.0.0.1:0"
        self.upstream = upstream
        self.enabled = False
        self.toxics = ToxicCollection()
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._upstream_address: tuple[str, int] | None = None
        # Bytes of finished connections, per direction: (received from the source, sent to the destination).
        self.finished_bytes: dict[str, list[int]] = {"upstream": [0, 0], "downstream": [0, 0]}

    def byte_totals(self) -> dict[str, list[int]]:
        totals = {d: list(v) for d, v in self.finished_bytes.items()}
        for conn in self.connections:
            for link in conn.links:
                totals[link.direction][0] += link.received
                totals[link.direction][1] += link.sent
        return totals

    def validate(self) -> None:
        """400 for a malformed or non-loopback listen address or a malformed upstream."""
        parse_listen(self.listen)
        parse_upstream(self.upstream)

    def upstream_address(self) -> tuple[str, int]:
        if self._upstream_address is None:
            self._upstream_address = parse_upstream(self.upstream)
        return self._upstream_address

    async def start(self) -> None:
        if self.enabled:
            return
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            reason = (exc.strerror or str(exc)).lower()
            # Toxiproxy answers a listen failure with a 500 carrying Go's error text; we keep the same shape.
            raise ApiError(f"listen tcp {join_hostport(host, port)}: bind: {reason}", 500) from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self).client, sock=sock, backlog=BACKLOG)
        self.listen = join_hostport(*sock.getsockname()[:2])
        self._upstream_address = None
        self.enabled = True
        log.info("proxy started name=%s listen=%s upstream=%s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        dropped = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        log.info("proxy stopped name=%s listen=%s dropped_connections=%d", self.name, self.listen, dropped)

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        if listen != self.listen or upstream != self.upstream:
            Proxy(self.name, listen, upstream).validate()
            self.stop()
            self.listen = listen
            self.upstream = upstream
            self._upstream_address = None
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                self.stop()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [w.to_json() for w in self.toxics.toxics()],
        }

    def same_addresses(self, other: Proxy) -> bool:
        """Populate keeps an existing proxy when listen and upstream are the same (localhost == 127.0.0.1)."""
        return self.upstream == other.upstream and parse_listen(self.listen) == parse_listen(other.listen)
