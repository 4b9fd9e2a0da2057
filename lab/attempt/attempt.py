"""One attempt at a scenario, run by its own thread in the lab process: the scenario's lifecycle.

preparing  the stack is put back to its baseline, then set up as the scenario's `stack` says (replicas, versions,
           service configs, traffic);
warming    until every steady-state probe holds (the stack is healthy before anything breaks) -> stack_ready,
           and the scenario clock starts;
running    faults are injected when their `when` says (at_s on the clock, after another fault, on a learner
           action; every duration scaled by the time scale) and reverted when `until` says; the steady state is
           measured every second (each change journaled; the first violation after an injection is the page);
           the monitor's SLO changes are journaled; the learner investigates, acts, takes hints, diagnoses;
verifying  after a fix claim: once the probes' windows have rolled over past the claim, one accepted end state
           must hold all its probes for hold_s -> fix_verified (faults `until: fixed` are reverted and the
           attempt finishes); if none has begun holding a window (at least 10 s) after that, or every one that
           began has broken since, the claim is rejected (fix_rejected) and the attempt runs on. Before the
           windows roll over, a claim whose errors since the claim already doom the first window is rejected
           at once (`_doomed`, within 10 s), naming each failing probe, its value and its limit;
ending     every fault is reverted, the attempt is journaled finished or aborted (given up, timed out, lab
           stopping), graded, and the stack is put back to its baseline.

Everything that happens is appended to the journal as it happens.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lab.attempt.probes import ProbeEvaluator, ProbeResult, tolerance_text, window_s
from lab.journal import Journal

log = logging.getLogger("faultline.attempt")

TICK_S = 1.0
WARM_TIMEOUT_S = 120.0
VERIFY_GRACE_S = 2.0
RECOVERY_MIN_S = 10.0  # after the windows rolled over, a fix gets this long (or a window) to take effect
# A claim's early check (fair verification): from EARLY_CHECK_S after the claim (+ grace) until the windows roll
# over, a claim whose error rate since the claim already dooms the first window (even if every later request
# succeeded) and is still over the limit over the last EARLY_RECENT_S is rejected at once, well within 10 s.
EARLY_CHECK_S = 5.0
EARLY_RECENT_S = 3.0
END_JOIN_S = 120.0


class AttemptError(Exception):
    """A request about an attempt that cannot be done now; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class Attempt:
    def __init__(self, manager: Any, attempt_id: str, scenario: Any, journal: Journal) -> None:
        self.manager = manager
        self.lab = manager.lab
        self.id = attempt_id
        self.scenario = scenario
        self.journal = journal
        self.seed = scenario.seed
        self.scale = scenario.time_scale
        self.labels: dict[str, str] = {}
        self.phase = "preparing"
        self.progress = "resetting the stack to its baseline"
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.paged_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.status = "running"
        self.score: float | None = None
        self.applied: dict[str, float] = {}
        self.triggered: dict[str, float] = {}
        self.reverted: set[str] = set()
        self.hints_taken: list[dict[str, Any]] = []
        self.diagnosis: dict[str, str] | None = None
        self.declared_at: float | None = None
        self.pinned: list[int] = []  # seqs of console outputs pinned as evidence
        self.claims = 0
        self.last_claim: str | None = None
        self.verifying: dict[str, Any] | None = None
        self.steady: list[ProbeResult] = []
        self._last_ok: dict[str, tuple[bool, bool]] = {}  # probe id -> (ok, journaled after the injection)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._stop_status = "aborted"
        self.reset_info: dict[str, Any] = {}
        self.setup_info: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._unsubscribe: Any = None
        self.evaluator = ProbeEvaluator(self.lab, self.scale, self.labels,
                                        getattr(self.scenario.stack, "track", "fraud"))
        self._thread = threading.Thread(target=self._main, name=f"attempt-{attempt_id}", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            self._prepare()
            if not self._stop.is_set():
                self._warm()
            while not self._stop.is_set():
                self._tick()
                if self._stop.wait(TICK_S):
                    break
        except Exception as exc:  # noqa: BLE001 - any failure ends the attempt honestly, with its reason
            log.exception("attempt %s failed", self.id)
            self._request_stop("aborted", f"the attempt could not go on: {exc}")
        finally:
            self._end()

    def _request_stop(self, status: str, reason: str) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._stop_status, self._stop_reason = status, reason
                self._stop.set()

    def _prepare(self) -> None:
        from lab.attempt.setup import configure_stack

        self.reset_info = self.manager.baseline.reset()
        self.progress = "setting up the scenario's stack"
        self.setup_info = configure_stack(self, self.scenario.stack)
        runner = self.lab.components.get("monitor")
        if runner is not None:
            runner.monitor.begin_attempt(self.id)
            self._unsubscribe = runner.monitor.subscribe(self._on_slo)

    def _warm(self) -> None:
        self.phase = "warming"
        self.progress = "waiting for a healthy steady state"
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while not self._stop.is_set():
            results = self.evaluator.evaluate(self.scenario.steady_state)
            self.steady = results
            windowed_missing = [r.id for r in results if r.ok is None and r.kind in ("latency_p99_ms", "error_rate")]
            if all(r.ok is not False for r in results) and not windowed_missing:
                break
            if time.monotonic() > deadline:
                bad = ", ".join(f"{r.id}={r.value}" for r in results if r.ok is not True)
                raise RuntimeError(f"the stack did not reach a healthy steady state in {WARM_TIMEOUT_S:.0f}s ({bad})")
            self._stop.wait(TICK_S)
        if self._stop.is_set():
            return
        self.evaluator.mark_start()  # restarts and uptime probes count from the clock's start
        self.ready_at = time.time()
        for r in self.steady:
            if r.ok is not None:
                self._last_ok[r.id] = (r.ok, False)
        self.journal.append(self.id, "stack_ready", {"steady_state": [r.to_dict() for r in self.steady],
                                                     "warm_s": round(self.ready_at - self.started_at, 2),
                                                     "reset": self.reset_info, "setup": self.setup_info},
                            at=self.ready_at)
        self._snapshot("start")
        self.phase = "running"
        self.progress = "the scenario is running"

    def _tick(self) -> None:
        now = time.time()
        self._schedule(now)
        self._check_reverts()
        results = self.evaluator.evaluate(self.scenario.steady_state)
        self.steady = results
        self._journal_probes(results, time.time())  # measured now, after any injection of this tick
        if self.paged_at is None and self.scenario.page is not None:
            self._check_page(time.time())
        if self.verifying is not None:
            self._verify(time.time())
        if self.deadline is not None and now > self.deadline and not self._stop.is_set():
            self._request_stop("aborted", "time is up")

    @property
    def deadline(self) -> float | None:
        if self.ready_at is None:
            return None
        sc = self.scenario
        budget = max(3 * sc.scoring.par_mitigate_s, 2 * 60 * sc.estimated_minutes) * self.scale
        return self.ready_at + budget

    # --- faults ---------------------------------------------------------------------------------------------------

    def _due(self, fault: Any) -> float | None:
        w = fault.when
        if w.at_s is not None:
            return None if self.ready_at is None else self.ready_at + w.at_s * self.scale
        if w.after is not None:
            parent = self.applied.get(w.after)
            return None if parent is None else parent + (w.delay_s or 0.0) * self.scale
        return self.triggered.get(fault.id)

    def _schedule(self, now: float) -> None:
        for fault in self.scenario.faults:
            if fault.id in self.applied:
                continue
            due = self._due(fault)
            if due is not None and now >= due:
                self._apply(fault)

    def _apply(self, fault: Any) -> None:
        from lab.faults import lab_faults
        from lab.faults.base import FaultError

        duration = None if isinstance(fault.until, str) else fault.until.duration_s * self.scale
        try:
            applied = lab_faults(self.lab).apply(fault, duration_s=duration)
        except FaultError as exc:
            raise RuntimeError(f"fault {fault.id} could not be applied: {exc}") from exc
        at = applied.applied_at
        self.applied[fault.id] = at
        labels = {}
        version = applied.changes.get("version")
        if fault.kind == "deploy" and isinstance(version, str):
            labels[fault.params.variant if fault.action == "variant" else "corrupt"] = version
        with self._lock:
            self.labels.update(labels)
        trigger = {k: v for k, v in fault.when.model_dump().items() if v is not None}
        self.journal.append(self.id, "fault_applied", {
            "fault_id": fault.id, "name": applied.name, "target": applied.target, "description": applied.description,
            "trigger": trigger, "until": fault.until if isinstance(fault.until, str) else {"duration_s": duration},
            "labels": labels, "notes": applied.notes}, at=at)

    def _check_reverts(self) -> None:
        from lab.faults import lab_faults

        manager = lab_faults(self.lab)
        for fault_id in self.applied:
            if fault_id in self.reverted:
                continue
            found = manager.find(fault_id)
            if found is not None and found.reverted_at is not None:
                self._journal_revert(fault_id, "its duration ran out", found.notes, found.reverted_at)

    def _journal_revert(self, fault_id: str, reason: str, notes: list[str], at: float | None = None) -> None:
        if fault_id in self.reverted:
            return
        self.reverted.add(fault_id)
        self.journal.append(self.id, "fault_reverted", {"fault_id": fault_id, "reason": reason, "notes": notes}, at=at)

    def _revert(self, fault_ids: list[str], reason: str) -> None:
        from lab.faults import lab_faults

        manager = lab_faults(self.lab)
        for fault_id in reversed(fault_ids):
            if fault_id in self.reverted:
                continue
            try:
                applied = manager.revert(fault_id)
            except KeyError:
                continue
            self._journal_revert(fault_id, reason, applied.notes, applied.reverted_at)

    # --- the steady state, SLOs -------------------------------------------------------------------------------

    def _journal_probes(self, results: list[ProbeResult], now: float) -> None:
        injected = bool(self.applied)
        for r in results:
            # a probe already failing when the fault lands (noise on a loaded host) is journaled again after the
            # injection: otherwise no transition would come and the page would never fire
            last = self._last_ok.get(r.id)
            if r.ok is None or (last is not None and last[0] == r.ok and (last[1] or not injected or r.ok)):
                continue
            self._last_ok[r.id] = (r.ok, injected)
            self.journal.append(self.id, "probe_result", {
                "probe": r.id, "kind": r.kind, "ok": r.ok, "value": r.to_dict()["value"], "tolerance": r.tolerance,
                "phase": "after injection" if injected else "before injection"}, at=now)
            if r.ok is False and injected and self.paged_at is None:
                self.paged_at = now

    def _check_page(self, now: float) -> None:
        """The scenario's own page (an alert to judge): at T+at_s, or when one of its alert probes is violated."""
        page = self.scenario.page
        assert self.ready_at is not None
        fired: list[dict[str, Any]] = []
        if page.at_s is not None:
            if now < self.ready_at + page.at_s * self.scale:
                return
        else:
            fired = [r.to_dict() for r in self.evaluator.evaluate(page.probes) if r.ok is False]
            if not fired:
                return
        self.paged_at = now
        self.journal.append(self.id, "paged", {"reason": page.reason, "probes": fired}, at=now)

    def _on_slo(self, event: dict[str, Any]) -> None:
        if self.status != "running" or self.ready_at is None:
            return  # before the clock starts, SLO changes are about the reset and the setup, not the incident
        kind = "slo_violated" if event.get("state") == "violated" else "slo_restored"
        try:
            self.journal.append(self.id, kind, dict(event))
        except Exception as exc:  # noqa: BLE001 - on the monitor's thread: never break its loop
            log.warning("could not journal SLO event: %r", exc)

    def verification_view(self, now: float) -> dict[str, Any] | None:
        """A claim under verification, for the countdown: the phase (settling: the windows roll over past the claim;
        holding: an accepted state must hold), seconds left in it, and the steady-state probes' live values —
        never which accepted state is holding (that would name the fix)."""
        v = self.verifying
        if v is None:
            return None
        holds = [s.hold_s * self.scale for s in self.scenario.fix.accepted]
        if now < v["settle_until"]:
            stage, left = "settling", v["settle_until"] - now
        else:
            since = min(v["held_since"].values(), default=None)
            stage = "holding" if since is not None else "waiting"
            left = (max(0.0, min(holds) - (now - since)) if since is not None
                    else max(0.0, v["recover_by"] - now))
        return {"stage": stage, "left_s": round(left, 1), "claimed_s_ago": round(now - v["claimed_at"], 1),
                "hold_s": [round(h, 1) for h in holds], "give_up_in_s": round(max(0.0, v["give_up_at"] - now), 1),
                "probes": [r.to_dict() for r in self.steady]}  # measured every tick, the steady state only

    def steady_state_view(self) -> list[dict[str, Any]]:
        if self.steady:
            return [r.to_dict() for r in self.steady]
        # before the first measurement every probe shows, unmeasured: the page keeps its shape as values arrive
        return [ProbeResult(p.id, p.kind, getattr(p, "target", None), None, None,
                            tolerance_text(p.tolerance)).to_dict() for p in self.scenario.steady_state]

    # --- the learner ------------------------------------------------------------------------------------------

    def record_op(self, data: dict[str, Any]) -> int:
        """A console operation ran (or was refused): journal it (returns its seq, what the learner pins); it may
        trigger a fault waiting on an action."""
        with self._lock:
            self.labels.update(data.get("labels") or {})
        seq = int(self.journal.append(self.id, "console_op", data)["seq"])
        if not data.get("ok") or self.ready_at is None:
            return seq
        args = data.get("args") or {}
        for fault in self.scenario.faults:
            w = fault.when
            if w.on_action != data["op"] or fault.id in self.triggered:
                continue
            if w.target is not None and w.target not in args.values():
                continue
            self.triggered[fault.id] = time.time() + (w.delay_s or 0.0) * self.scale
        return seq

    def _check_running(self) -> None:
        if self.status != "running":
            raise AttemptError(f"attempt {self.id} has ended ({self.status})")

    def take_hint(self) -> dict[str, Any]:
        with self._lock:
            self._check_running()
            index = len(self.hints_taken)
            if index >= len(self.scenario.hints):
                raise AttemptError("no hints left: the last one gave the solution")
            hint = self.scenario.hints[index]
            taken = {"index": index, "text": hint.text, "cost": hint.cost, "solution": hint.solution}
            self.hints_taken.append(taken)
            self.journal.append(self.id, "hint_taken", {"index": index, "cost": hint.cost, "solution": hint.solution})
            return taken

    def questions(self) -> list[dict[str, Any]]:
        """The diagnosis questions: the shared taxonomy's options, shuffled for this attempt's seed."""
        from lab.scenario import taxonomy

        return taxonomy.questions(self.scenario, self.seed)

    def diagnosis_open(self) -> bool:
        """The form opens when the page fires or the learner declares an incident, never at T+0."""
        return self.paged_at is not None or self.declared_at is not None

    def declare(self) -> dict[str, Any]:
        """The learner declares an incident before (or without) a page: the diagnosis opens."""
        with self._lock:
            self._check_running()
            if self.ready_at is None:
                raise AttemptError(f"the scenario has not started yet: the attempt is {self.phase}")
            if self.declared_at is None:
                self.declared_at = time.time()
                self.journal.append(self.id, "incident_declared", {"paged": self.paged_at is not None})
            return {"declared": True, "diagnosis_open": True}

    def pin(self, seq: Any) -> dict[str, Any]:
        """Pin a journaled console output (its event seq) as evidence for the diagnosis."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise AttemptError("seq must be the integer seq of a console operation of this attempt", 422)
        with self._lock:
            self._check_running()
            if self.diagnosis is not None:
                raise AttemptError("the diagnosis was already submitted: evidence is pinned before it")
            event = next((e for e in self.journal.events(self.id) if e["seq"] == seq), None)
            if event is None or event["type"] != "console_op":
                raise AttemptError(f"no console output with seq {seq} in this attempt", 404)
            if not event["data"].get("ok"):
                raise AttemptError(f"console output {seq} is a refused operation: nothing to pin", 422)
            if seq in self.pinned:
                return {"pinned": sorted(self.pinned)}
            self.pinned.append(seq)
            data = event["data"]
            self.journal.append(self.id, "evidence_pinned", {"seq": seq, "op": data["op"],
                                                             "args": data.get("args") or {}})
            return {"pinned": sorted(self.pinned)}

    def submit_diagnosis(self, answers: Any) -> dict[str, str]:
        questions = self.questions()
        if not isinstance(answers, dict):
            raise AttemptError("answers must be an object {question id: option id}", 422)
        unknown = sorted(set(answers) - {q["id"] for q in questions})
        if unknown:
            raise AttemptError(f"unknown question(s) {', '.join(unknown)}; questions are: "
                               f"{', '.join(q['id'] for q in questions)}", 422)
        missing = [q["id"] for q in questions if q["id"] not in answers]
        if missing:
            raise AttemptError(f"answer every question; missing: {', '.join(missing)}", 422)
        for q in questions:
            ids = [o["id"] for o in q["options"]]
            if answers[q["id"]] not in ids:
                raise AttemptError(f"{q['id']}: {answers[q['id']]!r} is not an option; options are: "
                                   f"{', '.join(sorted(ids))}", 422)
        with self._lock:
            self._check_running()
            if not self.diagnosis_open():
                raise AttemptError("the diagnosis opens when the page fires or when you declare an incident "
                                   "(POST /api/attempts/{id}/declare, `faultline declare`)", 409)
            if self.diagnosis is not None:
                raise AttemptError("a diagnosis was already submitted for this attempt")
            self.diagnosis = {q["id"]: answers[q["id"]] for q in questions}
            self.journal.append(self.id, "diagnosis_submitted", {"answers": self.diagnosis,
                                                                 "pinned": sorted(self.pinned)})
            return dict(self.diagnosis)

    def claim_fixed(self) -> dict[str, Any]:
        with self._lock:
            self._check_running()
            if self.phase not in ("running", "verifying"):
                raise AttemptError(f"nothing to fix yet: the attempt is {self.phase}")
            if self.verifying is not None:
                raise AttemptError("a fix claim is already being verified")
            if not self.applied and self.paged_at is None:
                raise AttemptError("nothing is broken yet: the pager has not fired")
            now = time.time()
            probes = self._accepted_probes()
            settle = max((window_s(p, self.scale) for _, p in probes if hasattr(p, "window_s")), default=0.0)
            holds = [s.hold_s * self.scale for s in self.scenario.fix.accepted]
            settle_until = now + settle + VERIFY_GRACE_S
            recover_by = settle_until + max(RECOVERY_MIN_S, settle)
            self.verifying = {"claimed_at": now, "settle_until": settle_until, "recover_by": recover_by,
                              "give_up_at": recover_by + max(holds) + 30.0, "held_since": {}, "seen": {}}
            self.claims += 1
            self.phase = "verifying"
            self.journal.append(self.id, "fix_claimed", {"claim": self.claims}, at=now)
            return {"verifying": True, "settle_s": round(settle + VERIFY_GRACE_S, 2),
                    "hold_s": [round(h, 2) for h in holds]}

    def _accepted_probes(self) -> list[tuple[int, Any]]:
        out = []
        for i, state in enumerate(self.scenario.fix.accepted):
            for ref in state.probes:
                out.append((i, self.scenario.probe(ref) if isinstance(ref, str) else ref))
        return out

    def _doomed(self, pairs: list[tuple[int, Any]], now: float) -> list[dict[str, Any]] | None:
        """The probes that cannot hold in the first window since the claim, when every accepted state has one
        (else None): error-rate probes whose errors since the claim, spread over the whole window, already pass
        the limit, and that are still over it over the last few seconds (not a fix still taking effect)."""
        v = self.verifying
        assert v is not None
        start = v["claimed_at"] + VERIFY_GRACE_S
        elapsed = now - start
        probes = list({p.id: p for _, p in pairs if p.kind == "error_rate" and p.tolerance.max is not None}.values())
        if elapsed < EARLY_CHECK_S or not probes:
            return None
        since = {r.id: r for r in self.evaluator.evaluate(probes, span_s=elapsed)}
        recent = {r.id: r for r in self.evaluator.evaluate(probes, span_s=EARLY_RECENT_S)}
        doomed: dict[str, dict[str, Any]] = {}
        for p in probes:
            value, last = since[p.id].value, recent[p.id].value
            if value is None or last is None:
                continue
            floor = float(value) * min(1.0, elapsed / window_s(p, self.scale))
            if floor > p.tolerance.max and float(last) > p.tolerance.max:
                doomed[p.id] = {"id": p.id, "value": round(float(value), 4), "tolerance": since[p.id].tolerance,
                                "limit": p.tolerance.max, "since_claim_s": round(elapsed, 1)}
        for i, _state in enumerate(self.scenario.fix.accepted):
            if not any(p.id in doomed for j, p in pairs if j == i):
                return None
        return list(doomed.values())

    def _reject(self, now: float, reason: str, broken: list[dict[str, Any]], told: str) -> None:
        self.verifying = None
        self.phase = "running"
        self.last_claim = "rejected: " + told
        self.journal.append(self.id, "fix_rejected", {"reason": reason, "probes": broken, "told": self.last_claim},
                            at=now)

    def _verify(self, now: float) -> None:
        v = self.verifying
        assert v is not None
        pairs = self._accepted_probes()
        if now < v["settle_until"]:
            doomed = self._doomed(pairs, now)
            if doomed:
                steady = {p.id for p in self.scenario.steady_state}
                text = "; ".join(f"{d['id']} = {d['value']} since the claim (limit {d['tolerance']}): it cannot "
                                 f"hold in the first window" for d in doomed)
                public = "; ".join(f"{d['id']} = {d['value']} since the claim (limit {d['tolerance']})"
                                   for d in doomed if d["id"] in steady)
                self._reject(now, text, doomed, public or "the steady state cannot hold as any accepted fix requires")
            return
        results = {r.id: r for r in self.evaluator.evaluate(list({p.id: p for _, p in pairs}.values()))}
        holding_any = False
        for i, state in enumerate(self.scenario.fix.accepted):
            rs = [results[p.id] for j, p in pairs if j == i]
            if any(r.ok is False for r in rs):
                v["held_since"].pop(i, None)
                v["seen"].pop(i, None)
                continue
            holding_any = True
            since = v["held_since"].setdefault(i, now)
            seen = v["seen"].setdefault(i, set())
            seen.update(r.id for r in rs if r.ok is True)
            if now - since >= state.hold_s * self.scale and len(seen) == len(rs):
                self._verified(i, state, since, now, rs)
                return
        if (not holding_any and now > v["recover_by"]) or now > v["give_up_at"]:
            broken = [r.to_dict() for r in results.values() if r.ok is False]
            reason = ("; ".join(f"{r['id']} = {r['value']} (wanted {r['tolerance']})" for r in broken)
                      or "no accepted end state held long enough")
            self._reject(now, reason, broken, rejection_text(self.scenario, pairs, results))

    def _verified(self, index: int, state: Any, since: float, now: float, results: list[ProbeResult]) -> None:
        self.journal.append(self.id, "fix_verified", {
            "state": index, "description": state.description, "held_since": since, "held_s": round(now - since, 2),
            "probes": [r.to_dict() for r in results]}, at=now)
        self.verifying = None
        self.last_claim = f"verified: {state.description}"
        fixed = [f.id for f in self.scenario.faults if f.until == "fixed" and f.id in self.applied]
        self._revert(fixed, "fixed")
        self._request_stop("finished", "fix verified")

    # --- ending -----------------------------------------------------------------------------------------------

    def abort(self, reason: str = "given up by the learner", wait_s: float = END_JOIN_S) -> None:
        if self.status != "running":
            raise AttemptError(f"attempt {self.id} has already ended ({self.status})")
        self._request_stop("aborted", reason)
        self._done.wait(wait_s)

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    def _end(self) -> None:
        from lab.faults import lab_faults
        from lab.grader import grade

        status = self._stop_status
        reason = self._stop_reason or "stopped"
        self.phase = "ending"
        self.progress = "reverting faults and grading"
        try:
            self._revert(list(self.applied), "the attempt ended")
            for applied in lab_faults(self.lab).revert_all():  # anything a fault left behind, whatever its id
                self._journal_revert(applied.fault_id, "the attempt ended", applied.notes, applied.reverted_at)
        except Exception as exc:  # noqa: BLE001 - ending must complete
            log.error("reverting faults of %s failed: %r", self.id, exc)
        if self._unsubscribe is not None:
            self._unsubscribe()
        runner = self.lab.components.get("monitor")
        if runner is not None:
            try:
                export = runner.monitor.end_attempt(self.id)
                # the figures the debrief quotes, from this attempt's own series (lab/monitor/measured.py)
                from lab.monitor.measured import summarize

                self.journal.append(self.id, "measured", {"series": summarize(export, self.ready_at)})
            except KeyError:
                pass
            except Exception as exc:  # noqa: BLE001 - ending must complete
                log.error("measuring %s failed: %r", self.id, exc)
        if self.ready_at is not None:
            self._snapshot("end")  # after the faults were reverted: what still differs is the learner's doing
        self.ended_at = time.time()
        self.end_reason = reason
        if status == "finished":
            self.journal.append(self.id, "attempt_finished", {"reason": reason}, at=self.ended_at)
        else:
            self.journal.append(self.id, "attempt_aborted", {"reason": reason}, at=self.ended_at)
        try:
            result = grade(self.scenario, self.journal.events(self.id))
            self.journal.append(self.id, "graded", result)
            self.score = result["score"]
        except Exception as exc:  # noqa: BLE001 - an attempt is still ended without a grade
            log.exception("grading %s failed", self.id)
            self.end_reason = f"{reason} (grading failed: {exc})"
        self.status = status
        self.phase = status
        self.progress = "ended"
        if not self.manager.closing:  # a stopping lab takes the stack down anyway
            try:
                self.manager.baseline.reset()  # before the next attempt may start: never two resets at once
            except Exception as exc:  # noqa: BLE001 - logged; the next attempt resets again
                log.error("baseline reset after %s failed: %r", self.id, exc)
        self.manager.ended(self)
        self._done.set()

    def _snapshot(self, when: str) -> None:
        """Journal the stack's settings (configs, registry stages, replica count) for the side-effects grade."""
        from lab.attempt.baseline import Baseline

        try:
            snap = Baseline(self.lab).capture()
        except Exception as exc:  # noqa: BLE001 - no snapshot, no side-effects grade; the attempt goes on
            log.warning("stack snapshot (%s) of %s failed: %r", when, self.id, exc)
            return
        state = {"replicas": snap["replicas"], "configs": snap["configs"], "stages": snap["stages"]}
        self.journal.append(self.id, "stack_snapshot", {"when": when, "state": state})

    # --- the learner's view -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the learner may see: never which fault is injected, nor the answers."""
        sc = self.scenario
        now = self.ended_at or time.time()
        return {
            "attempt_id": self.id, "scenario_id": sc.id, "title": sc.title, "seed": self.seed,
            "time_scale": self.scale, "status": self.status, "phase": self.phase, "progress": self.progress,
            "started_at": self.started_at, "elapsed_s": round(now - self.started_at, 2),
            "clock_s": None if self.ready_at is None else round(now - self.ready_at, 2),
            "deadline_s": None if self.deadline is None else round(self.deadline - self.ready_at, 2),
            "briefing": sc.briefing, "summary": sc.summary,
            "paged": self.paged_at is not None,
            "paged_at_s": None if self.paged_at is None or self.ready_at is None
            else round(self.paged_at - self.ready_at, 2),
            "steady_state": self.steady_state_view(),
            "hints": {"taken": [dict(h) for h in self.hints_taken], "left": len(sc.hints) - len(self.hints_taken),
                      "next_cost": sc.hints[len(self.hints_taken)].cost if len(self.hints_taken) < len(sc.hints)
                      else None},
            "diagnosis": {"open": self.diagnosis_open(), "declared": self.declared_at is not None,
                          "questions": self.questions(), "pinned": sorted(self.pinned),
                          "submitted": self.diagnosis},
            "fix": {"claims": self.claims, "verifying": self.verifying is not None, "last": self.last_claim,
                    "verification": self.verification_view(now)},
            "end_reason": self.end_reason, "score": self.score,
        }


# Probes whose limit is the answer itself (which replica to drain, which version to serve): a rejection names them
# and their value, never their limit.
SECRET_LIMIT_KINDS = ("config_value", "deployed_version")


def rejection_text(scenario: Any, pairs: list[tuple[int, Any]], results: dict[str, ProbeResult]) -> str:
    """What a rejected claim tells the learner: each failing probe of the accepted end state that came closest
    (fewest failing probes), with its value and its limit — a steady-state probe always in full; a probe of the
    end state alone (a restart count, a decline rate) too, unless its limit would give the fix away."""
    steady = {p.id for p in scenario.steady_state}
    best: list[ProbeResult] | None = None
    for i in range(len(scenario.fix.accepted)):
        failing = [results[p.id] for j, p in pairs if j == i and results[p.id].ok is False]
        if best is None or len(failing) < len(best):
            best = failing
    parts = []
    for r in best or []:
        value = r.to_dict()["value"]
        if r.id in steady or r.kind not in SECRET_LIMIT_KINDS:
            parts.append(f"{r.id} = {value} (wanted {r.tolerance})")
        else:
            parts.append(f"{r.id}: a change this fix needs is not in place")
    unknown = sorted({p.id for _, p in pairs if results[p.id].ok is None})
    if parts:
        return "; ".join(parts)
    if unknown:
        return "no measurement yet for " + ", ".join(unknown) + " (too little traffic or too few labels in the window)"
    return "no accepted end state held long enough"
