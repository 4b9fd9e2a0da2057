"""Ready-made providers that connect a `Monitor` to the running stack over HTTP.

The monitor itself only takes callables, so the lab server can wire it to its supervisor; these cover the
HTTP side: the registry's production reference and the gateway's recent-requests window.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from lab import parts
from lab.topology import Topology


def targets_from_topology(topology: Topology) -> dict[str, str]:
    """Direct (unproxied) service URLs to scrape: toxics on the proxies must not blind the monitor.

    Every scraped part of lab/parts/ (the proxy server is watched from process stats only)."""
    return {n: topology.service_url(n) for part in parts.parts() if part.scraped and not part.on_demand
            for n in topology.instances(part)}


def targets_from_status(services: Iterable[Mapping[str, Any]], skip: Iterable[str] | None = None) -> dict[str, str]:
    """Targets from the lab's `/api/status` service list (`name` and `url`); parts declared not scraped (the
    proxy server has no /metrics) are skipped."""
    skipped = set(skip) if skip is not None else {p.name for p in parts.parts() if not p.scraped}
    return {s["name"]: s["url"] for s in services if s.get("url") and s.get("name") not in skipped}


class RegistryReference:
    """The production model's training reference from the registry HTTP service, downloaded once per version.

    Calling it returns {"version", "data", "meta"}; the same `data` object is returned while the production
    version is unchanged, so the monitor rebuilds its binned reference only on a promotion.
    """

    def __init__(self, registry_url: str, recheck_s: float = 15.0, timeout_s: float = 5.0) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.recheck_s = recheck_s
        self.timeout_s = timeout_s
        self._cached: dict[str, Any] | None = None
        self._checked_at = -1e18

    async def __call__(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._cached is not None and now - self._checked_at < self.recheck_s:
            return self._cached
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            resp = await client.get(f"{self.registry_url}/v1/models")
            resp.raise_for_status()
            meta = production_meta(resp.json())
            if meta is None:
                return None
            version = str(meta["version"])
            if self._cached is None or self._cached["version"] != version:
                ref = await client.get(f"{self.registry_url}/v1/models/{version}/reference")
                ref.raise_for_status()
                self._cached = {"version": version, "data": ref.json(), "meta": meta}
            else:
                self._cached["meta"] = meta
        self._checked_at = now
        return self._cached


def production_meta(listing: Any) -> dict[str, Any] | None:
    """The production entry of GET /v1/models (a list of meta, or an object wrapping one)."""
    if isinstance(listing, Mapping):
        listing = listing.get("models", listing.get("versions", list(listing.values())))
    metas = [m for m in listing if isinstance(m, Mapping) and "version" in m]
    prod = [m for m in metas if m.get("stage") == "production"]
    return dict(prod[-1]) if prod else None


class GatewayRecent:
    """The live window: the gateway's last N scored requests (GET /v1/recent?limit=N)."""

    def __init__(self, gateway_url: str, timeout_s: float = 5.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.timeout_s = timeout_s

    async def __call__(self, limit: int) -> Any:
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            resp = await client.get(f"{self.gateway_url}/v1/recent", params={"limit": limit})
            resp.raise_for_status()
            return resp.json()
