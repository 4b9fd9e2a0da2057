"""The fault registry: every fault kind, found by looking, not by a list kept in step by hand.

One fault kind (`kind.action`, e.g. `network.toxic`) is one module of `lab/faults/kinds/` holding its params model,
its scenario model, its injector and its sandbox catalog entry; the module registers itself with `@register` (as
a Toxiproxy toxic does with `Register("latency", ...)`). `kinds()` imports every module of that package once
(pkgutil) and answers with what registered. The scenario schema (lab/scenario/faults.py: the union of fault
models, the diagnosis categories), the sandbox catalog and `lab.faults.get` are all built from here.

Dependency-free on purpose (standard library only): lab.scenario needs the models, lab.faults needs lab.scenario
to parse faults; both import this module, which imports neither.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import Any

KINDS_PACKAGE = "lab.faults.kinds"


@dataclass(frozen=True)
class Catalog:
    """What the sandbox form shows for a kind: a short label, a help line, params to start from."""

    label: str
    help: str
    example: dict[str, Any] = field(default_factory=dict)


def fault_name(model: Any) -> str:
    """`kind.action` of a fault model (from its `kind` and `action` literals)."""
    fields = model.model_fields
    return f"{fields['kind'].annotation.__args__[0]}.{fields['action'].annotation.__args__[0]}"


_KINDS: dict[str, Any] = {}
_lock = threading.RLock()
_discovered = False
_discovering = False


def register(cls: type) -> type:
    """Class decorator for an injector class (it sets `model`, `catalog`, `position`): one instance, registered
    under its model's `kind.action`."""
    injector = cls()
    name = fault_name(cls.model)  # type: ignore[attr-defined]
    with _lock:
        known = _KINDS.get(name)
        if known is not None and (type(known).__module__, type(known).__qualname__) != (cls.__module__,
                                                                                         cls.__qualname__):
            raise RuntimeError(f"two injectors for {name}: {type(_KINDS[name]).__module__} and {cls.__module__}")
        _KINDS[name] = injector
    return cls


def discover() -> None:
    """Import every module of lab/faults/kinds/ once: each registers its kind."""
    global _discovered, _discovering
    with _lock:
        if _discovered:
            return
        if _discovering:  # a kind module imported something that lists the kinds: the list would be short
            raise RuntimeError(f"{KINDS_PACKAGE} was asked for the fault kinds while they were being imported (an "
                               "import cycle: a kind module must not import lab.scenario.faults or its users)")
        _discovering = True
        try:
            package = importlib.import_module(KINDS_PACKAGE)
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{KINDS_PACKAGE}.{info.name}")
        finally:
            _discovering = False
        _discovered = True


def kinds() -> list[Any]:
    """Every registered injector, in their declared `position` order (the schema's and the sandbox's order)."""
    discover()
    return sorted(_KINDS.values(), key=lambda i: (i.position, fault_name(i.model)))


def lookup(name: str) -> Any | None:
    discover()
    return _KINDS.get(name)
