"""The closed vocabularies a scenario may use: services, hops, skills, versions, profiles, categories.

One place to extend when the stack grows (a new load profile, a new broken-model variant); the services, hops and
dependencies come from the part declarations (lab/parts/). Name checks here are
syntactic; whether `model-N` exists in a given scenario (N <= stack.replicas) is a cross-field check.
"""

from __future__ import annotations

import re

from lab import parts
from lab.topology import MAX_REPLICAS
from services.common.schema import MODEL_FEATURES

DIFFICULTIES: tuple[str, ...] = ("intro", "intermediate", "advanced")

SKILLS: tuple[str, ...] = (
    "networking",
    "observability",
    "capacity",
    "performance",
    "memory",
    "data-drift",
    "data-quality",
    "deployment",
    "config",
    "resilience",
    "ml-quality",
)

# The fault kinds (also the diagnosis' root-cause categories) are not listed here: lab.scenario.faults.FAULT_KINDS
# is built from the fault registry (one module per kind in lab/faults/kinds/). `vocab.FAULT_KINDS` still answers,
# looked up on first use (see __getattr__ at the end): the kinds import this module, so it cannot import them.

# From the part declarations (lab/parts/): the single parts a learner may target, those with a hop in front, and
# the dependencies a `dependency.*` fault may slow or take down. The replicated part is checked by pattern.
FIXED_SERVICES: tuple[str, ...] = tuple(p.name for p in parts.target_parts() if not p.replicated)
FIXED_HOPS: tuple[str, ...] = tuple(p.name for p in parts.hop_parts() if not p.replicated)
DEPENDENCIES: tuple[str, ...] = parts.dependencies()
_REPLICATED = parts.replica_part()

# Versions the registry holds when a scenario starts (`make setup` trains both).
BASE_VERSIONS: tuple[str, ...] = ("v1", "v2")
# Broken variants the registry can derive from a base version; a deploy fault names one, and probes or console
# operations may then refer to "the version that fault registered" by the same label.
MODEL_VARIANTS: tuple[str, ...] = ("flipped_labels", "no_standardisation", "slow", "nan")
CORRUPT_LABEL = "corrupt"
# The version a learner's `retrain` produced in this run (its vN is only known at run time).
RETRAINED_LABEL = "retrained"

TRAFFIC_PROFILES: tuple[str, ...] = (
    "baseline",
    "unit-change",
    "null-spike",
    "new-category",
    "covariate-shift",
    "concept-shift",
    "surge",
)

TOXIC_STREAMS: tuple[str, ...] = ("upstream", "downstream")

SERVICE_STATES: tuple[str, ...] = ("starting", "running", "unready", "backoff", "crashloop", "stopped", "exited")

FEATURES: tuple[str, ...] = MODEL_FEATURES

SLUG_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
CONFIG_KEY_PATTERN = r"^[a-z_][a-z0-9_]*$"
CONFIG_PATH_PATTERN = r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_-]+)*$"
_REPLICA = re.compile(rf"^{re.escape(_REPLICATED.name)}-([0-9]+)$")
REPLICA_PATTERN = _REPLICATED.pattern.replace("{n}", "N")


def replica_number(name: str) -> int | None:
    """N for a replica's name (`model-N`), else None."""
    m = _REPLICA.match(name)
    return int(m.group(1)) if m else None


def _check_replica_name(name: str) -> str:
    n = replica_number(name)
    if n is None or not 1 <= n <= MAX_REPLICAS:
        stem = _REPLICATED.name
        raise ValueError(f"'{name}' is not a {stem} replica; expected {stem}-1 .. {stem}-{MAX_REPLICAS}")
    return name


def check_replica(name: str) -> str:
    return _check_replica_name(name)


def check_service(name: str) -> str:
    if name in FIXED_SERVICES:
        return name
    if replica_number(name) is not None:
        return _check_replica_name(name)
    raise ValueError(f"unknown service '{name}'; expected one of: {', '.join(FIXED_SERVICES)}, {REPLICA_PATTERN}")


def check_hop(name: str) -> str:
    if name in FIXED_HOPS:
        return name
    if replica_number(name) is not None:
        return _check_replica_name(name)
    raise ValueError(f"unknown hop '{name}'; expected one of: {', '.join(FIXED_HOPS)}, {REPLICA_PATTERN}")


def check_feature(name: str) -> str:
    if name not in FEATURES:
        raise ValueError(f"unknown feature '{name}'; expected one of: {', '.join(FEATURES)}")
    return name


VERSION_REFS: tuple[str, ...] = (*BASE_VERSIONS, *MODEL_VARIANTS, CORRUPT_LABEL, RETRAINED_LABEL)


def check_version_ref(name: str) -> str:
    """A version a scenario may name: a base version, or a label for a version made during the run."""
    if name not in VERSION_REFS:
        raise ValueError(f"unknown model version '{name}'; expected one of: {', '.join(VERSION_REFS)}")
    return name


def __getattr__(name: str) -> object:
    if name == "FAULT_KINDS":
        from lab.scenario.faults import FAULT_KINDS

        return FAULT_KINDS
    raise AttributeError(f"module 'lab.scenario.vocab' has no attribute {name!r}")
