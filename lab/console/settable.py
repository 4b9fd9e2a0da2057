"""Which config keys a learner may change with `config_set`, per part (each part declares its `settable`).

Operational knobs an on-call engineer really owns (timeouts, retries, breakers, batching, fallbacks, drained
replicas, routing, readiness, thresholds). Excluded on purpose: what the lab manages itself (the gateway's
`replicas`, pushed on scale) and the knobs that *simulate* infrastructure trouble (a dependency's added
latency or error rate, a replica's extra latency or slow start): on a real system those are not settings
anyone could turn off, so turning them off is not a fix.
"""

from __future__ import annotations

from lab import parts


def settable_keys() -> dict[str, frozenset[str]]:
    """{part name: keys} for every part that has settable keys."""
    return {p.name: p.settable for p in parts.parts() if p.settable}


def settable(service: str) -> frozenset[str]:
    part = parts.part_for(service)
    return part.settable if part is not None else frozenset()


__all__ = ["settable", "settable_keys"]
