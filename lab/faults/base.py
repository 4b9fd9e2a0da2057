"""The injector contract: what a fault kind must provide, and the record of an applied fault.

An injector carries out one `kind.action` (one module of lab/faults/kinds/, registered in lab/faults/registry.py).
`apply(ctx, fault)` changes the running stack through a FaultContext (HTTP and the supervisor only) and returns
an `Applied` record holding everything `revert` needs: previous values, pids, versions. The record is plain JSON,
so the journal can store it and a lab restarted after a crash can still undo the change. `revert` is idempotent:
undoing something already undone (or gone) is a no-op that returns notes instead of raising.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, get_args

from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

from lab.faults import registry
from lab.faults.registry import Catalog
from lab.scenario import vocab
from lab.scenario.faultspec import DependencyName, FaultModel
from lab.stackclients import ServiceCallError

if TYPE_CHECKING:
    from lab.faults.context import FaultContext

MiB = 1024 * 1024


class FaultError(ServiceCallError):
    """A fault could not be applied; `status` is the HTTP status the lab API answers with, the message is for
    the person who asked (a scenario author or a learner in the sandbox). A ServiceCallError (lab/stackclients.py),
    so the console and the attempts catch both with one clause."""


@dataclass
class Applied:
    """One applied fault: what it is, where, and what was changed (with the previous values) — JSON only."""

    fault_id: str
    name: str
    target: str | None
    description: str
    changes: dict[str, Any]
    fault: dict[str, Any]
    applied_at: float = field(default_factory=time.time)
    reverted_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.reverted_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Applied:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Injector:
    """One fault kind/action. Subclasses set `model` (the scenario's pydantic model of that fault), `catalog`
    (the sandbox's label, help and example params) and `position` (where the kind sorts in the schema and the
    sandbox), implement `describe`, `apply` and `revert`, and are decorated with `@register`."""

    model: ClassVar[type[FaultModel]]
    catalog: ClassVar[Catalog]
    position: ClassVar[int] = 1000
    # Faults that start a process of their own, which the learner may `kill`.
    starts_process: ClassVar[bool] = False
    # Tags pydantic puts in an error's location after `params` when the params are a union (e.g. toxic types).
    params_tags: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return registry.fault_name(self.model)

    @property
    def summary(self) -> str:
        return self.catalog.help

    def describe(self, fault: Any) -> str:
        raise NotImplementedError

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        raise NotImplementedError

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        """Undo `applied`; safe to call again. Returns notes (what could not be undone, and why)."""
        raise NotImplementedError

    def recover(self, ctx: FaultContext, applied: Applied) -> list[str]:
        """Undo what outlived a crashed lab that had applied this fault. Processes, proxies, live configs and
        argv died with that lab (and its ports may differ from this one's): by default nothing is left."""
        return ["nothing outlived the previous lab"]

    def record(self, fault: Any, changes: dict[str, Any], notes: list[str] | None = None) -> Applied:
        return Applied(
            fault_id=fault.id,
            name=self.name,
            target=getattr(fault, "target", None),
            description=self.describe(fault),
            changes=changes,
            fault=fault.model_dump(mode="json"),
            notes=list(notes or []),
        )

    def catalog_entry(self, choices: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """What the sandbox form needs: the name, its label and help, the target it takes (with the live stack's
        choices when given: {"hop": [...], "service": [...], ...}), its params' JSON Schema and example params."""
        fields = self.model.model_fields
        target = fields.get("target")
        params = fields["params"]
        kind = target_kind(target) if target is not None else None
        return {
            "name": self.name,
            "kind": self.name.split(".")[0],
            "action": self.name.split(".")[1],
            "label": self.catalog.label,
            "summary": self.catalog.help,
            "target": None if target is None else {
                "kind": kind,
                "choices": (choices or {}).get(kind or ""),
                "required": target.is_required(),
                "default": None if target.is_required() else target.default,
                "schema": TypeAdapter(target.annotation).json_schema(),
            },
            "params_schema": TypeAdapter(params.annotation).json_schema(),
            "params_required": params.is_required(),
            "params_example": dict(self.catalog.example),
        }


_TARGET_CHECKS = {vocab.check_hop: "hop", vocab.check_replica: "replica", vocab.check_service: "service"}


def target_kind(target: FieldInfo) -> str | None:
    """hop, service, replica or dependency: which names a fault's target takes (from its validator)."""
    if target.annotation == DependencyName:
        return "dependency"
    metadata = list(target.metadata)
    for arg in get_args(target.annotation):  # `ServiceName | None` keeps its Annotated inside the union
        metadata += getattr(arg, "__metadata__", ())
    for meta in metadata:
        kind = _TARGET_CHECKS.get(getattr(meta, "func", None))
        if kind:
            return kind
    return None


register = registry.register


def get(name: str) -> Injector:
    found = registry.lookup(name)
    if found is None:
        known = ", ".join(sorted(i.name for i in registry.kinds()))
        raise FaultError(f"no injector for {name!r}; known: {known}", 422)
    return found


def all_injectors() -> list[Injector]:
    """Every injector, in the scenario format's order."""
    return registry.kinds()
