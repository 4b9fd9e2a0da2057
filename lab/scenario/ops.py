"""The learner's console operations as data: a closed set of names, each with its own typed arguments.

A scenario names console operations in four places: the reference solution and the plausible wrong fix
(complete operations, `Op`), and the diagnosis evidence and collateral penalties (patterns, `OpPattern`: any
subset of the arguments, matched against what the learner actually ran).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, StringConstraints, create_model, model_validator

from lab.logsearch import MAX_PATTERN_CHARS
from lab.rules import MAX_TRAFFIC_RPS
from lab.scenario import vocab
from lab.scenario.fields import FeatureName, Ident, ReplicaName, Seconds, ServiceName, Strict, VersionRef

ConfigKey = Annotated[str, StringConstraints(pattern=vocab.CONFIG_KEY_PATTERN, max_length=64)]


class NoArgs(Strict):
    pass


class LogsArgs(Strict):
    """`grep` is a plain, case-sensitive substring; with `regex` an RE2 expression (lab/logsearch.py)."""

    service: ServiceName
    grep: str | None = Field(default=None, max_length=MAX_PATTERN_CHARS)
    tail: int | None = Field(default=None, ge=1, le=10_000)
    regex: bool | None = None


class MetricsArgs(Strict):
    service: ServiceName | None = None


class TraceArgs(Strict):
    limit: int | None = Field(default=None, ge=1, le=100)


class DriftArgs(Strict):
    feature: FeatureName | None = None


class ReferenceArgs(Strict):
    version: VersionRef | None = None


class ServiceArgs(Strict):
    service: ServiceName


class DistributionsArgs(Strict):
    """One request feature or `score`; none: all of them."""

    feature: FeatureName | Literal["score"] | None = None


class StatusCodesArgs(Strict):
    service: ServiceName | None = None


class InspectArgs(Strict):
    limit: int | None = Field(default=None, ge=1, le=200)


class SendArgs(Strict):
    """One scoring request sent through the gateway as a client would (amount in the currency unit the model was
    trained on, dollars); the lab picks the transaction id."""

    amount: float = Field(ge=0, le=10_000_000)
    merchant_category: str = Field(default="grocery", pattern=r"^[A-Za-z0-9_ &.-]{1,64}$")
    hour: int = Field(default=12, ge=0, le=23)
    country: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    card_present: bool = True
    device_age_days: float | None = Field(default=365.0, ge=0, le=1_000_000)
    card_id: str = Field(default="c000001", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class GenerateArgs(Strict):
    """One completion streamed through the gateway, or to one LLM replica (`replica`, checked against the stack),
    with its timings; prompt and output bounded."""

    prompt: str = Field(min_length=1, max_length=2000)
    max_tokens: int = Field(default=32, ge=1, le=256)
    replica: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]{0,15}-[0-9]{1,2}$")
    temperature: float | None = Field(default=None, ge=0, le=2)


class ConfigSetArgs(Strict):
    service: ServiceName
    key: ConfigKey
    value: Any


# Which track an operation acts on, on a lab running both (docs/console.md, "Choosing the track"): none means
# the only track the stack runs, else the track the version named belongs to, else the running attempt's.
Track = Literal[vocab.TRACKS]  # type: ignore[valid-type]


class TrackArgs(Strict):
    track: Track | None = None


class ScaleArgs(Strict):
    """`replicas` of one track's model replicas (model-N on the fraud track, llm-N on the LLM track)."""

    replicas: int = Field(ge=1, le=vocab.MAX_REPLICAS)
    track: Track | None = None


class ReplicaArgs(Strict):
    replica: ReplicaName


class DeployArgs(Strict):
    """`part` (LLM track only): deploy one part of an LLM version alone — its weights, its tokenizer or its
    generation config — keeping the others as each replica serves them; none or `all`: the version whole."""

    version: VersionRef
    canary: float | None = Field(default=None, gt=0, lt=1)
    part: Literal["all", "weights", "tokenizer", "generation_config"] | None = None
    track: Track | None = None


class VersionArgs(Strict):
    version: VersionRef
    track: Track | None = None


class RetrainArgs(Strict):
    """Train on the gateway's labelled rows of the last `window_s` (scenario) seconds; with `wait_s`, wait that long
    first (labels arrive late: the window then holds the labels that came in meanwhile)."""

    window_s: Seconds | None = None
    wait_s: Seconds | None = None


class TrafficArgs(Strict):
    profile: Literal[vocab.TRAFFIC_PROFILES] | None = None  # type: ignore[valid-type]
    rps: float | None = Field(default=None, gt=0, le=MAX_TRAFFIC_RPS)


class KillArgs(Strict):
    """A process the scenario itself started: its pid, or (in a reference solution) the fault that started it."""

    pid: int | None = Field(default=None, gt=0)
    fault: Ident | None = None

    @model_validator(mode="after")
    def _one_of(self) -> KillArgs:
        if (self.pid is None) == (self.fault is None):
            raise ValueError("give exactly one of 'pid' or 'fault'")
        return self


OP_ARGS: dict[str, type[Strict]] = {
    "status": NoArgs,
    "logs": LogsArgs,
    "metrics": MetricsArgs,
    "trace": TraceArgs,
    "drift": DriftArgs,
    "slo": NoArgs,
    "deploys": TrackArgs,
    "config_show": ServiceArgs,
    "reference": ReferenceArgs,
    "config_set": ConfigSetArgs,
    "restart": ServiceArgs,
    "scale": ScaleArgs,
    "drain": ReplicaArgs,
    "undrain": ReplicaArgs,
    "deploy": DeployArgs,
    "rollback": VersionArgs,
    "promote": VersionArgs,
    "retrain": RetrainArgs,
    "traffic": TrafficArgs,
    "kill": KillArgs,
    "distributions": DistributionsArgs,
    "decisions": NoArgs,
    "status_codes": StatusCodesArgs,
    "upstreams": NoArgs,
    "inspect": InspectArgs,
    "send": SendArgs,
    "generate": GenerateArgs,
    "eval": NoArgs,
}
OP_NAMES: tuple[str, ...] = tuple(OP_ARGS)
INVESTIGATE_OPS: frozenset[str] = frozenset(
    {"status", "logs", "metrics", "trace", "drift", "slo", "deploys", "config_show", "reference",
     "distributions", "decisions", "status_codes", "upstreams", "inspect", "send", "generate", "eval"}
)
ACT_OPS: frozenset[str] = frozenset(OP_NAMES) - INVESTIGATE_OPS

OpName = Literal[OP_NAMES]  # type: ignore[valid-type]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _has_required(model: type[Strict]) -> bool:
    return any(f.is_required() for f in model.model_fields.values())


def _pattern_args(name: str, model: type[Strict]) -> type[Strict]:
    """The same arguments, every one optional: a pattern matches any operation that agrees on the ones given."""
    fields: dict[str, Any] = {}
    for fname, info in model.model_fields.items():
        # pydantic moves constraints and validators off the annotation into `metadata`: put them back.
        typed = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[fname] = (typed | None, Field(default=None))
    return create_model(f"{_camel(name)}Pattern", __base__=Strict, **fields)


def _op_model(name: str, args: type[Strict], suffix: str, **extra: Any) -> type[Strict]:
    default = ... if _has_required(args) else Field(default_factory=args)
    return create_model(
        f"{_camel(name)}{suffix}", __base__=Strict, op=(Literal[name], ...), args=(args, default), **extra
    )


_PATTERN_ARGS = {name: _pattern_args(name, args) for name, args in OP_ARGS.items()}
_OPS = tuple(_op_model(name, args, "Op") for name, args in OP_ARGS.items())
_PATTERNS = tuple(_op_model(name, args, "Match") for name, args in _PATTERN_ARGS.items())
_COLLATERAL = tuple(
    _op_model(
        name,
        args,
        "Collateral",
        penalty=(int, Field(ge=1, le=100, description="points taken off the total")),
        reason=(str, Field(min_length=1, description="shown to the learner in the debrief")),
    )
    for name, args in _PATTERN_ARGS.items()
)

# The members are built at import time from OP_ARGS, hence Union over a tuple rather than `X | Y`.
Op = Annotated[Union[_OPS], Field(discriminator="op")]  # noqa: UP007
OpPattern = Annotated[Union[_PATTERNS], Field(discriminator="op")]  # noqa: UP007
Collateral = Annotated[Union[_COLLATERAL], Field(discriminator="op")]  # noqa: UP007


def op_args(op: Any) -> dict[str, Any]:
    """The arguments an operation (or pattern) sets, without the unset ones. `config_set`'s `value` is always kept,
    null included: `config_set ... value: null` puts a key back to its default (e.g. `speculative_draft: null`).
    (Not "every null the file gives": a rendered scenario's arguments all count as given, and a pattern would then
    demand its unset arguments be null.)"""
    keep = "value" if isinstance(op.args, ConfigSetArgs) else None
    return {k: v for k, v in op.args.model_dump().items() if v is not None or k == keep}
