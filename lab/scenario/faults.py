"""Faults as data: what breaks (`kind` and `action`), where (`target`), how much (`params`), when and until when.

Each kind/action pair has its own model, chosen by a two-level discriminated union (`kind`, then `action`), so a
bad parameter is reported against the action that owns it. The injectors that carry faults out live elsewhere and
are registered under the same `kind.action` names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from lab.rules import MAX_TRAFFIC_RPS
from lab.scenario import vocab
from lab.scenario.fields import Fraction, HopName, Ident, ReplicaName, Seconds, ServiceName, Strict
from lab.scenario.ops import ConfigKey, OpName

Millis = Annotated[int, Field(ge=0, le=600_000)]
Megabytes = Annotated[int, Field(ge=16, le=1_048_576)]
HeadroomMb = Annotated[int, Field(ge=1, le=1_048_576)]


# ---- when and until ----


class When(Strict):
    """Exactly one trigger: a time after the scenario starts, another fault's injection, or a learner action."""

    at_s: float | None = Field(default=None, ge=0, le=86_400)
    after: Ident | None = None
    on_action: OpName | None = None
    target: str | None = None
    delay_s: float | None = Field(default=None, ge=0, le=86_400)

    @model_validator(mode="after")
    def _one_trigger(self) -> When:
        given = [name for name in ("at_s", "after", "on_action") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of at_s, after, on_action (got {', '.join(given) or 'none'})")
        if self.target is not None and self.on_action is None:
            raise ValueError("target narrows on_action; it needs on_action")
        if self.delay_s is not None and self.at_s is not None:
            raise ValueError("delay_s applies to after and on_action; with at_s, add it to at_s")
        return self


class Duration(Strict):
    duration_s: Seconds


def _until_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "fixed"
    return "duration" if isinstance(value, (dict, Duration)) else None


Until = Annotated[
    Union[Annotated[Duration, Tag("duration")], Annotated[Literal["fixed"], Tag("fixed")]],  # noqa: UP007
    Discriminator(
        _until_tag,
        custom_error_type="until_shape",
        custom_error_message="until is either 'fixed' or {duration_s: seconds}",
    ),
]


class _Fault(Strict):
    id: Ident
    description: str | None = None
    when: When
    until: Until


class NoParams(Strict):
    pass


# ---- network: Toxiproxy toxics on a hop, or the hop down ----


class _Toxic(Strict):
    stream: Literal[vocab.TOXIC_STREAMS] = "downstream"  # type: ignore[valid-type]
    toxicity: Fraction = 1.0


class LatencyToxic(_Toxic):
    type: Literal["latency"]
    latency: Millis
    jitter: Millis = 0


class BandwidthToxic(_Toxic):
    type: Literal["bandwidth"]
    rate: int = Field(ge=0, description="KB/s")


class SlowCloseToxic(_Toxic):
    type: Literal["slow_close"]
    delay: Millis


class TimeoutToxic(_Toxic):
    type: Literal["timeout"]
    timeout: Millis = Field(description="ms; 0 = never close")


class ResetPeerToxic(_Toxic):
    type: Literal["reset_peer"]
    timeout: Millis = 0


class SlicerToxic(_Toxic):
    type: Literal["slicer"]
    average_size: int = Field(gt=0, le=1_048_576, description="bytes")
    size_variation: int = Field(default=0, ge=0, le=1_048_576, description="bytes")
    delay: int = Field(default=0, ge=0, le=60_000_000, description="microseconds")

    @model_validator(mode="after")
    def _variation(self) -> SlicerToxic:
        if self.size_variation >= self.average_size:
            raise ValueError("size_variation must be smaller than average_size")
        return self


class LimitDataToxic(_Toxic):
    type: Literal["limit_data"]
    bytes: int = Field(ge=0)


Toxic = Annotated[
    Union[  # noqa: UP007
        LatencyToxic, BandwidthToxic, SlowCloseToxic, TimeoutToxic, ResetPeerToxic, SlicerToxic, LimitDataToxic
    ],
    Field(discriminator="type"),
]


class NetworkToxic(_Fault):
    kind: Literal["network"]
    action: Literal["toxic"]
    target: HopName
    params: Toxic


class NetworkDown(_Fault):
    kind: Literal["network"]
    action: Literal["down"]
    target: HopName
    params: NoParams = Field(default_factory=NoParams)


# ---- process ----


class KillParams(Strict):
    signal: Literal["KILL", "TERM", "INT"] = "KILL"


class ProcessKill(_Fault):
    kind: Literal["process"]
    action: Literal["kill"]
    target: ServiceName
    params: KillParams = Field(default_factory=KillParams)


class ProcessFreeze(_Fault):
    """SIGSTOP until reverted (SIGCONT): alive to the supervisor, silent to its callers."""

    kind: Literal["process"]
    action: Literal["freeze"]
    target: ServiceName
    params: NoParams = Field(default_factory=NoParams)


class CrashLoopParams(Strict):
    exit_code: int = Field(default=1, ge=1, le=255)


class ProcessCrashLoop(_Fault):
    kind: Literal["process"]
    action: Literal["crash_loop"]
    target: ServiceName
    params: CrashLoopParams = Field(default_factory=CrashLoopParams)


# ---- memory ----


class LimitParams(Strict):
    limit_mb: Megabytes


class MemoryLimit(_Fault):
    kind: Literal["memory"]
    action: Literal["limit"]
    target: ServiceName
    params: LimitParams


class LeakParams(Strict):
    """The replica's prediction cache made unbounded; with a limit, it ends in an OOM kill."""

    limit_mb: Megabytes | None = None
    # A replica's RSS depends on the machine: a limit relative to it at injection time keeps a scenario portable.
    headroom_mb: HeadroomMb | None = Field(default=None, description="limit = the replica's RSS at injection + this")

    @model_validator(mode="after")
    def _one_limit(self) -> LeakParams:
        if self.limit_mb is not None and self.headroom_mb is not None:
            raise ValueError("give limit_mb or headroom_mb, not both")
        return self


class MemoryLeak(_Fault):
    kind: Literal["memory"]
    action: Literal["leak"]
    target: ReplicaName
    params: LeakParams = Field(default_factory=LeakParams)


class BatchBlowupParams(Strict):
    max_batch_size: int = Field(ge=2, le=1_000_000)
    limit_mb: Megabytes | None = None
    headroom_mb: HeadroomMb | None = Field(default=None, description="limit = the replica's RSS at injection + this")

    @model_validator(mode="after")
    def _one_limit(self) -> BatchBlowupParams:
        if (self.limit_mb is None) == (self.headroom_mb is None):
            raise ValueError("give exactly one of limit_mb, headroom_mb")
        return self


class MemoryBatchBlowup(_Fault):
    kind: Literal["memory"]
    action: Literal["batch_blowup"]
    target: ReplicaName
    params: BatchBlowupParams


# ---- cpu ----


class HogParams(Strict):
    cores: int = Field(default=1, ge=1, le=64)
    duty: float = Field(default=1.0, gt=0, le=1)


class CpuHog(_Fault):
    """A separate busy process the scenario starts (the learner may `kill` it); target: whom it is placed beside."""

    kind: Literal["cpu"]
    action: Literal["hog"]
    target: ServiceName | None = None
    params: HogParams = Field(default_factory=HogParams)


class OversubscribeParams(Strict):
    threads: int = Field(ge=2, le=1024)


class CpuOversubscribe(_Fault):
    kind: Literal["cpu"]
    action: Literal["oversubscribe"]
    target: ReplicaName
    params: OversubscribeParams


# ---- data: the load generator's traffic ----


class ProfileParams(Strict):
    profile: Literal[vocab.TRAFFIC_PROFILES]  # type: ignore[valid-type]
    rps: float | None = Field(default=None, gt=0, le=MAX_TRAFFIC_RPS)
    strength: Fraction | None = None


class DataProfile(_Fault):
    kind: Literal["data"]
    action: Literal["profile"]
    params: ProfileParams


# ---- deploy: a broken version from the registry, at canary weight or in full ----


class VariantParams(Strict):
    base: Literal[vocab.BASE_VERSIONS] = "v1"  # type: ignore[valid-type]
    variant: Literal[vocab.MODEL_VARIANTS]  # type: ignore[valid-type]
    weight: float = Field(default=1.0, gt=0, le=1, description="share of traffic; 1 = full rollout")


class DeployVariant(_Fault):
    kind: Literal["deploy"]
    action: Literal["variant"]
    params: VariantParams


class CorruptParams(Strict):
    base: Literal[vocab.BASE_VERSIONS] = "v1"  # type: ignore[valid-type]
    weight: float = Field(default=1.0, gt=0, le=1)


class DeployCorrupt(_Fault):
    kind: Literal["deploy"]
    action: Literal["corrupt"]
    params: CorruptParams


# ---- config ----


class PushParams(Strict):
    values: dict[ConfigKey, Any] = Field(min_length=1)


class ConfigPush(_Fault):
    kind: Literal["config"]
    action: Literal["push"]
    target: ServiceName
    params: PushParams


# ---- dependency ----

DependencyName = Literal[vocab.DEPENDENCIES]  # type: ignore[valid-type]


class SlowParams(Strict):
    latency_ms: int = Field(gt=0, le=600_000)


class DependencySlow(_Fault):
    kind: Literal["dependency"]
    action: Literal["slow"]
    target: DependencyName = "feature-store"
    params: SlowParams


class DependencyDown(_Fault):
    kind: Literal["dependency"]
    action: Literal["down"]
    target: DependencyName = "feature-store"
    params: NoParams = Field(default_factory=NoParams)


FAULTS_BY_KIND: dict[str, tuple[type[_Fault], ...]] = {
    "network": (NetworkToxic, NetworkDown),
    "process": (ProcessKill, ProcessFreeze, ProcessCrashLoop),
    "memory": (MemoryLimit, MemoryLeak, MemoryBatchBlowup),
    "cpu": (CpuHog, CpuOversubscribe),
    "data": (DataProfile,),
    "deploy": (DeployVariant, DeployCorrupt),
    "config": (ConfigPush,),
    "dependency": (DependencySlow, DependencyDown),
}
if tuple(FAULTS_BY_KIND) != vocab.FAULT_KINDS:  # the diagnosis' categories are the fault kinds
    raise RuntimeError("FAULTS_BY_KIND and vocab.FAULT_KINDS disagree")


def action_of(model: type[_Fault]) -> str:
    return model.model_fields["action"].annotation.__args__[0]


ACTIONS: dict[str, tuple[str, ...]] = {
    kind: tuple(action_of(m) for m in models) for kind, models in FAULTS_BY_KIND.items()
}


def _by_action(models: tuple[type[_Fault], ...]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="action")]  # noqa: UP007


Fault = Annotated[
    Union[tuple(_by_action(models) for models in FAULTS_BY_KIND.values())],  # noqa: UP007
    Field(discriminator="kind"),
]

# Faults that start a process of their own, which the learner may `kill`.
PROCESS_STARTING: frozenset[str] = frozenset({"cpu.hog"})
