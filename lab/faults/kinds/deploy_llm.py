"""deploy.llm: an LLM version, or one part of it (weights, tokenizer, generation config), rolled out to every LLM
replica or to one, as a release pipeline would: each replica's start-up flags (`--version`, `--tokenizer`,
`--generation`) are set and the replica is restarted, ready before the next goes (an LLM replica cannot swap a
version live; lab/console/llm.py does the same for the learner's `deploy`), or with `at_once` all of them together
(a pipeline without a rolling update). Revert restarts on the flags it had, together, each replica that still runs
what the fault put there (one the learner redeployed is left as the learner left it).
The registry's stages are not touched: a part rolled out alone is not a release, and `deploys` shows what each
replica really serves.
"""

from __future__ import annotations

from typing import Any, Literal

from lab.console.llm import argv_with_parts, served_parts
from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.registry import Catalog
from lab.parts import part_for, replica_part
from lab.scenario import vocab
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ReplicaName, Strict

READY_WAIT_S = 120.0
PARTS = ("all", "weights", "tokenizer", "generation_config")


class LLMDeployParams(Strict):
    version: Literal[vocab.LLM_VERSIONS]  # type: ignore[valid-type]
    part: Literal[PARTS] = "all"  # type: ignore[valid-type]
    # every target restarted together (a pipeline without a rolling update: a few seconds with no replica up)
    # rather than one at a time; on a busy host it takes the time of one restart, not of one per replica
    at_once: bool = False


class DeployLLM(FaultModel):
    kind: Literal["deploy"]
    action: Literal["llm"]
    target: ReplicaName | None = None  # one LLM replica; none: every one
    params: LLMDeployParams


def _llm_replicas(ctx: FaultContext) -> list[str]:
    return list(ctx.topology.instances(replica_part("llm")))


@register
class DeployLLMInjector(Injector):
    model = DeployLLM
    position = 62
    catalog = Catalog(
        label="LLM deploy",
        help="Roll an LLM version, or one part of it (weights, tokenizer, generation config), out to every LLM "
             "replica or one (rolling restarts); revert restarts them on what they served.",
        example={"version": "v2", "part": "weights"},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        what = f"LLM {p.version}" if p.part == "all" else f"the {p.part} of LLM {p.version}"
        return f"{what} deployed to {fault.target or 'every LLM replica'}" + (" at once" if p.at_once else "")

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        p = fault.params
        replicas = _llm_replicas(ctx)
        if not replicas:
            raise FaultError("deploy.llm needs the LLM track (`faultline up --track llm`); this stack runs none", 409)
        if fault.target is not None and fault.target not in replicas:
            raise FaultError(f"no LLM replica {fault.target!r} in this stack; LLM replicas are: "
                             f"{', '.join(replicas)}", 422)
        check = ctx.registry("GET", f"/v1/llm/models/{p.version}/verify")
        if not check.get("ok", False):
            raise FaultError(f"LLM {p.version} fails its sha256 check: {check.get('detail')}", 409)
        targets = [fault.target] if fault.target is not None else replicas
        c: dict[str, Any] = {"version": p.version, "part": p.part, "argv_before": {}, "argv": {}}
        waves = [targets] if p.at_once else [[r] for r in targets]
        try:
            for wave in waves:
                for r in wave:
                    argv = ctx.spec_argv(r)
                    wanted = (dict.fromkeys(served_parts(argv), p.version) if p.part == "all"
                              else {**served_parts(argv), p.part: p.version})
                    c["argv_before"][r] = argv
                    c["argv"][r] = argv_with_parts(argv, wanted)
                    ctx.set_argv(r, c["argv"][r])
                    ctx.restart(r)
                missing = ctx.wait_ready(wave, READY_WAIT_S)
                if missing:
                    raise FaultError(f"{', '.join(missing)} did not become ready on {self.describe(fault)} within "
                                     f"{READY_WAIT_S:.0f}s", 409)
        except FaultError as exc:
            self._undo(ctx, c)
            raise FaultError(f"the rollout ({self.describe(fault)}) failed and was undone: {exc}", exc.status) from exc
        return self.record(fault, c)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        return self._undo(ctx, applied.changes)

    def _undo(self, ctx: FaultContext, c: dict[str, Any]) -> list[str]:
        notes: list[str] = []
        restarted: list[str] = []
        for r, before in c["argv_before"].items():
            if r not in ctx.supervisor.names() or part_for(r) is None:
                notes.append(f"{r} no longer exists")
                continue
            now = ctx.spec_argv(r)
            if served_parts(now) != served_parts(c["argv"].get(r, now)):
                notes.append(f"{r} was redeployed since ({served_parts(now)}): left as it is")
                continue
            if served_parts(now) == served_parts(before):
                continue
            ctx.set_argv(r, before)
            ctx.restart(r)
            restarted.append(r)
        # together: undoing is clean-up, and whoever comes next (a reset, the next attempt) finds them answering
        missing = ctx.wait_ready(restarted, READY_WAIT_S) if restarted else []
        notes += [f"{r} restarted on its previous version but is not ready yet" for r in missing]
        return notes
