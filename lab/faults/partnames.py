"""PARTS: the part names fault injectors still hard-code, in one marked place.

Issue 11 gives every part of the stack one declaration (lab/parts/); until these are pointed at it, the names an
injector assumes about the topology are here and nowhere else in lab/faults/.
"""

from __future__ import annotations

# The hop clients (and the load generator) reach the stack through; every other hop leads out of the gateway.
ENTRY_HOP = "gateway"
# The service whose `routing` config splits traffic between model versions (a canary).
ROUTER = "gateway"
# The dependency a dependency fault hits when the scenario names none.
DEFAULT_DEPENDENCY = "feature-store"
# Config keys the stack derives from the topology and pushes itself (on scale): a fault must not own them.
LAB_MANAGED_KEYS: dict[str, set[str]] = {"gateway": {"replicas"}}


def hop_label(hop: str) -> str:
    return "clients→gateway" if hop == ENTRY_HOP else f"{ROUTER}→{hop}"
