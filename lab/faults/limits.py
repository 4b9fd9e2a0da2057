"""Memory limits for the memory faults: the limit their params ask for, lowering it, and putting it back.

The supervisor enforces limits like the kernel's OOM killer (RSS over the limit: SIGKILL, `last_exit` 137
OOMKilled), so every memory fault ends in a real kill once real memory use crosses the line. Revert restores the
previous limit and starts the service if the limit killed it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lab.faults.base import FaultError, MiB

if TYPE_CHECKING:
    from lab.faults.context import FaultContext


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


def limit_text(params: Any) -> str:
    if getattr(params, "headroom_mb", None) is not None:
        return f"a memory limit {params.headroom_mb} MiB above its current use"
    return f"a {params.limit_mb} MiB memory limit"


def lower_limit(ctx: FaultContext, name: str, limit_bytes: int | None) -> int | None:
    """Set the limit; return the one before."""
    before = ctx.status(name)["memory_limit_bytes"]
    ctx.set_memory_limit(name, limit_bytes)
    return before


def restore_limit(ctx: FaultContext, name: str, before: int | None) -> list[str]:
    if name not in ctx.supervisor.names():
        return [f"{name} no longer exists"]
    ctx.set_memory_limit(name, before)
    return [f"{name} was down: started it"] if ctx.ensure_running(name) else []
