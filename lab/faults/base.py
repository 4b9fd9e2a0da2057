"""The injector contract: what a fault kind must provide, the record of an applied fault, and the registry.

An injector carries out one `kind.action` of lab/scenario/faults.py. `apply(ctx, fault)` changes the running stack
through a FaultContext (HTTP and the supervisor only) and returns an `Applied` record holding everything `revert`
needs: previous values, pids, versions. The record is plain JSON, so the journal can store it and a lab restarted
after a crash can still undo the change. `revert` is idempotent: undoing something already undone (or gone) is
a no-op that returns notes instead of raising.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, get_args

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from lab.scenario import faults as models
from lab.scenario import vocab
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
    """One fault kind/action. Subclasses set `model` (the scenario's pydantic model of that fault) and `summary`,
    and implement `describe`, `apply` and `revert`."""

    model: ClassVar[type[models._Fault]]
    summary: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return name_of(self.model)

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
        """What the sandbox form needs: the name, what it does, the target it takes (with the live stack's
        choices when given: {"hop": [...], "service": [...], ...}) and its params' JSON Schema."""
        fields = self.model.model_fields
        target = fields.get("target")
        params = fields["params"]
        kind = target_kind(target) if target is not None else None
        return {
            "name": self.name,
            "kind": self.name.split(".")[0],
            "action": self.name.split(".")[1],
            "summary": self.summary,
            "target": None if target is None else {
                "kind": kind,
                "choices": (choices or {}).get(kind or ""),
                "required": target.is_required(),
                "default": None if target.is_required() else target.default,
                "schema": TypeAdapter(target.annotation).json_schema(),
            },
            "params_schema": TypeAdapter(params.annotation).json_schema(),
            "params_required": params.is_required(),
        }


_TARGET_CHECKS = {vocab.check_hop: "hop", vocab.check_replica: "replica", vocab.check_service: "service"}


def target_kind(target: FieldInfo) -> str | None:
    """hop, service, replica or dependency: which names a fault's target takes (from its validator)."""
    if target.annotation == models.DependencyName:
        return "dependency"
    metadata = list(target.metadata)
    for arg in get_args(target.annotation):  # `ServiceName | None` keeps its Annotated inside the union
        metadata += getattr(arg, "__metadata__", ())
    for meta in metadata:
        kind = _TARGET_CHECKS.get(getattr(meta, "func", None))
        if kind:
            return kind
    return None


def name_of(model: type[models._Fault]) -> str:
    kind = model.model_fields["kind"].annotation.__args__[0]
    return f"{kind}.{models.action_of(model)}"


_REGISTRY: dict[str, Injector] = {}


def register(cls: type[Injector]) -> type[Injector]:
    """Class decorator: one instance per `kind.action`, under the name the scenario format uses."""
    injector = cls()
    if injector.name in _REGISTRY:
        raise RuntimeError(f"two injectors for {injector.name}")
    _REGISTRY[injector.name] = injector
    return cls


def get(name: str) -> Injector:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FaultError(f"no injector for {name!r}; known: {', '.join(sorted(_REGISTRY))}", 422) from None


def all_injectors() -> list[Injector]:
    order = [name_of(m) for ms in models.FAULTS_BY_KIND.values() for m in ms]
    return [_REGISTRY[n] for n in order if n in _REGISTRY]


_FAULT = TypeAdapter(models.Fault)


def parse_fault(data: Any) -> Any:
    """A fault in the scenario format (dict) -> its pydantic model; FaultError 422 naming each bad field."""
    try:
        return _FAULT.validate_python(data)
    except ValidationError as exc:
        raise FaultError(validation_message(exc), 422) from None


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(_field_path(err["loc"]))
        parts.append(f"{loc or 'fault'}: {err['msg']}")
    return "; ".join(parts)


_TOXIC_TYPES = ("latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data")


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """The error's location as the YAML reads, without the union tags pydantic inserts (kind, action, toxic
    type after `params`, `duration` after `until`)."""
    parts = [str(p) for p in loc]
    out: list[str] = []
    i = 0
    if parts and parts[0] in models.ACTIONS:
        kind = parts[0]
        i = 1
        if len(models.ACTIONS[kind]) > 1 and len(parts) > 1 and parts[1] in models.ACTIONS[kind]:
            i = 2
    while i < len(parts):
        out.append(parts[i])
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if (parts[i] == "params" and nxt in _TOXIC_TYPES) or (parts[i] == "until" and nxt in ("duration", "fixed")):
            i += 1
        i += 1
    return out
