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


def _llm_profile_names() -> list[str]:
    from services.loadgen.profiles import profile_names

    return profile_names("llm")


def _retry_policies() -> tuple[str, ...]:
    from services.loadgen.retry import POLICIES

    return POLICIES


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

# The tracks a scenario runs on (`stack.track`); one per scenario, fraud the default. Which single parts belong to
# which track, and each track's replicated part (`model-N`, `llm-N`), come from the part declarations.
DEFAULT_TRACK = "fraud"
TRACKS: tuple[str, ...] = tuple(dict.fromkeys(t for p in parts.replica_parts() for t in sorted(p.tracks)))
_TRACK_REPLICAS = {t: parts.replica_part(t) for t in TRACKS}


def track_services(track: str) -> tuple[str, ...]:
    """The single parts (not replicas) a learner may name on `track`'s stack."""
    return tuple(p.name for p in parts.target_parts() if not p.replicated and track in p.tracks)


def track_replica(track: str) -> str:
    """The stem of `track`'s replicas (`model`, `llm`)."""
    return _TRACK_REPLICAS[track].name


def track_max_replicas(track: str) -> int:
    part = _TRACK_REPLICAS[track]
    return MAX_REPLICAS if DEFAULT_TRACK in part.tracks else part.max_replicas


def replica_of(name: str) -> tuple[str, int] | None:
    """(track, N) for a replica of any track (`model-3` -> ("fraud", 3), `llm-2` -> ("llm", 2)), else None."""
    for track, part in _TRACK_REPLICAS.items():
        n = part.replica_number(name)
        if n is not None:
            return track, n
    return None


def track_of_name(name: str) -> tuple[str, ...]:
    """The tracks whose stack has `name` (a single part or a replica); () for a name no track knows."""
    rep = replica_of(name)
    if rep is not None:
        return (rep[0],)
    part = parts.part_for(name)
    return tuple(t for t in TRACKS if part is not None and t in part.tracks)

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

# The LLM track's load profiles and client retry policies (services/loadgen: data, importable without locust).
LLM_TRAFFIC_PROFILES: tuple[str, ...] = tuple(_llm_profile_names())
RETRY_POLICIES: tuple[str, ...] = tuple(_retry_policies())
TRACK_PROFILES: dict[str, tuple[str, ...]] = {"fraud": TRAFFIC_PROFILES, "llm": LLM_TRAFFIC_PROFILES}
# Versions each track's registry holds when a scenario starts: the fraud models (`make setup`), the LLM's v1.
LLM_BASE_VERSIONS: tuple[str, ...] = ("v1",)

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


def _shown(name: str) -> str:
    """A refused name as a message quotes it: cut short (an API body may carry a 900 KB one)."""
    return name if len(name) <= 64 else name[:61] + "..."


def _check_replica_name(name: str) -> str:
    """`model-N` (N <= 16) or, on the LLM track, `llm-N` (N <= its max); which track a scenario runs is checked
    against its `stack.track` by the cross-field checks."""
    rep = replica_of(name)
    if rep is not None and rep[0] != DEFAULT_TRACK:
        top = track_max_replicas(rep[0])
        if not 1 <= rep[1] <= top:
            stem = track_replica(rep[0])
            raise ValueError(f"'{_shown(name)}' is not an {rep[0].upper()} replica; expected {stem}-1 .. {stem}-{top}")
        return name
    n = replica_number(name)
    if n is None or not 1 <= n <= MAX_REPLICAS:
        stem = _REPLICATED.name
        raise ValueError(f"'{_shown(name)}' is not a {stem} replica; expected {stem}-1 .. {stem}-{MAX_REPLICAS}")
    return name


def check_replica(name: str) -> str:
    return _check_replica_name(name)


def check_service(name: str) -> str:
    if name in FIXED_SERVICES:
        return name
    if replica_of(name) is not None:
        return _check_replica_name(name)
    raise ValueError(f"unknown service '{_shown(name)}'; expected one of: {', '.join(FIXED_SERVICES)}, "
                     f"{REPLICA_PATTERN}")


def check_hop(name: str) -> str:
    if name in FIXED_HOPS:
        return name
    if replica_of(name) is not None:
        return _check_replica_name(name)
    raise ValueError(f"unknown hop '{_shown(name)}'; expected one of: {', '.join(FIXED_HOPS)}, {REPLICA_PATTERN}")


def check_feature(name: str) -> str:
    if name not in FEATURES:
        raise ValueError(f"unknown feature '{_shown(name)}'; expected one of: {', '.join(FEATURES)}")
    return name


# Every LLM version `make setup` registers (services/llm/train.py: v1, its draft and int8 variant, then the derived
# incident versions): what an LLM scenario's deploy, rollback and promote may name.
LLM_VERSIONS: tuple[str, ...] = ("v1", "v1-draft", "v1-int8", "v1-int4", "v2", "v2-draft")
# The fraud track's version refs; an LLM scenario names LLM_VERSIONS (checked against stack.track).
FRAUD_VERSION_REFS: tuple[str, ...] = (*BASE_VERSIONS, *MODEL_VARIANTS, CORRUPT_LABEL, RETRAINED_LABEL)
VERSION_REFS: tuple[str, ...] = tuple(dict.fromkeys((*FRAUD_VERSION_REFS, *LLM_VERSIONS)))


def check_version_ref(name: str) -> str:
    """A version a scenario may name: a base version, or a label for a version made during the run."""
    if name not in VERSION_REFS:
        raise ValueError(f"unknown model version '{_shown(name)}'; expected one of: {', '.join(VERSION_REFS)}")
    return name


def __getattr__(name: str) -> object:
    if name == "FAULT_KINDS":
        from lab.scenario.faults import FAULT_KINDS

        return FAULT_KINDS
    raise AttributeError(f"module 'lab.scenario.vocab' has no attribute {name!r}")
