"""Cross-field checks: the rules that relate one part of a scenario to another.

Each problem is returned with the location of the value at fault, so the loader can name the exact line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lab.scenario import taxonomy, vocab
from lab.scenario.faults import FAULT_KINDS, PROCESS_STARTING
from lab.scenario.ops import ACT_OPS, INVESTIGATE_OPS, op_args
from lab.scenario.variables import Loc

if TYPE_CHECKING:
    from lab.scenario.models import Scenario

Problem = tuple[Loc, str]


def cross_check(s: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    for check in (
        _fault_ids,
        _fault_triggers,
        _track,
        _replicas_exist,
        _probe_ids,
        _fix_probes,
        _questions,
        _evidence_and_collateral,
        _solution,
        _versions_made,
        _hints,
        _par_times,
    ):
        problems.extend(check(s))
    return problems


def _duplicates(items: list[tuple[Loc, str]], what: str) -> Iterator[Problem]:
    first: dict[str, Loc] = {}
    for loc, name in items:
        if name in first:
            yield loc, f"duplicate {what} '{name}' (first at {_path(first[name])})"
        else:
            first[name] = loc


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fault_ids(s: Scenario) -> Iterator[Problem]:
    yield from _duplicates([(("faults", i, "id"), f.id) for i, f in enumerate(s.faults)], "fault id")


def _fault_triggers(s: Scenario) -> Iterator[Problem]:
    ids = [f.id for f in s.faults]
    after = {f.id: f.when.after for f in s.faults if f.when.after is not None}
    for i, f in enumerate(s.faults):
        ref = f.when.after
        if ref is None:
            continue
        loc = ("faults", i, "when", "after")
        if ref == f.id:
            yield loc, "a fault cannot wait for itself"
        elif ref not in ids:
            yield loc, f"unknown fault '{ref}'; faults are: {', '.join(ids)}"
        else:
            chain, cur = [f.id], ref
            while cur in after and cur not in chain:
                chain.append(cur)
                cur = after[cur]
            if cur == f.id:
                yield loc, f"faults wait for each other in a cycle: {' -> '.join([*chain, cur])}"


def _names(s: Scenario) -> Iterator[tuple[Loc, str]]:
    """Every service, hop or replica name the scenario uses, with its location."""
    for name in s.stack.services:
        yield ("stack", "services", name), name
    for i, f in enumerate(s.faults):
        target = getattr(f, "target", None)
        if isinstance(target, str):
            yield ("faults", i, "target"), target
        if f.when.target is not None:
            yield ("faults", i, "when", "target"), f.when.target
    for i, p in enumerate(s.steady_state):
        yield from _probe_names(p, ("steady_state", i))
    for i, state in enumerate(s.fix.accepted):
        for j, p in enumerate(state.probes):
            if not isinstance(p, str):
                yield from _probe_names(p, ("fix", "accepted", i, "probes", j))
    for j, name in enumerate(s.diagnosis.answer.component):
        if name != taxonomy.HOST:
            yield ("diagnosis", "answer", "component", j), name
    for i, op in enumerate(s.diagnosis.evidence):
        yield from _op_names(op, ("diagnosis", "evidence", i))
    for i, op in enumerate(s.fix.collateral):
        yield from _op_names(op, ("fix", "collateral", i))


def _probe_names(p: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    target = getattr(p, "target", None)
    if isinstance(target, str) and (p.kind != "deployed_version" or vocab.replica_number(target) is not None):
        yield (*loc, "target"), target


def _op_names(op: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    for key in ("service", "replica"):
        value = op_args(op).get(key)
        if isinstance(value, str):
            yield (*loc, "args", key), value


def _missing_replica(name: str, replicas: int, track: str = vocab.DEFAULT_TRACK) -> str | None:
    rep = vocab.replica_of(name)
    if rep is None or rep[0] != track or rep[1] <= replicas:
        return None  # another track's replica is reported by the track check
    stem = vocab.track_replica(track)
    return f"'{name}' does not exist: the stack has {replicas} replica(s) ({stem}-1 .. {stem}-{replicas})"


def _replicas_exist(s: Scenario) -> Iterator[Problem]:
    replicas, track = s.stack.replicas, s.stack.track
    for loc, name in _names(s):
        msg = _missing_replica(name, replicas, track)
        if msg:
            yield loc, msg
    # Operations run in order: after a `scale`, the new replicas exist.
    for field in ("solution", "wrong_fix"):
        current = replicas
        for i, op in enumerate(getattr(s, field) or []):
            if op.op == "scale":
                current = op.args.replicas
            for loc, name in _op_names(op, (field, i)):
                msg = _missing_replica(name, current, track)
                if msg:
                    yield loc, msg


# Probe kinds, console operations and fault kinds that measure or touch one track's parts only (the LLM probe kinds
# are lab.scenario.probes.LLM_PROBE_KINDS; the rest work on either track: configs, states, restarts, uptime).
FRAUD_ONLY_PROBES = frozenset({"latency_p99_ms", "error_rate", "accuracy", "recall", "precision", "drift_psi",
                               "deployed_version", "decline_rate", "score_quantile",
                               "status_share"})
FRAUD_ONLY_OPS = frozenset({"trace", "drift", "reference", "retrain", "distributions", "decisions", "inspect",
                            "send", "upstreams", "traffic"})
LLM_ONLY_OPS = frozenset({"generate", "eval"})
FRAUD_ONLY_FAULTS = frozenset({"data", "deploy.variant", "deploy.corrupt", "dependency", "memory.batch_blowup",
                               "memory.leak"})


def _track_names(track: str, replicas: int) -> str:
    stem = vocab.track_replica(track)
    return f"{', '.join(vocab.track_services(track))}, {stem}-1 .. {stem}-{replicas}"


def _track(s: Scenario) -> Iterator[Problem]:
    """One track per scenario: the stack's traffic, versions, names, probes, operations and faults are of it."""
    from lab.scenario.probes import LLM_PROBE_KINDS

    track, st = s.stack.track, s.stack
    top = vocab.track_max_replicas(track)
    if st.replicas > top:
        yield ("stack", "replicas"), f"the {track} track runs at most {top} replicas, got {st.replicas}"
    profiles = vocab.TRACK_PROFILES[track]
    if st.traffic.profile not in profiles:
        yield ("stack", "traffic", "profile"), (f"'{st.traffic.profile}' is not a {track}-track traffic profile; "
                                                f"expected one of: {', '.join(profiles)}")
    if track == vocab.DEFAULT_TRACK:
        for key in ("concurrency", "retry_policy", "retries"):
            if getattr(st.traffic, key) is not None:
                yield ("stack", "traffic", key), f"{key} is a setting of the LLM track's clients (stack.track: llm)"
    else:
        if st.versions.production not in vocab.LLM_BASE_VERSIONS:
            yield ("stack", "versions", "production"), (
                f"'{st.versions.production}' is not an LLM version; expected one of: "
                f"{', '.join(vocab.LLM_BASE_VERSIONS)}")
        if st.versions.canary is not None:
            yield ("stack", "versions", "canary"), ("the LLM track has no canary split (its gateway routes pick the "
                                                    "least busy replica, not a version): production only")
        yield from _llm_service_config(s)
    if s.diagnosis.track is not None and s.diagnosis.track != track:
        yield ("diagnosis", "track"), (f"the diagnosis is on the {s.diagnosis.track} track but the stack runs the "
                                       f"{track} track (stack.track); leave diagnosis.track out")
    for loc, name in [*_names(s), *_action_names(s)]:
        on = vocab.track_of_name(name)
        if on and track not in on:
            yield loc, (f"'{name}' is not part of the {track} track's stack; its services are: "
                        f"{_track_names(track, st.replicas)}")
    for loc, p in _all_probes(s):
        if track == vocab.DEFAULT_TRACK and p.kind in LLM_PROBE_KINDS:
            yield (*loc, "kind"), f"'{p.kind}' measures the LLM track; this scenario runs the fraud track"
        elif track != vocab.DEFAULT_TRACK and p.kind in FRAUD_ONLY_PROBES:
            yield (*loc, "kind"), (f"'{p.kind}' measures the fraud track; on the {track} track use one of: "
                                   f"{', '.join(LLM_PROBE_KINDS)}, config_value, service_state, restarts, uptime_s")
    wrong_ops = LLM_ONLY_OPS if track == vocab.DEFAULT_TRACK else FRAUD_ONLY_OPS
    for field in ("solution", "wrong_fix", "diagnosis.evidence", "fix.collateral"):
        obj: Any = s
        for attr in field.split("."):
            obj = getattr(obj, attr)
        for i, op in enumerate(obj or []):
            if op.op in wrong_ops:
                other = "LLM" if track == vocab.DEFAULT_TRACK else "fraud"
                yield (*field.split("."), i, "op"), f"'{op.op}' is an operation of the {other} track"
            named = op_args(op).get("track")
            if named is not None and named != track:
                yield (*field.split("."), i, "args", "track"), (
                    f"'{named}': this scenario runs the {track} track (stack.track); its operations act on it")
    versions = vocab.FRAUD_VERSION_REFS if track == vocab.DEFAULT_TRACK else vocab.LLM_VERSIONS
    for loc, version in _version_refs(s):
        if version not in versions:
            yield loc, (f"'{version}' is not a version of the {track} track; expected one of: "
                        f"{', '.join(versions)}")
    for i, f in enumerate(s.faults):
        if f"{f.kind}.{f.action}" == "data.profile":
            # The load generator drives either track: the profile must be one of the scenario's track.
            if f.params.profile not in profiles:
                yield ("faults", i, "params", "profile"), (
                    f"'{f.params.profile}' is not a {track}-track traffic profile; expected one of: "
                    f"{', '.join(profiles)}")
            elif track != vocab.DEFAULT_TRACK and f.params.strength is not None:
                yield ("faults", i, "params", "strength"), "strength weakens the fraud track's profiles only"
        elif track != vocab.DEFAULT_TRACK and (f.kind in FRAUD_ONLY_FAULTS
                                               or f"{f.kind}.{f.action}" in FRAUD_ONLY_FAULTS):
            yield ("faults", i, "kind"), f"'{f.kind}.{f.action}' acts on the fraud track's parts only"


def _action_names(s: Scenario) -> Iterator[tuple[Loc, str]]:
    for field in ("solution", "wrong_fix"):
        for i, op in enumerate(getattr(s, field) or []):
            yield from _op_names(op, (field, i))


def _all_probes(s: Scenario) -> Iterator[tuple[Loc, Any]]:
    for i, p in enumerate(s.steady_state):
        yield ("steady_state", i), p
    for i, state in enumerate(s.fix.accepted):
        for j, p in enumerate(state.probes):
            if not isinstance(p, str):
                yield ("fix", "accepted", i, "probes", j), p
    for i, p in enumerate((s.page.probes or []) if s.page is not None else []):
        yield ("page", "probes", i), p


def _llm_service_config(s: Scenario) -> Iterator[Problem]:
    """On the LLM track, `stack.services` keys and values are checked against each service's own config model
    (services/llm/config.py for llm-N, the gateway's `llm_*` keys among its others)."""
    import importlib

    from lab import parts

    for name, values in s.stack.services.items():
        part = parts.part_for(name)
        if part is None or part.config_model is None:
            continue
        module, _, attr = part.config_model.partition(":")
        model = getattr(importlib.import_module(module), attr)
        known = list(model.model_fields)
        for key, value in values.items():
            loc: Loc = ("stack", "services", name, key)
            if key not in known:
                yield loc, f"{name} has no config key '{key}'; its keys are: {', '.join(known)}"
                continue
            try:
                model.model_validate({key: value})
            except ValueError as exc:
                errors = getattr(exc, "errors", lambda: [])()
                msg = errors[0]["msg"] if errors else str(exc)
                yield loc, f"{name} refuses {key}={value!r}: {msg}"


def _probe_ids(s: Scenario) -> Iterator[Problem]:
    items = [(("steady_state", i, "id"), p.id) for i, p in enumerate(s.steady_state)]
    for i, state in enumerate(s.fix.accepted):
        inline = [(j, p) for j, p in enumerate(state.probes) if not isinstance(p, str)]
        items += [(("fix", "accepted", i, "probes", j, "id"), p.id) for j, p in inline]
    if s.page is not None and s.page.probes:
        items += [(("page", "probes", i, "id"), p.id) for i, p in enumerate(s.page.probes)]
    yield from _duplicates(items, "probe id")


def _fix_probes(s: Scenario) -> Iterator[Problem]:
    known = [p.id for p in s.steady_state]
    for i, state in enumerate(s.fix.accepted):
        for j, p in enumerate(state.probes):
            if isinstance(p, str) and p not in known:
                yield ("fix", "accepted", i, "probes", j), (
                    f"unknown probe '{p}'; steady_state probes are: {', '.join(known)}"
                )


def _questions(s: Scenario) -> Iterator[Problem]:
    """Answers must be options of the shared taxonomy; distractors must not shadow a shared cause."""
    d = s.diagnosis
    base: Loc = ("diagnosis", "answer")
    shared = taxonomy.causes(d.track)
    for j, extra in enumerate(d.distractors):
        if extra.id in shared:
            yield ("diagnosis", "distractors", j, "id"), f"'{extra.id}' is already a cause of the {d.track} track"
    opts = taxonomy.options(s)
    fault_kinds = {f.kind for f in s.faults}
    distractor_ids = {x.id for x in d.distractors}
    for kind in taxonomy.QUESTION_KINDS:
        given = getattr(d.answer, kind)
        yield from _duplicates([((*base, kind, j), v) for j, v in enumerate(given)], f"{kind} answer")
        for j, v in enumerate(given):
            loc = (*base, kind, j)
            if kind == "cause" and v in distractor_ids:
                yield loc, f"'{v}' is one of this scenario's distractors: a distractor is a wrong answer"
            elif v not in opts[kind]:
                if kind == "component" and vocab.replica_of(v) is not None:
                    continue  # reported by the replica or the track check, at the same place
                yield loc, f"'{v}' is not a {kind} of the taxonomy; expected one of: {', '.join(opts[kind])}"
            elif kind == "category" and v in FAULT_KINDS and v not in fault_kinds:
                kinds = ", ".join(sorted(fault_kinds))
                yield loc, f"the category '{v}' is not the kind of any fault here ({kinds})"


def _evidence_and_collateral(s: Scenario) -> Iterator[Problem]:
    for i, op in enumerate(s.diagnosis.evidence):
        if op.op not in INVESTIGATE_OPS:
            yield ("diagnosis", "evidence", i, "op"), (
                f"evidence is something looked at; '{op.op}' is an action (use one of: "
                f"{', '.join(sorted(INVESTIGATE_OPS))})"
            )
    for i, op in enumerate(s.fix.collateral):
        if op.op not in ACT_OPS:
            yield ("fix", "collateral", i, "op"), f"looking is never collateral damage; '{op.op}' only reads"


def _solution(s: Scenario) -> Iterator[Problem]:
    # A control (every fault heals by itself: the right answer is to do nothing) may have a solution that only
    # looks; a fault that stays until fixed needs at least one action to fix it.
    lasting = [f.id for f in s.faults if f.until == "fixed"]
    if lasting and not any(op.op in ACT_OPS for op in s.solution):
        yield ("solution",), (f"the reference solution never acts, but fault(s) {', '.join(lasting)} stay until "
                              "fixed; it needs at least one action (only a scenario whose faults all heal by "
                              "themselves, a control, may have a solution without one)")
    faults = {f.id: f"{f.kind}.{f.action}" for f in s.faults}
    for field in ("solution", "wrong_fix"):
        for i, op in enumerate(getattr(s, field) or []):
            if op.op != "kill" or op.args.fault is None:
                continue
            ref = op.args.fault
            loc = (field, i, "args", "fault")
            if ref not in faults:
                yield loc, f"unknown fault '{ref}'; faults are: {', '.join(faults)}"
            elif faults[ref] not in PROCESS_STARTING:
                starters = ", ".join(sorted(PROCESS_STARTING))
                yield loc, f"fault '{ref}' ({faults[ref]}) starts no process to kill; only {starters} do"



def _version_refs(s: Scenario) -> Iterator[tuple[Loc, str]]:
    for i, p in enumerate(s.steady_state):
        yield from _probe_versions(p, ("steady_state", i))
    for i, state in enumerate(s.fix.accepted):
        for j, p in enumerate(state.probes):
            if not isinstance(p, str):
                yield from _probe_versions(p, ("fix", "accepted", i, "probes", j))
    for field, ops in (
        ("solution", s.solution),
        ("wrong_fix", s.wrong_fix or []),
        ("diagnosis.evidence", s.diagnosis.evidence),
        ("fix.collateral", s.fix.collateral),
    ):
        for i, op in enumerate(ops):
            version = op_args(op).get("version")
            if isinstance(version, str):
                yield (*field.split("."), i, "args", "version"), version


def _probe_versions(p: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if p.kind == "deployed_version":
        tol = p.tolerance
        if tol.equals is not None:
            yield (*loc, "tolerance", "equals"), tol.equals
        for k, v in enumerate(tol.in_ or []):
            yield (*loc, "tolerance", "in", k), v
    elif p.kind in ("accuracy", "recall", "precision") and p.target is not None:
        yield (*loc, "target"), p.target


def _versions_made(s: Scenario) -> Iterator[Problem]:
    made: set[str] = set()
    for f in s.faults:
        if f.kind == "deploy":
            made.add(f.params.variant if f.action == "variant" else vocab.CORRUPT_LABEL)
    retrains = any(op.op == "retrain" for op in [*s.solution, *(s.wrong_fix or [])])
    for loc, version in _version_refs(s):
        if version in vocab.MODEL_VARIANTS or version == vocab.CORRUPT_LABEL:
            if version not in made:
                yield loc, f"version '{version}' is made by a deploy fault, and no fault here makes it"
        elif version == vocab.RETRAINED_LABEL and not retrains:
            yield loc, "version 'retrained' is made by a retrain, and neither solution nor wrong_fix retrains"


def _hints(s: Scenario) -> Iterator[Problem]:
    last = len(s.hints) - 1
    for i, h in enumerate(s.hints):
        if i < last and h.solution:
            yield ("hints", i, "solution"), "only the last hint gives the solution"
        if i > 0 and h.cost < s.hints[i - 1].cost:
            yield ("hints", i, "cost"), f"hint costs must not go down: {h.cost} after {s.hints[i - 1].cost}"
    if not s.hints[last].solution:
        yield ("hints", last), "the last hint must give the solution: add solution: true"
    total, budget = sum(h.cost for h in s.hints), s.scoring.weights.hints
    if total > budget:
        yield ("scoring", "weights", "hints"), f"the hints cost {total} in all, more than the hints weight {budget}"


def _par_times(s: Scenario) -> Iterator[Problem]:
    if s.scoring.par_detect_s > s.scoring.par_mitigate_s:
        yield ("scoring", "par_detect_s"), (
            f"par_detect_s ({s.scoring.par_detect_s:g}) is after par_mitigate_s ({s.scoring.par_mitigate_s:g})"
        )
