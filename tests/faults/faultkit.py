"""Helpers for the fault tests: apply and revert through the lab's real /api/faults, score real transactions, and
wait for the stack to be healthy again (every service running and ready, proxies clean, a score round trip).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kit import llm_track, registry_with_llm, status_problems
from kit import wait_until as wait_until

from lab.parts.loadgen import LoadgenClient
from services.trainer.generator import Generator


@dataclass
class Lab:
    """A running stack (tests/conftest.py's StackHandle) seen through the lab's and the services' HTTP APIs."""

    stack: Any
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=300, trust_env=False))
    gen: Generator = field(default_factory=lambda: Generator(seed=7))

    # --- the fault API ------------------------------------------------------------------------------------------

    def api(self, path: str) -> str:
        return self.stack.lab_url + "/api/faults" + path

    def apply(self, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        r = self.http.post(self.api(""), json=body)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def revert(self, fault_id: str) -> dict[str, Any]:
        r = self.http.delete(self.api(f"/{fault_id}"))
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def active(self) -> list[dict[str, Any]]:
        return self.http.get(self.api("")).json()["active"]

    def console(self, op: str, expect: int = 200, **args: Any) -> dict[str, Any]:
        """One console operation through the lab's API (`POST /api/console/{op}`), its answer."""
        r = self.http.post(f"{self.stack.lab_url}/api/console/{op}", json=args, timeout=300)
        assert r.status_code == expect, (op, args, r.status_code, r.text)
        return r.json()

    # --- the stack ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.stack.status()

    def service(self, name: str) -> dict[str, Any]:
        return self.stack.service(name)

    def url(self, name: str) -> str:
        return self.stack.topology.service_url(name)

    def proxy_url(self, hop: str) -> str:
        return self.stack.topology.hop(hop).url

    def config(self, name: str) -> dict[str, Any]:
        r = self.http.get(self.url(name) + "/admin/config", timeout=10)
        r.raise_for_status()
        return r.json()

    def proxies(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.status()["proxies"]}

    def transaction(self) -> dict[str, Any]:
        t = self.gen.sample(1)[0]
        t.pop("label")
        return t

    def model_row(self) -> dict[str, Any]:
        """One model-input row as the gateway would send it to a replica."""
        t = self.transaction()
        row = {k: t[k] for k in ("amount", "hour", "device_age_days", "merchant_category", "country", "card_present")}
        row.update(self.gen.card_features(t["card_id"]))
        return row

    def score(self, timeout: float = 10) -> httpx.Response:
        return self.http.post(self.stack.public_url + "/v1/score", json=self.transaction(), timeout=timeout)

    def scores(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            r = self.score()
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out

    # --- healthy ------------------------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        found = status_problems(self.status())
        if not found:
            r = self.score()
            if r.status_code != 200 or r.json()["fallback"] is not None:
                found.append(f"score: {r.status_code} {r.text[:200]}")
        return found

    def wait_healthy(self, timeout: float = 90) -> None:
        last: list[str] = []

        def healthy() -> bool:
            nonlocal last
            last = self.problems()
            return not last

        try:
            wait_until(healthy, timeout, interval=0.25)
        except AssertionError:
            raise AssertionError(f"stack not healthy after {timeout}s: {last}") from None


@contextmanager
def llm_lab(trained_registry: Path, scratch: Path, llm_replicas: int) -> Iterator[Lab]:
    """A private `faultline up -d --track llm` stack in `scratch` (with the LLM versions, trained tiny if `make setup`
    has not), seen as a Lab; stopped on exit."""
    registry = registry_with_llm(trained_registry, scratch / "registry-src")
    with llm_track(registry, scratch / "home", llm_replicas=llm_replicas) as handle:
        lab = Lab(handle)
        try:
            yield lab
        finally:
            lab.http.close()


@contextmanager
def lab_traffic(lab: Lab, **body: Any) -> Iterator[LoadgenClient]:
    """The lab's own load generator started with `body` (POST /api/traffic), its client; traffic stopped on exit."""
    traffic = lab.stack.lab_url + "/api/traffic"
    r = lab.http.post(traffic, json=body)
    assert r.status_code == 200, r.text
    client = LoadgenClient(f"http://127.0.0.1:{lab.stack.topology.ports.locust_web}")
    try:
        yield client
    finally:
        client.close()
        lab.http.delete(traffic)
