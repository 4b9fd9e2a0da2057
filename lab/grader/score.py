"""The grade: a pure, deterministic function of (rendered scenario, journal events) -> score 0..100 and breakdown.

Rules (docs/grading.md explains and argues each):
- diagnosis (weight `diagnosis`): category 25 %, component 25 %, cause 30 % of the weight for an accepted option
  (any of the scenario's `diagnosis.answer` list for that question; the options come from lab/scenario/taxonomy);
  evidence 20 %, in proportion to the scenario's evidence patterns matched by console outputs the learner
  PINNED (evidence_pinned) before the diagnosis — outputs merely looked at earn nothing. No diagnosis: nothing.
- fix (weight `fix`): all of it when a fix was verified (an accepted state held its probes for hold_s), else 0.
- time (weight `time`): half for detection, half for mitigation. Full credit up to par, falling linearly to
  nothing at 3 x par. Par times are scaled by the run's time_scale. Detection = the first investigation after
  the injection that matches an evidence pattern, or the diagnosis, whichever came first; mitigation = when the
  verified state began holding. Nothing detected / mitigated: no credit for that half. Each successful action
  taken before the diagnosis that matches no step of the reference solution (thrashing) takes 20 % of the time
  credit (lab/grader/sideeffects.py).
- hints (weight `hints`): the weight minus the cost of every hint taken, floored at 0 — kept only when the fix
  was verified (no points for not asking while not fixing either).
- collateral, taken off the total: each of the scenario's collateral patterns the learner's successful actions
  matched (once per pattern); scaling to an absurd size (beyond max(2 x, +2) the scenario's replicas); every
  fix claim rejected while the steady state was still broken (at most two counted); every setting, version,
  drain or scale left different from the start of the incident that no accepted fix needs (side effects, 3
  points each, at most three counted; lab/grader/sideeffects.py).
The total is clamped to 0..100 and rounded to one decimal.
"""

from __future__ import annotations

from typing import Any

from lab.grader.match import labels_from, matches, op_text, pattern_text
from lab.grader.sideeffects import DISRUPTIVE_TIME_SHARE, disruptive_before_diagnosis, side_effects
from lab.scenario import taxonomy
from lab.scenario.ops import ACT_OPS

DIAGNOSIS_PARTS: dict[str, float] = {"category": 0.25, "component": 0.25, "cause": 0.30, "evidence": 0.20}
LATE_SPAN = 2.0  # credit reaches 0 at par * (1 + LATE_SPAN)
ABSURD_SCALE_PENALTY = 5
FALSE_CLAIM_PENALTY = 5
FALSE_CLAIMS_COUNTED = 2


def first(events: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((e for e in events if e["type"] == type_), None)


def injected_at(events: list[dict[str, Any]]) -> float | None:
    e = first(events, "fault_applied")
    return e["at"] if e is not None else None


def successful_ops(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "console_op" and e["data"].get("ok")]


def broke_at(events: list[dict[str, Any]]) -> float | None:
    """When a steady-state probe was first seen violated after the injection, or the scenario's own page fired."""
    paged = first(events, "paged")
    t0 = injected_at(events)
    broke = None if t0 is None else next((e["at"] for e in events if e["type"] == "probe_result"
                                          and e["at"] >= t0 and e["data"].get("ok") is False), None)
    return min((t for t in (broke, paged and paged["at"]) if t is not None), default=None)


def time_credit(seconds: float | None, par: float) -> float:
    """1 up to par, falling linearly to 0 at par * (1 + LATE_SPAN)."""
    if seconds is None:
        return 0.0
    if seconds <= par:
        return 1.0
    return max(0.0, 1.0 - (seconds - par) / (par * LATE_SPAN))


def pinned_ops(events: list[dict[str, Any]], until: float | None) -> list[dict[str, Any]]:
    """The console outputs the learner pinned as evidence (before `until`, the diagnosis), as their console_op
    events; only successful operations run after the first injection count."""
    since = injected_at(events)
    ops = {e["seq"]: e for e in successful_ops(events) if "seq" in e}
    out = []
    for e in events:
        if e["type"] != "evidence_pinned" or (until is not None and e["at"] > until):
            continue
        op = ops.get(e["data"].get("seq"))
        if op is not None and (since is None or op["at"] >= since) and op not in out:
            out.append(op)
    return out


def _diagnosis(scenario: Any, events: list[dict[str, Any]], labels: dict[str, str]) -> tuple[dict[str, Any], float]:
    weight = scenario.scoring.weights.diagnosis
    submitted = first(events, "diagnosis_submitted")
    answers: dict[str, Any] = (submitted or {"data": {}})["data"].get("answers") or {}
    out: dict[str, Any] = {"max": weight, "submitted": submitted is not None}
    points = 0.0
    for kind, expected in taxonomy.answers(scenario).items():
        given = answers.get(kind)
        correct = submitted is not None and given in expected
        part = weight * DIAGNOSIS_PARTS[kind] if correct else 0.0
        points += part
        out[kind] = {"question": kind, "answer": given, "expected": expected[0], "accepted": expected,
                     "correct": correct, "points": round(part, 2)}
    until = submitted["at"] if submitted is not None else None
    pinned = pinned_ops(events, until) if submitted is not None else []
    seen, missed = [], []
    for pattern in scenario.diagnosis.evidence:
        hit = any(matches(pattern, e["data"]["op"], e["data"].get("args") or {}, labels) for e in pinned)
        (seen if hit else missed).append(pattern_text(pattern))
    share = len(seen) / len(scenario.diagnosis.evidence) if submitted is not None else 0.0
    part = weight * DIAGNOSIS_PARTS["evidence"] * share
    points += part
    out["evidence"] = {"seen": seen if submitted is not None else [], "missed": missed if submitted is not None
                       else [pattern_text(p) for p in scenario.diagnosis.evidence], "points": round(part, 2),
                       "pinned": [op_text(e["data"]["op"], e["data"].get("args") or {}) for e in pinned]}
    out["points"] = round(points, 2)
    return out, points


def detect_at(scenario: Any, events: list[dict[str, Any]], labels: dict[str, str]) -> float | None:
    """The first evidence-matching investigation after the injection, or the diagnosis, whichever is first."""
    t0 = injected_at(events)
    if t0 is None:
        return None
    candidates = []
    for e in successful_ops(events):
        if e["at"] >= t0 and any(matches(p, e["data"]["op"], e["data"].get("args") or {}, labels)
                                 for p in scenario.diagnosis.evidence):
            candidates.append(e["at"])
            break
    submitted = first(events, "diagnosis_submitted")
    if submitted is not None and submitted["at"] >= t0:
        candidates.append(submitted["at"])
    return min(candidates) if candidates else None


def _time(scenario: Any, events: list[dict[str, Any]], labels: dict[str, str]) -> tuple[dict[str, Any], float]:
    weight = scenario.scoring.weights.time
    scale = scenario.time_scale
    par_detect = scenario.scoring.par_detect_s * scale
    par_mitigate = scenario.scoring.par_mitigate_s * scale
    t0 = injected_at(events)
    detected = detect_at(scenario, events, labels)
    verified = first(events, "fix_verified")
    detect_s = None if detected is None or t0 is None else max(0.0, detected - t0)
    mitigate_s = None
    if verified is not None and t0 is not None:
        mitigate_s = max(0.0, float(verified["data"].get("held_since", verified["at"])) - t0)
    detect_points = weight / 2 * time_credit(detect_s, par_detect)
    mitigate_points = weight / 2 * time_credit(mitigate_s, par_mitigate)
    thrash = disruptive_before_diagnosis(scenario, events, labels)
    keep = max(0.0, 1.0 - DISRUPTIVE_TIME_SHARE * len(thrash))
    points = (detect_points + mitigate_points) * keep
    return {
        "disruptive_before_diagnosis": thrash, "disruptive_factor": round(keep, 2),
        "max": weight, "points": round(points, 2),
        "detect_s": None if detect_s is None else round(detect_s, 2),
        "mitigate_s": None if mitigate_s is None else round(mitigate_s, 2),
        "par_detect_s": round(par_detect, 2), "par_mitigate_s": round(par_mitigate, 2),
        "detect_points": round(detect_points, 2), "mitigate_points": round(mitigate_points, 2),
    }, points


def _hints(scenario: Any, events: list[dict[str, Any]], fixed: bool) -> tuple[dict[str, Any], float]:
    weight = scenario.scoring.weights.hints
    taken = [{"index": e["data"].get("index"), "cost": e["data"].get("cost", 0)}
             for e in events if e["type"] == "hint_taken"]
    cost = sum(int(t["cost"] or 0) for t in taken)
    points = max(0.0, float(weight - cost)) if fixed else 0.0
    return {"max": weight, "points": round(points, 2), "taken": taken, "cost": cost,
            "kept": fixed}, points


def _collateral(scenario: Any, events: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    acts = [e for e in successful_ops(events) if e["data"]["op"] in ACT_OPS]
    out = []
    for pattern in scenario.fix.collateral:
        hit = next((e for e in acts if matches(pattern, e["data"]["op"], e["data"].get("args") or {}, labels)), None)
        if hit is not None:
            out.append({"op": op_text(hit["data"]["op"], hit["data"].get("args") or {}), "pattern":
                        pattern_text(pattern), "penalty": pattern.penalty, "reason": pattern.reason})
    replicas = scenario.stack.replicas
    absurd = max(2 * replicas, replicas + 2)
    big = next((e for e in acts if e["data"]["op"] == "scale"
                and (e["data"].get("args") or {}).get("replicas", 0) > absurd), None)
    if big is not None:
        out.append({"op": op_text("scale", big["data"]["args"]), "pattern": f"scale replicas>{absurd}",
                    "penalty": ABSURD_SCALE_PENALTY,
                    "reason": f"Scaling to {big['data']['args']['replicas']} replicas from {replicas} is out of "
                              "proportion: capacity was not the problem, and it costs every other tenant."})
    out.extend(side_effects(scenario, events))
    rejected = [e for e in events if e["type"] == "fix_rejected"][:FALSE_CLAIMS_COUNTED]
    for e in rejected:
        out.append({"op": "fixed", "pattern": "fix claim rejected", "penalty": FALSE_CLAIM_PENALTY,
                    "reason": "Claimed fixed while the steady state was still broken: "
                              + str(e["data"].get("reason", "no accepted state held"))})
    return out


def grade(scenario: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """{"score", "breakdown": {diagnosis, fix, time, hints, collateral, penalties}, "fixed", "broke"}."""
    labels = labels_from(events)
    verified = first(events, "fix_verified")
    fixed = verified is not None
    diagnosis, diag_points = _diagnosis(scenario, events, labels)
    fix_weight = scenario.scoring.weights.fix
    fix_points = float(fix_weight) if fixed else 0.0
    claims = [e for e in events if e["type"] == "fix_claimed"]
    fix = {"max": fix_weight, "points": fix_points, "verified": fixed, "claims": len(claims),
           "rejected": sum(1 for e in events if e["type"] == "fix_rejected"),
           "state": verified["data"].get("description") if verified else None}
    time_part, time_points = _time(scenario, events, labels)
    hints, hint_points = _hints(scenario, events, fixed)
    collateral = _collateral(scenario, events, labels)
    penalties = sum(c["penalty"] for c in collateral)
    total = diag_points + fix_points + time_points + hint_points - penalties
    score = round(min(100.0, max(0.0, total)), 1)
    return {
        "score": score,
        "fixed": fixed,
        "broke": broke_at(events) is not None,
        "breakdown": {"diagnosis": diagnosis, "fix": fix, "time": time_part, "hints": hints,
                      "collateral": collateral, "penalties": penalties},
    }
