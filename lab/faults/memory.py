"""Memory faults: a lower memory limit, a leak (unbounded prediction cache), a batch-size blow-up.

The supervisor enforces limits like the kernel's OOM killer (RSS over the limit: SIGKILL, `last_exit` 137
OOMKilled), so every fault here ends in a real kill once real memory use crosses the line:
- limit: the service's limit is lowered, live.
- leak: the replica's cache becomes unbounded (`cache_size: -1`, live and in its start-up config, so a restart
  does not cure it); every distinct row scored stays in memory (about 0.65 KB per row). With `limit_mb` (absolute)
  or `headroom_mb` (above the replica's RSS at injection: portable across machines), the limit is lowered too
  and the leak ends in an OOM kill under traffic.
- batch_blowup: the replica's `max_batch_size` (and `max_queue`, so a full batch can queue at all) raised, plus a
  limit: rows waiting for and inside a batch are held in memory (about 0.9 KB per row in flight), so big bursts
  push RSS over the limit.
Revert restores config, start-up config and limit, and starts the replica if it is down.
"""

from __future__ import annotations

from typing import Any

from lab.faults.base import Applied, FaultError, Injector, MiB, register
from lab.faults.context import FaultContext
from lab.scenario import faults as models

READY_WAIT_S = 60.0


def _mb(n: int | None) -> str:
    return "no limit" if n is None else f"{n / MiB:.0f} MiB"


def wanted_limit(ctx: FaultContext, name: str, params: Any) -> int | None:
    """The limit the params ask for: `limit_mb` as given, or `headroom_mb` above the service's RSS right now."""
    if getattr(params, "limit_mb", None) is not None:
        return params.limit_mb * MiB
    if getattr(params, "headroom_mb", None) is not None:
        rss = ctx.status(name)["rss_bytes"]
        if not rss:
            raise FaultError(f"{name} is not running: a limit relative to its memory needs it up", 409)
        return rss + params.headroom_mb * MiB
    return None


def _limit_text(params: Any) -> str:
    if getattr(params, "headroom_mb", None) is not None:
        return f"a memory limit {params.headroom_mb} MiB above its current use"
    return f"a {params.limit_mb} MiB memory limit"


def lower_limit(ctx: FaultContext, name: str, limit_bytes: int) -> int | None:
    """Set the limit; return the one before."""
    before = ctx.status(name)["memory_limit_bytes"]
    ctx.set_memory_limit(name, limit_bytes)
    return before


def restore_limit(ctx: FaultContext, name: str, before: int | None) -> list[str]:
    if name not in ctx.supervisor.names():
        return [f"{name} no longer exists"]
    ctx.set_memory_limit(name, before)
    return [f"{name} was down: started it"] if ctx.ensure_running(name) else []


def restore_config(ctx: FaultContext, name: str, values: dict[str, Any], argv_before: list[str]) -> list[str]:
    """Start-up config back first (any start from now on is clean), then the live config. A process that is
    down starts with the restored argv; one still starting (e.g. restarted after an OOM kill, with the faulty
    argv) is waited for, then patched — or restarted if it never answers."""
    if name not in ctx.supervisor.names():
        return [f"{name} no longer exists"]
    ctx.set_argv(name, argv_before)
    last: Exception | None = None
    for _ in range(2):
        try:
            ctx.patch_config(name, values)
            return []
        except FaultError as exc:
            last = exc
        if ctx.status(name)["pid"] is None:
            return []
        ctx.wait_ready([name], READY_WAIT_S)
    ctx.restart(name)
    return [f"{name} did not take its config back live ({last}): restarted it"]


@register
class MemoryLimit(Injector):
    model = models.MemoryLimit
    summary = "Lower a service's memory limit, live; over it, the supervisor kills it like the OOM killer."

    def describe(self, fault: Any) -> str:
        return f"{fault.target}'s memory limit lowered to {fault.params.limit_mb} MiB"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        before = lower_limit(ctx, fault.target, fault.params.limit_mb * MiB)
        return self.record(fault, {"service": fault.target, "limit_before": before,
                                   "limit": fault.params.limit_mb * MiB})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_limit(ctx, c["service"], c["limit_before"])


@register
class MemoryLeak(Injector):
    model = models.MemoryLeak
    summary = "Make a replica's prediction cache unbounded (it keeps every row); with a limit, it ends OOM-killed."

    def describe(self, fault: Any) -> str:
        text = f"{fault.target}'s prediction cache is unbounded (cache_size -1): memory grows with every new row"
        if fault.params.limit_mb is not None or fault.params.headroom_mb is not None:
            text += f", until {_limit_text(fault.params)} kills it"
        return text

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        name = fault.target
        previous = {"cache_size": ctx.get_config(name)["cache_size"]}
        limit = wanted_limit(ctx, name, fault.params)  # measured before the leak starts
        ctx.patch_config(name, {"cache_size": -1})
        argv_before = ctx.persist_config(name, {"cache_size": -1})
        changes: dict[str, Any] = {"service": name, "config_before": previous, "argv_before": argv_before}
        if limit is not None:
            changes["limit_before"] = lower_limit(ctx, name, limit)
            changes["limit"] = limit
        return self.record(fault, changes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        notes = restore_config(ctx, c["service"], c["config_before"], c["argv_before"])
        if "limit_before" in c:
            notes += restore_limit(ctx, c["service"], c["limit_before"])
        return notes


@register
class MemoryBatchBlowup(Injector):
    model = models.MemoryBatchBlowup
    summary = "Raise a replica's max_batch_size (and max_queue) and lower its memory limit: bursts get it OOM-killed."

    def describe(self, fault: Any) -> str:
        p = fault.params
        return f"{fault.target}'s max_batch_size raised to {p.max_batch_size} with {_limit_text(p)}"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        name, p = fault.target, fault.params
        config = ctx.get_config(name)
        limit = wanted_limit(ctx, name, p)
        previous = {"max_batch_size": config["max_batch_size"], "max_queue": config["max_queue"]}
        # A queue smaller than a batch would refuse the rows before they could ever form one.
        wanted = {"max_batch_size": p.max_batch_size, "max_queue": max(config["max_queue"], p.max_batch_size)}
        ctx.patch_config(name, wanted)  # the replica refuses values over its own caps with a 422: passed on
        argv_before = ctx.persist_config(name, wanted)
        limit_before = lower_limit(ctx, name, limit)
        return self.record(fault, {"service": name, "config_before": previous, "config": wanted,
                                   "argv_before": argv_before, "limit_before": limit_before, "limit": limit})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        notes = restore_config(ctx, c["service"], c["config_before"], c["argv_before"])
        return notes + restore_limit(ctx, c["service"], c["limit_before"])
