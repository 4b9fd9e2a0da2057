"""The parts of the stack: one declaration module per part, found at import, plus any named in FAULTLINE_PARTS.

Each module of this package (but `base` and `client`) calls `register(Part(...))` for its part and holds the
part's typed HTTP client. Extra modules listed in the environment variable `FAULTLINE_PARTS` (comma-separated
dotted names, e.g. `mypkg.echo`) are imported too, so a test or a user adds a part without editing the repo.
Everything else in the lab asks this registry which parts exist, how to start them and what they allow.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading

from lab.parts.base import DEFAULT_TRACK, TRACKS, Dial, Launch, MapPlace, Part

__all__ = ["DEFAULT_TRACK", "TRACKS", "Dial", "Launch", "MapPlace", "Part", "dependencies", "get", "hop_parts",
           "part_for", "parts", "providing", "register", "replica_dials", "replica_part", "replica_parts",
           "resolve_tracks", "target_parts"]

ENV_VAR = "FAULTLINE_PARTS"
_NOT_PARTS = frozenset({"base", "client"})
_registry: dict[str, Part] = {}
_lock = threading.RLock()
_discovered = False


def register(part: Part) -> Part:
    """Add (or replace, on a module reload) a part's declaration; returns it so modules can keep a name."""
    with _lock:
        _registry[part.name] = part
    return part


def _discover() -> None:
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True  # set first: a part module's import may ask the registry
        for info in pkgutil.iter_modules(__path__):
            if info.name not in _NOT_PARTS and not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        for name in filter(None, (m.strip() for m in os.environ.get(ENV_VAR, "").split(","))):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ImportError(f"{ENV_VAR}: cannot import part module {name!r}: {exc}") from exc


def parts() -> list[Part]:
    """Every declared part in status order (the learner's services first, infrastructure last)."""
    _discover()
    return sorted(_registry.values(), key=lambda p: (p.status_rank, p.name))


def get(name: str) -> Part:
    _discover()
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"no part named {name!r}; parts are: {', '.join(p.name for p in parts())}") from None


def part_for(service: str) -> Part | None:
    """The part a service name belongs to (`model-3` -> the replicated model part), or None."""
    for p in parts():
        if p.matches(service):
            return p
    return None


def replica_parts() -> list[Part]:
    """Every replicated part (each has its own replica count in a topology)."""
    return [p for p in parts() if p.replicated]


def replica_part(track: str = DEFAULT_TRACK) -> Part:
    """The replicated part of `track` (the fraud track's: the one `--replicas`, `scale` and the scenarios'
    `stack.replicas` apply to)."""
    found = [p for p in replica_parts() if track in p.tracks]
    if len(found) != 1:
        raise RuntimeError(f"expected exactly one replicated part in track {track!r}, found "
                           f"{[p.name for p in found]}")
    return found[0]


def resolve_tracks(choice: str) -> tuple[str, ...]:
    """`--track` as the tracks it runs: one of TRACKS, or `all`; ValueError naming the choices otherwise."""
    if choice == "all":
        return TRACKS
    if choice not in TRACKS:
        raise ValueError(f"unknown track {choice!r}; one of {', '.join((*TRACKS, 'all'))}")
    return (choice,)


def hop_parts() -> list[Part]:
    return [p for p in parts() if p.proxy_offset is not None]


def target_parts() -> list[Part]:
    """Parts a learner may name in console operations and service faults."""
    return [p for p in parts() if p.target and not p.on_demand and not p.proxy_server]


def providing(capability: str) -> Part:
    """The part whose client provides `capability` (see Part.provides)."""
    found = [p for p in parts() if capability in p.provides]
    if not found:
        raise KeyError(f"no part provides {capability!r}")
    return found[0]


def replica_dials() -> list[Dial]:
    """How the replicated part is dialed: its callers' flags and the config keys the stack manages for them."""
    return list(replica_part().dials)


def dependencies() -> tuple[str, ...]:
    return tuple(p.name for p in parts() if p.dependency)
