"""The parts fault injectors reason about, read from their declarations (lab/parts/): nothing here names a part.

- `ROUTER`: the part whose `routing` config splits traffic between model versions (a canary) — the gateway.
- `DEFAULT_DEPENDENCY`: the dependency a `dependency.*` fault hits when the scenario names none.
- `lab_managed_keys(service)`: config keys the stack derives from the topology and pushes itself (on scale); a fault
  must not own them.
- `hop_label(hop)`: how a hop reads in a fault's description ("clients→gateway", "gateway→model-1").
"""

from __future__ import annotations

from lab import parts
from lab.parts.gateway import NAME as ROUTER

DEFAULT_DEPENDENCY: str = next(p.name for p in parts.parts() if p.default_dependency)

__all__ = ["DEFAULT_DEPENDENCY", "ROUTER", "hop_label", "lab_managed_keys"]


def lab_managed_keys(service: str) -> frozenset[str]:
    part = parts.part_for(service)
    return part.lab_managed_keys if part is not None else frozenset()


def hop_label(hop: str) -> str:
    """The public part's hop is where clients enter; every other hop leads out of the router."""
    entry = next((p.name for p in parts.parts() if p.public), ROUTER)
    return f"clients→{entry}" if hop == entry else f"{ROUTER}→{hop}"
