"""process.crash_loop: the service is restarted with a start-up `--config` it refuses (a key from a newer
release); the real service exits 2 at once, every time, and the supervisor's backoff turns that into `backoff`,
then `crashloop`. Revert restores the original argv and restarts it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext, argv_with_config
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ServiceName, Strict

# A key no service knows: the config of a newer release rolled out to an older binary.
CRASH_CONFIG = {"config_schema": 2}
# What the real services exit with when they refuse their start-up config (argparse convention).
BAD_CONFIG_EXIT = 2


class CrashLoopParams(Strict):
    exit_code: int = Field(default=1, ge=1, le=255)


class ProcessCrashLoop(FaultModel):
    kind: Literal["process"]
    action: Literal["crash_loop"]
    target: ServiceName
    params: CrashLoopParams = Field(default_factory=CrashLoopParams)


@register
class ProcessCrashLoopInjector(Injector):
    model = ProcessCrashLoop
    position = 22
    catalog = Catalog(
        label="Crash loop",
        help="Restart a service with a start-up config it refuses: it exits at once, every time (crash loop).",
    )

    def describe(self, fault: Any) -> str:
        return (f"{fault.target} restarted with a start-up config it refuses ({CRASH_CONFIG}): it exits "
                f"{BAD_CONFIG_EXIT} at every start and the supervisor backs off into a crash loop")

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        before = ctx.spec_argv(fault.target)
        bad = argv_with_config(before, CRASH_CONFIG)
        ctx.set_argv(fault.target, bad)
        notes = []
        if fault.params.exit_code != BAD_CONFIG_EXIT:
            notes.append(f"exit_code {fault.params.exit_code} asked; the real service exits {BAD_CONFIG_EXIT} when it "
                         "refuses its start-up config")
        try:
            ctx.restart(fault.target)
        except Exception:
            ctx.set_argv(fault.target, before)
            raise
        return self.record(fault, {"service": fault.target, "argv_before": before, "argv_bad": bad}, notes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        name = c["service"]
        if name not in ctx.supervisor.names():
            return [f"{name} no longer exists"]
        current = ctx.spec_argv(name)
        if current == c["argv_before"]:
            return ["already restored: " + name] if not ctx.ensure_running(name) else [f"started {name}"]
        ctx.set_argv(name, c["argv_before"])
        ctx.restart(name)
        return []
