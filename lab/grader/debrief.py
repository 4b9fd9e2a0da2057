"""The debrief: the timeline of faults, steady-state and SLO changes and learner actions; the ideal path against
the learner's; what happened; the lesson; and the grade. A pure function of (rendered scenario, events), plus a
plain-text rendering for `faultline debrief` and `faultline run`.
"""

from __future__ import annotations

from typing import Any

from lab.grader.match import op_text
from lab.grader.score import grade
from lab.monitor.measured import fill


def measured_figures(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The attempt's measured series summary (the last `measured` event), {} when the lab did not measure it."""
    found = [e for e in events if e["type"] == "measured"]
    return dict(found[-1]["data"].get("series") or {}) if found else {}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _entry(e: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, text) of one event on the timeline; None for events that are not worth a line."""
    d, t = e["data"], e["type"]
    if t == "attempt_started":
        return "attempt", f"attempt started (seed {d.get('seed')}, time scale {d.get('time_scale')})"
    if t == "stack_ready":
        return "attempt", "stack healthy: the scenario clock starts"
    if t == "fault_applied":
        return "fault", f"FAULT {d.get('fault_id')}: {d.get('description')}"
    if t == "fault_reverted":
        return "fault", f"fault {d.get('fault_id')} reverted ({d.get('reason')})"
    if t in ("slo_violated", "slo_restored"):
        state = "violated" if t == "slo_violated" else "restored"
        return "slo", f"SLO {d.get('slo')} {state} (value {_fmt(d.get('value'))}, threshold {_fmt(d.get('threshold'))})"
    if t == "probe_result":
        verdict = "ok" if d.get("ok") else "VIOLATED"
        return "probe", f"steady state {d.get('probe')}: {verdict} (value {_fmt(d.get('value'))})"
    if t == "paged":
        return "slo", f"PAGE: {d.get('reason')}"
    if t == "console_op":
        text = op_text(d.get("op", "?"), d.get("args") or {})
        if not d.get("ok"):
            return "action", f"$ {text}  -> refused: {d.get('error')}"
        return "action", f"$ {text}" + (f"  -> {d['summary']}" if d.get("summary") else "")
    if t == "hint_taken":
        return "hint", f"hint {int(d.get('index', 0)) + 1} taken (cost {d.get('cost')})"
    if t == "diagnosis_submitted":
        answers = ", ".join(f"{k}={v}" for k, v in (d.get("answers") or {}).items())
        return "diagnosis", f"diagnosis submitted: {answers}"
    if t == "incident_declared":
        return "diagnosis", "incident declared: the diagnosis opens"
    if t == "evidence_pinned":
        return "diagnosis", f"pinned as evidence: $ {op_text(d.get('op', '?'), d.get('args') or {})}"
    if t == "fix_claimed":
        return "fix", "claimed fixed"
    if t == "fix_verified":
        return "fix", f"fix verified: {d.get('description')}"
    if t == "fix_rejected":
        return "fix", f"fix claim rejected: {d.get('reason')}"
    if t == "attempt_aborted":
        return "end", f"attempt ended without a verified fix: {d.get('reason')}"
    if t == "attempt_finished":
        return "end", "attempt finished"
    return None


def timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{"t": seconds since the attempt started, "at", "kind", "type", "text"}] in journal order."""
    if not events:
        return []
    start = events[0]["at"]
    out = []
    for e in events:
        entry = _entry(e)
        if entry is not None:
            out.append({"t": round(e["at"] - start, 2), "at": e["at"], "kind": entry[0], "type": e["type"],
                        "text": entry[1]})
    return out


def learner_path(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not events:
        return []
    start = events[0]["at"]
    return [{"t": round(e["at"] - start, 2), "op": e["data"].get("op"), "args": e["data"].get("args") or {},
             "ok": bool(e["data"].get("ok")), "text": op_text(e["data"].get("op", "?"), e["data"].get("args") or {})}
            for e in events if e["type"] == "console_op"]


def debrief(scenario: Any, events: list[dict[str, Any]], attempt: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the debrief page shows. `attempt` is the journal's attempts row (id, status, ...) if known."""
    graded = grade(scenario, events)
    measured = measured_figures(events)
    ended = next((e for e in events if e["type"] in ("attempt_finished", "attempt_aborted")), None)
    return {
        "attempt_id": (attempt or {}).get("id"),
        "status": (attempt or {}).get("status"),
        "scenario": scenario.id,
        "title": scenario.title,
        "seed": scenario.seed,
        "time_scale": scenario.time_scale,
        "broke": graded["broke"],
        "fixed": graded["fixed"],
        "score": graded["score"],
        "breakdown": graded["breakdown"],
        "end_reason": ended["data"].get("reason") if ended and ended["type"] == "attempt_aborted" else None,
        "faults": [{"id": e["data"].get("fault_id"), "description": e["data"].get("description"),
                    "t": round(e["at"] - events[0]["at"], 2)} for e in events if e["type"] == "fault_applied"],
        "timeline": timeline(events),
        # figures quoted as [[ measured.SERIES.AGG ]] are this attempt's, never the scenario file's
        "ideal_path": [fill(step, measured) for step in scenario.debrief.ideal_path],
        "learner_path": learner_path(events),
        "what_happened": fill(scenario.debrief.what_happened, measured),
        "measured": measured,
        "lesson": scenario.debrief.lesson,
    }


def debrief_text(d: dict[str, Any]) -> str:
    b = d["breakdown"]
    lines = [f"{d['title']}  [{d['scenario']}, seed {d['seed']}, time scale {d['time_scale']}]",
             f"score {d['score']:g}/100 — broke: {'yes' if d['broke'] else 'NO'}, "
             f"fixed: {'yes' if d['fixed'] else 'no'}" + (f" ({d['end_reason']})" if d.get("end_reason") else ""), ""]
    if d.get("scenario_note"):  # an old attempt, graded against the scenario file as it is now
        lines[2:2] = [f"note: {d['scenario_note']}"]
    diag = b["diagnosis"]
    lines.append(f"diagnosis  {diag['points']:6.2f} / {diag['max']}"
                 + ("" if diag["submitted"] else "  (none submitted)"))
    for kind in ("category", "component", "cause"):
        q = diag[kind]
        mark = "right" if q["correct"] else f"wrong (answer: {' or '.join(q.get('accepted') or [q['expected']])})"
        lines.append(f"  {kind:10} {q['answer'] or '-':22} {mark}")
    ev = diag["evidence"]
    lines.append(f"  evidence   pinned: {', '.join(ev.get('pinned') or []) or '-'}; "
                 f"matched: {', '.join(ev['seen']) or '-'}; missed: {', '.join(ev['missed']) or '-'}")
    fix = b["fix"]
    lines.append(f"fix        {fix['points']:6.2f} / {fix['max']}  "
                 + (f"verified: {fix['state']}" if fix["verified"] else f"not verified ({fix['claims']} claim(s))"))
    tm = b["time"]
    lines.append(f"time       {tm['points']:6.2f} / {tm['max']}  detect {_secs(tm['detect_s'])} "
                 f"(par {tm['par_detect_s']:g}s), mitigate {_secs(tm['mitigate_s'])} (par {tm['par_mitigate_s']:g}s)")
    if tm.get("disruptive_before_diagnosis"):
        lines.append(f"           x{tm['disruptive_factor']:g}: actions before the diagnosis that no fix needed: "
                     + ", ".join(tm["disruptive_before_diagnosis"]))
    h = b["hints"]
    lines.append(f"hints      {h['points']:6.2f} / {h['max']}  {len(h['taken'])} taken, cost {h['cost']}"
                 + ("" if h["kept"] else " (kept only with a verified fix)"))
    for c in b["collateral"]:
        lines.append(f"penalty    -{c['penalty']:<5} {c['op']}: {c['reason']}")
    lines += ["", "timeline:"]
    lines += [f"  {e['t']:8.1f}s  {e['text']}" for e in d["timeline"]]
    lines += ["", "ideal path:"] + [f"  {i + 1}. {step}" for i, step in enumerate(d["ideal_path"])]
    lines += ["", "your path:"] + ([f"  {p['t']:8.1f}s  {p['text']}" + ("" if p["ok"] else "  (refused)")
                                    for p in d["learner_path"]] or ["  (no console operation)"])
    lines += ["", "what happened:", d["what_happened"].rstrip(), "", "lesson:", d["lesson"].rstrip()]
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
