"""Side effects: what the learner left changed that no accepted fix needs, and disruptive actions before the diagnosis.

Pure functions of (scenario, journal). The attempt journals the stack's state twice (`stack_snapshot`): when the
scenario clock starts (after its own set-up) and at the end, after every fault was reverted, so what still
differs is the learner's doing. A difference is *needed* when the reference solution makes that kind of change
(a `config_set` of that key, a drain/undrain for the replica set's subset key, a deploy/rollback/promote/retrain
for versions, a scale for the replica count), when an accepted end state probes it (`config_value` on that key,
`deployed_version`), or when the scenario allows it (`fix.allowed_changes`: "gateway.model_timeout_ms",
"versions", "replicas"). Every other difference is listed in the debrief and penalised.

Disruptive actions before the diagnosis: successful actions taken before the diagnosis was submitted that match no
step of the reference solution (restarts, rollbacks, scaling... by trial and error) each take a share of the time
credit: thrashing is not fast mitigation.
"""

from __future__ import annotations

from typing import Any

from lab import parts
from lab.grader.match import matches, op_text
from lab.scenario.ops import ACT_OPS, op_args

SIDE_EFFECT_PENALTY = 3
SIDE_EFFECTS_COUNTED = 3
DISRUPTIVE_TIME_SHARE = 0.2  # of the time credit, per disruptive action before the diagnosis
VERSION_OPS = frozenset({"deploy", "rollback", "promote", "retrain"})
SERVING = frozenset({"production", "canary"})
ROLLOUT_KEYS = frozenset({"routing"})  # the gateway's version split: deploy, rollback and promote set it
NOT_DISRUPTIVE = frozenset({"kill", "traffic"})  # killing a process the scenario started harms nothing of ours


def _subset_keys() -> dict[str, set[str]]:
    """Caller -> the config keys that list a subset of the replicas (the gateway's `drained`)."""
    out: dict[str, set[str]] = {}
    for dial in parts.replica_dials():
        out.setdefault(dial.caller, set()).update(dial.subset_keys)
    return out


def _replica_keys() -> dict[str, str]:
    """Caller -> the config key that lists the replicas (changed by `scale`)."""
    return {dial.caller: dial.config_key for dial in parts.replica_dials()}


def _settable(service: str, key: str) -> bool:
    """Whether a learner sets this key directly (config_set, drain, scale); others follow from rollouts."""
    part = parts.part_for(service)
    if part is None:
        return True
    return (key in part.settable or key in _subset_keys().get(service, set())
            or _replica_keys().get(service) == key)


def snapshots(events: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    start = end = None
    for e in events:
        if e["type"] == "stack_snapshot":
            if e["data"].get("when") == "start" and start is None:
                start = e["data"].get("state")
            elif e["data"].get("when") == "end":
                end = e["data"].get("state")
    return start, end


def differences(start: dict[str, Any], end: dict[str, Any]) -> list[dict[str, Any]]:
    """[{what: config|stages|replicas, target, key, before, after}] between two snapshots. The versions a replica
    has loaded are not compared (replicas load versions on demand); what serves is the registry's stages."""
    out: list[dict[str, Any]] = []
    if start.get("replicas") != end.get("replicas"):
        out.append({"what": "replicas", "target": None, "key": None, "before": start.get("replicas"),
                    "after": end.get("replicas")})
    configs_a, configs_b = start.get("configs") or {}, end.get("configs") or {}
    for service in sorted(set(configs_a) & set(configs_b)):
        a, b = configs_a[service] or {}, configs_b[service] or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append({"what": "config", "target": service, "key": key, "before": a.get(key),
                            "after": b.get(key)})
    stages_a, stages_b = start.get("stages") or {}, end.get("stages") or {}
    # versions registered during the attempt (a fault's variant, a retrain) count only if they serve
    changed = {v: s for v, s in stages_b.items() if stages_a.get(v) != s and (v in stages_a or s in SERVING)}
    gone = {v: s for v, s in stages_a.items() if v not in stages_b}
    if changed or gone:
        out.append({"what": "stages", "target": None, "key": None,
                    "before": {v: stages_a.get(v) for v in sorted({*changed, *gone})},
                    "after": {v: stages_b.get(v) for v in sorted({*changed, *gone})}})
    return out


def _accepted_probes(scenario: Any) -> list[Any]:
    out = []
    for state in scenario.fix.accepted:
        for ref in state.probes:
            out.append(scenario.probe(ref) if isinstance(ref, str) else ref)
    return out


def needed(scenario: Any, diff: dict[str, Any]) -> bool:
    allowed = set(scenario.fix.allowed_changes)
    solution = scenario.solution
    ops = {op.op for op in solution}
    what, target, key = diff["what"], diff["target"], diff["key"]
    if what == "config" and (key in ROLLOUT_KEYS or not _settable(target, key)):
        what = "stages"  # the version split, or a key no one sets by hand: rollouts change them
    if what == "stages":
        return bool(ops & VERSION_OPS) or "versions" in allowed or any(
            p.kind == "deployed_version" for p in _accepted_probes(scenario))
    if what == "replicas" or (what == "config" and _replica_keys().get(target) == key):
        return "scale" in ops or "replicas" in allowed
    if what != "config":
        return False
    if f"{target}.{key}" in allowed:
        return True
    if key in _subset_keys().get(target, set()) and ops & {"drain", "undrain"}:
        return True
    for op in solution:
        if op.op == "config_set":
            args = op_args(op)
            if args.get("service") == target and str(args.get("key", "")).split(".")[0] == key:
                return True
    return any(p.kind == "config_value" and p.target == target and str(p.key).split(".")[0] == key
               for p in _accepted_probes(scenario))


def _text(diff: dict[str, Any]) -> str:
    if diff["what"] == "config":
        return f"{diff['target']} {diff['key']}: {diff['before']!r} -> {diff['after']!r}"
    return f"{diff['what']}: {diff['before']} -> {diff['after']}"


def side_effects(scenario: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collateral entries for what was left changed that no accepted fix needs (at most SIDE_EFFECTS_COUNTED)."""
    start, end = snapshots(events)
    if start is None or end is None:
        return []
    out = []
    for diff in differences(start, end):
        if needed(scenario, diff):
            continue
        out.append({"op": "left changed", "pattern": _text(diff), "penalty": SIDE_EFFECT_PENALTY,
                    "reason": "Left different from how the incident started, and no accepted fix needs it: "
                              "undo changes that did not help before you hand the system back."})
    for extra in out[SIDE_EFFECTS_COUNTED:]:
        extra["penalty"] = 0
    return out


def disruptive_before_diagnosis(scenario: Any, events: list[dict[str, Any]],
                                labels: dict[str, str]) -> list[str]:
    """Successful actions before the diagnosis (all of them, when none was submitted) that match no solution step."""
    submitted = next((e for e in events if e["type"] == "diagnosis_submitted"), None)
    until = submitted["at"] if submitted is not None else None
    out = []
    for e in events:
        if (e["type"] != "console_op" or not e["data"].get("ok") or e["data"]["op"] not in ACT_OPS
                or e["data"]["op"] in NOT_DISRUPTIVE):
            continue
        if until is not None and e["at"] > until:
            break
        args = e["data"].get("args") or {}
        if not any(matches(step, e["data"]["op"], args, labels) for step in scenario.solution):
            out.append(op_text(e["data"]["op"], args))
    return out
