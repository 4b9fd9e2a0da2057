"""Start real services on free loopback ports for the gateway and feature-store tests.

Every service runs as `python -m services.<name>` (its command line from lab.specs, through the harness's
`start_service`; the test peer as a script) in its own process, with its log in the test's tmp dir;
`Proc.stop()` ends it by pid.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
from kit import ServiceProc, service_argv, start_service
from kit import free_port as free_port  # re-exported: the gateway tests import it from here

# One pooled client for all test requests: httpx.get() & co. build a new client (and TLS context) per call.
http = httpx.Client(timeout=30)

PEER = Path(__file__).with_name("peer.py")


class Proc(ServiceProc):
    """A gateway-test service: ready when /healthz answers unless told otherwise."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, ready_path: str = "/healthz",
                 wait: bool = True) -> None:
        super().__init__(name, argv, port, log_dir, ready_path, wait)


def start_featurestore(log_dir: Path, db: Path, n_cards: int = 500, config: dict[str, Any] | None = None) -> Proc:
    port = free_port()
    argv = service_argv("feature-store", port, db=db, config=config, extra=["--n-cards", str(n_cards)])
    return Proc("featurestore", argv, port, log_dir, ready_path="/readyz")


def start_modelserver(log_dir: Path, registry: Path, replica: str, versions: str = "v1,v2") -> ServiceProc:
    """Started, not waited for: loading torch and the models takes a while, so start replicas together."""
    return start_service(replica, log_dir, registry=registry, versions=versions.split(","), wait=False)


def start_peer(log_dir: Path, replica: str) -> Proc:
    port = free_port()
    argv = [sys.executable, str(PEER), "--port", str(port), "--replica", replica]
    return Proc(f"peer-{replica}", argv, port, log_dir)


def start_netproxy(log_dir: Path, seed: int = 1) -> Proc:
    port = free_port()
    return Proc("netproxy", service_argv("netproxy", port, extra=["--seed", str(seed)]), port, log_dir,
                ready_path="/version")


def start_gateway(
    log_dir: Path, feature_store: str, models: dict[str, str], config: dict[str, Any] | None = None, name: str = "gw"
) -> Proc:
    port = free_port()
    argv = service_argv("gateway", port, feature_store=feature_store, models=models, config=config)
    return Proc(name, argv, port, log_dir)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, rest = series.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def transaction(i: int = 0, **overrides: Any) -> dict[str, Any]:
    row = {
        "transaction_id": f"t-test-{i}",
        "card_id": f"c{i % 500:06d}",
        "amount": 42.5,
        "merchant_category": "grocery",
        "hour": 14,
        "country": "US",
        "card_present": True,
        "device_age_days": 120.0,
    }
    row.update(overrides)
    return row


def script(peer: Proc, **state: Any) -> None:
    body = {"mode": "ok", "delay_ms": 0, "version": "v1", "score": None, **state}
    http.post(peer.url + "/script", json=body, timeout=5).raise_for_status()
