"""All proxies of the server, by name: create, replace, populate, remove, reset (Toxiproxy's ProxyCollection).

Changes that bind or close listeners are serialised by one lock so concurrent API calls cannot race on a name.
Toxic changes do not take it: they are synchronous and never wait.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.netproxy.errors import BAD_REQUEST_BODY, MISSING_FIELD, PROXY_EXISTS, PROXY_NOT_FOUND, ApiError
from services.netproxy.proxy import Proxy


class ProxyCollection:
    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    def sorted(self) -> list[Proxy]:
        return [self.proxies[name] for name in sorted(self.proxies)]

    async def add(self, proxy: Proxy, start: bool) -> None:
        async with self.lock:
            if proxy.name in self.proxies:
                raise PROXY_EXISTS
            proxy.validate()
            if start:
                await proxy.start()
            self.proxies[proxy.name] = proxy

    async def update(self, proxy: Proxy, listen: str, upstream: str, enabled: bool) -> None:
        async with self.lock:
            await proxy.update(listen, upstream, enabled)

    async def remove(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            proxy.stop()
            del self.proxies[name]

    async def populate(self, body: Any) -> tuple[list[Proxy], ApiError | None]:
        """Check every entry first; then create or replace them in order, stopping at the first failure."""
        if not isinstance(body, list):
            raise BAD_REQUEST_BODY.joined("expected a JSON array of proxies")
        wanted: list[tuple[Proxy, bool]] = []
        for i, entry in enumerate(body, start=1):
            if not isinstance(entry, dict):
                raise BAD_REQUEST_BODY.joined(f"proxy {i} must be a JSON object")
            fields = proxy_fields(entry, {"name": "", "listen": "", "upstream": "", "enabled": True})
            if not fields["name"]:
                raise MISSING_FIELD.joined(f"name at proxy {i}")
            if not fields["upstream"]:
                raise MISSING_FIELD.joined(f"upstream at proxy {i}")
            proxy = Proxy(fields["name"], fields["listen"], fields["upstream"])
            proxy.validate()
            wanted.append((proxy, fields["enabled"]))
        done: list[Proxy] = []
        async with self.lock:
            for proxy, start in wanted:
                try:
                    done.append(await self._add_or_replace(proxy, start))
                except ApiError as exc:
                    return done, exc
        return done, None

    async def _add_or_replace(self, proxy: Proxy, start: bool) -> Proxy:
        existing = self.proxies.get(proxy.name)
        if existing is not None:
            if existing.same_addresses(proxy):
                return existing
            existing.stop()
            del self.proxies[proxy.name]
        if start:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    async def reset(self) -> None:
        """Re-enable every proxy and remove every toxic."""
        async with self.lock:
            for proxy in self.sorted():
                await proxy.start()
                proxy.toxics.reset()

    def clear(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        self.proxies.clear()


def proxy_fields(body: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The proxy fields of a JSON object over defaults, type-checked (null counts as absent, as in Go)."""
    fields = dict(defaults)
    for key in ("name", "listen", "upstream"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BAD_REQUEST_BODY.joined(f"{key} must be a string")
        fields[key] = value
    enabled = body.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise BAD_REQUEST_BODY.joined("enabled must be true or false")
        fields["enabled"] = enabled
    return fields
