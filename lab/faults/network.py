"""Network faults on a hop (a Toxiproxy proxy): any toxic, or the hop down (`enabled: false`).

Hops are named after the service they lead to: `gateway` (clients -> gateway), `feature-store` (gateway ->
feature store), `model-N` (gateway -> replica N). Toxics are named `fl_<fault id>` so two faults never clash.
"""

from __future__ import annotations

from typing import Any

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.scenario import faults as models

# What each toxic's attributes mean, for the human description.
_UNITS = {"latency": "ms", "jitter": "ms", "rate": "KB/s", "delay": "ms", "timeout": "ms", "bytes": "bytes",
          "average_size": "bytes", "size_variation": "bytes"}


def hop_label(hop: str) -> str:
    return "clients→gateway" if hop == "gateway" else f"gateway→{hop}"


def toxic_name(fault_id: str) -> str:
    return f"fl_{fault_id}"


def _toxic_text(params: Any) -> str:
    p = params
    if p.type == "latency":
        text = f"latency {p.latency}" + (f"±{p.jitter}" if p.jitter else "") + " ms"
    elif p.type == "slicer":
        text = f"slicer {p.average_size}±{p.size_variation} bytes every {p.delay} µs"
    elif p.type == "timeout" and p.timeout == 0:
        text = "timeout (data stops, connection held open)"
    else:
        attrs = _attributes(p)
        text = p.type.replace("_", " ") + " " + ", ".join(f"{v} {_UNITS.get(k, '')}".strip() for k, v in attrs.items())
    if p.toxicity < 1:
        text += f" on {p.toxicity:.0%} of connections"
    return text


def _attributes(params: Any) -> dict[str, Any]:
    return params.model_dump(exclude={"type", "stream", "toxicity"})


@register
class NetworkToxic(Injector):
    model = models.NetworkToxic
    summary = "Add a Toxiproxy toxic (latency, bandwidth, timeout, reset_peer, slicer, ...) on one hop."

    def describe(self, fault: Any) -> str:
        return f"{_toxic_text(fault.params)} on the hop {hop_label(fault.target)} ({fault.params.stream})"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_hop(fault.target)
        p = fault.params
        name = toxic_name(fault.id)
        ctx.add_toxic(fault.target, name, p.type, p.stream, p.toxicity, _attributes(p))
        return self.record(fault, {"proxy": fault.target, "toxic": name})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        if not ctx.remove_toxic(c["proxy"], c["toxic"]):
            return [f"toxic {c['toxic']} was already gone from {c['proxy']}"]
        return []


@register
class NetworkDown(Injector):
    model = models.NetworkDown
    summary = "Take a hop down: the proxy stops listening and drops its connections (enabled=false)."

    def describe(self, fault: Any) -> str:
        return f"the hop {hop_label(fault.target)} is down (connections refused)"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_hop(fault.target)
        before = ctx.proxy(fault.target)
        ctx.set_proxy_enabled(fault.target, False)
        return self.record(fault, {"proxy": fault.target, "enabled_before": bool(before.get("enabled", True))})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        ctx.set_proxy_enabled(c["proxy"], c["enabled_before"])
        return []
