"""Faults as data: what breaks (`kind` and `action`), where (`target`), how much (`params`), when and until when.

Each kind/action pair has its own model, chosen by a two-level discriminated union (`kind`, then `action`), so a
bad parameter is reported against the action that owns it. The models are not listed here: each lives with its
injector in one module of lab/faults/kinds/, which registers itself (lab/faults/registry.py); this module builds
the union, the kinds' actions and the diagnosis categories from that registry. What every fault shares (`id`,
`when`, `until`) is in lab/scenario/faultspec.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from lab.faults import registry
from lab.scenario.faultspec import Duration, FaultModel, NoParams, Until, When

__all__ = ["ACTIONS", "FAULT_KINDS", "Duration", "Fault", "FaultModel", "MODELS", "NoParams",
           "PROCESS_STARTING", "Until", "When", "action_of"]


def action_of(model: type[FaultModel]) -> str:
    return model.model_fields["action"].annotation.__args__[0]


def kind_of(model: type[FaultModel]) -> str:
    return model.model_fields["kind"].annotation.__args__[0]


def _by_kind() -> dict[str, tuple[type[FaultModel], ...]]:
    grouped: dict[str, list[type[FaultModel]]] = {}
    for injector in registry.kinds():  # in their declared order
        grouped.setdefault(kind_of(injector.model), []).append(injector.model)
    return {kind: tuple(models) for kind, models in grouped.items()}


_BY_KIND = _by_kind()

# Every fault model by its `kind.action` name (`MODELS["network.toxic"]`).
MODELS: dict[str, type[FaultModel]] = {f"{k}.{action_of(m)}": m for k, ms in _BY_KIND.items() for m in ms}

# Root-cause categories are the fault kinds: the diagnosis asks which kind of thing broke.
FAULT_KINDS: tuple[str, ...] = tuple(_BY_KIND)

ACTIONS: dict[str, tuple[str, ...]] = {kind: tuple(action_of(m) for m in models) for kind, models in _BY_KIND.items()}

# Faults that start a process of their own, which the learner may `kill`.
PROCESS_STARTING: frozenset[str] = frozenset(i.name for i in registry.kinds() if i.starts_process)


def _by_action(models: tuple[type[FaultModel], ...]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="action")]  # noqa: UP007


Fault = Annotated[
    Union[tuple(_by_action(models) for models in _BY_KIND.values())],  # noqa: UP007
    Field(discriminator="kind"),
]
