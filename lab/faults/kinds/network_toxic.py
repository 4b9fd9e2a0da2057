"""network.toxic: a Toxiproxy toxic on one hop (latency, bandwidth, slow_close, timeout, reset_peer, slicer,
limit_data), named `fl_<fault id>` so two faults never clash; revert deletes it.

Each toxic type is one params model here, registered with `@toxic`; the params union, the description and the
error paths (lab/faults/parse.py drops the type tag pydantic inserts) all read that one registry. Hops are named
after the service they lead to: `gateway` (clients -> gateway), `feature-store`, `model-N` (gateway -> them).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.partnames import hop_label
from lab.faults.registry import Catalog
from lab.scenario import vocab
from lab.scenario.faultspec import FaultModel, Millis
from lab.scenario.fields import Fraction, HopName, Strict

TOXICS: dict[str, type[_Toxic]] = {}


def toxic(cls: type[_Toxic]) -> type[_Toxic]:
    """Class decorator: a toxic type, under its `type` literal."""
    name = cls.model_fields["type"].annotation.__args__[0]
    if name in TOXICS:
        raise RuntimeError(f"two toxics named {name}")
    TOXICS[name] = cls
    return cls


class _Toxic(Strict):
    stream: Literal[vocab.TOXIC_STREAMS] = "downstream"  # type: ignore[valid-type]
    toxicity: Fraction = 1.0
    # What each attribute means, for the human description.
    units: ClassVar[dict[str, str]] = {}

    def attributes(self) -> dict[str, Any]:
        """The toxic's own attributes, as the Toxiproxy API takes them."""
        return self.model_dump(exclude={"type", "stream", "toxicity"})

    def text(self) -> str:
        attrs = self.attributes()
        kind = self.type.replace("_", " ")
        return kind + " " + ", ".join(f"{v} {self.units.get(k, '')}".strip() for k, v in attrs.items())


@toxic
class LatencyToxic(_Toxic):
    type: Literal["latency"]
    latency: Millis
    jitter: Millis = 0

    def text(self) -> str:
        return f"latency {self.latency}" + (f"±{self.jitter}" if self.jitter else "") + " ms"


@toxic
class BandwidthToxic(_Toxic):
    type: Literal["bandwidth"]
    rate: int = Field(ge=0, description="KB/s")
    units: ClassVar[dict[str, str]] = {"rate": "KB/s"}


@toxic
class SlowCloseToxic(_Toxic):
    type: Literal["slow_close"]
    delay: Millis
    units: ClassVar[dict[str, str]] = {"delay": "ms"}


@toxic
class TimeoutToxic(_Toxic):
    type: Literal["timeout"]
    timeout: Millis = Field(description="ms; 0 = never close")
    units: ClassVar[dict[str, str]] = {"timeout": "ms"}

    def text(self) -> str:
        return "timeout (data stops, connection held open)" if self.timeout == 0 else super().text()


@toxic
class ResetPeerToxic(_Toxic):
    type: Literal["reset_peer"]
    timeout: Millis = 0
    units: ClassVar[dict[str, str]] = {"timeout": "ms"}


@toxic
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

    def text(self) -> str:
        return f"slicer {self.average_size}±{self.size_variation} bytes every {self.delay} µs"


@toxic
class LimitDataToxic(_Toxic):
    type: Literal["limit_data"]
    bytes: int = Field(ge=0)
    units: ClassVar[dict[str, str]] = {"bytes": "bytes"}


Toxic = Annotated[Union[tuple(TOXICS.values())], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007


class NetworkToxic(FaultModel):
    kind: Literal["network"]
    action: Literal["toxic"]
    target: HopName
    params: Toxic


def toxic_name(fault_id: str) -> str:
    return f"fl_{fault_id}"


def toxic_text(params: _Toxic) -> str:
    text = params.text()
    if params.toxicity < 1:
        text += f" on {params.toxicity:.0%} of connections"
    return text


@register
class NetworkToxicInjector(Injector):
    model = NetworkToxic
    position = 10
    params_tags = tuple(TOXICS)
    catalog = Catalog(
        label="Toxic on a hop",
        help="Add a Toxiproxy toxic (latency, bandwidth, timeout, reset_peer, slicer, ...) on one hop.",
        example={"type": "latency", "latency": 400, "jitter": 50},
    )

    def describe(self, fault: Any) -> str:
        return f"{toxic_text(fault.params)} on the hop {hop_label(fault.target)} ({fault.params.stream})"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_hop(fault.target)
        p = fault.params
        name = toxic_name(fault.id)
        ctx.add_toxic(fault.target, name, p.type, p.stream, p.toxicity, p.attributes())
        return self.record(fault, {"proxy": fault.target, "toxic": name})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        if not ctx.remove_toxic(c["proxy"], c["toxic"]):
            return [f"toxic {c['toxic']} was already gone from {c['proxy']}"]
        return []
