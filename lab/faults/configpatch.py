"""Change a service's config keys (live and in its start-up argv, so a restart keeps them), and put back exactly
the previous values on revert: the one implementation of that pattern, used by config.push, dependency.slow,
cpu.oversubscribe, memory.leak and memory.batch_blowup.

`push_config` returns the part of an `Applied.changes` record that `restore_config` needs: `service`,
`config_before` (the previous values of the pushed keys), `config` (what was pushed) and `argv_before`.
`ConfigPatchInjector` is the injector built on them: a subclass says which keys (`wanted`), the rest is shared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lab.faults.base import Applied, FaultError, Injector

if TYPE_CHECKING:
    from lab.faults.context import FaultContext

READY_WAIT_S = 60.0


def push_config(ctx: FaultContext, name: str, values: dict[str, Any],
                current: dict[str, Any] | None = None) -> dict[str, Any]:
    """PATCH `values` into `name`'s live config, then into its start-up config; answer what undoes it.
    `current`: the live config if the caller has just read it."""
    current = ctx.get_config(name) if current is None else current
    previous = {k: current[k] for k in values}
    ctx.patch_config(name, values)  # a value the service refuses is its own 422, passed on
    argv_before = ctx.persist_config(name, values)
    return {"service": name, "config_before": previous, "config": dict(values), "argv_before": argv_before}


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


class ConfigPatchInjector(Injector):
    """A fault that is a config push on its target: `wanted(fault, current)` names the keys and values;
    `apply` pushes them (live and start-up), `revert` restores the previous values of exactly those keys."""

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        current = ctx.get_config(name)
        return self.record(fault, push_config(ctx, name, self.wanted(fault, current), current))

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_config(ctx, c["service"], c["config_before"], c["argv_before"])
