"""Act operations: config_set, restart, scale, drain/undrain, deploy/rollback/promote, retrain, traffic, kill.

Each changes the running stack through the Lab's Python API (supervisor, stack) or the services' HTTP APIs, and
says in its result what changed. Limits a real on-call console would have: scaling within 1..6 replicas, config
keys from a whitelist (lab/console/settable.py), `kill` only for processes the scenario itself started, and
`traffic` only in the sandbox (during an attempt the scenario owns the traffic).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import re
import time
from typing import Any

from lab import parts
from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation
from lab.console.llm import check_llm_replica, is_llm_replica, llm_replicas, llm_rollout
from lab.console.rollout import TRAIN_TIMEOUT_S, canary_rollout, full_rollout, holder
from lab.console.settable import settable
from lab.console.tracks import LLM, op_track, version_track
from lab.parts.gateway import NAME as GATEWAY
from lab.rules import RuleError, attempt_refusal
from lab.stack import StackError
from lab.stackclients import ServiceCallError, argv_config
from services.common.schema import MODEL_FEATURES

MAX_CONSOLE_REPLICAS = 6
RESTART_WAIT_S = 60.0
# Readiness reasons that mean "getting there" (services' /readyz); any other reason held this long is an answer.
TRANSIENT_REASON = re.compile(r"(loading|warming|starting|waiting)\b", re.IGNORECASE)
STUCK_AFTER_S = 3.0
STARTING_WAIT_S = 30.0
RETRAIN_DEFAULT_WINDOW_S = 600.0
# Below these a model learns nothing worth a canary; the gateway holds at most 100,000 labelled rows.
RETRAIN_MIN_ROWS, RETRAIN_MAX_ROWS = 500, 100_000
RETRAIN_MIN_FRAUD = 25
RETRAIN_EPOCHS = 20
RETRAIN_MAX_WAIT_S = 600.0
RETRAIN_WAIT_STEP_S = 0.5
RETRAIN_FETCH_TIMEOUT_S = 60.0
RETRAIN_FIELDS = (*MODEL_FEATURES, "label", "ts")


def _http(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


def set_config(ctx: ConsoleContext, service: str, values: dict[str, Any]) -> dict[str, Any]:
    """PATCH the live config and keep it in the start-up `--config`, so a restart does not undo it."""
    return _http(ctx.http.rollout_config, service, values)


@operation("config_set")
def config_set(ctx: ConsoleContext, args: Any) -> OpResult:
    name = ctx.check_service(args.service)
    allowed = settable(name)
    if args.key not in allowed:
        raise ConsoleError(f"{args.key!r} cannot be set on {name}; settable keys: "
                           f"{', '.join(sorted(allowed)) or 'none'}", 422)
    try:
        before = _config_when_up(ctx, name).get(args.key)
        new = ctx.http.rollout_config(name, {args.key: args.value})
    except ServiceCallError as exc:
        if exc.status != 503:
            raise ConsoleError(str(exc), exc.status) from exc
        # It does not answer, or died between the read and the write (a crash loop between two OOM kills): the
        # start-up config is what its next start will use.
        return _set_offline(ctx, name, args.key, args.value)
    value = new.get(args.key)
    text = f"{name} {args.key}: {json.dumps(before)} -> {json.dumps(value)}"
    return OpResult({"service": name, "key": args.key, "before": before, "value": value, "live": True}, text)


def _config_when_up(ctx: ConsoleContext, name: str) -> dict[str, Any]:
    """Its live config; a service that is starting gets a moment to answer. ServiceCallError 503 when it does not."""
    try:
        return ctx.http.get_config(name)
    except ServiceCallError as exc:
        if exc.status != 503 or not _came_up(ctx, name):
            raise
        return ctx.http.get_config(name)


def _came_up(ctx: ConsoleContext, name: str) -> bool:
    """A service that is starting gets a moment to answer (a config change waits for it, as a rollout would)."""
    st = ctx.stack.supervisor.service_status(name)
    return st["pid"] is not None and st["state"] == "starting" and not ctx.stack.supervisor.wait_ready(
        [name], STARTING_WAIT_S)


def _set_offline(ctx: ConsoleContext, name: str, key: str, value: Any) -> OpResult:
    """The service does not answer (crash loop, backoff, stuck): the change goes into its start-up config, and a
    service with no live process is started on it now, as a config rollout restarts a crash-looping service. The
    service would validate the value only when it starts, so it is validated here first against the service's own
    config model: a bad value must not leave it crash-looping on its start-up config."""
    http = ctx.http
    _check_offline_value(name, argv_config(http.spec_argv(name)), key, value)
    http.persist_config(name, {key: value})
    st = ctx.stack.supervisor.service_status(name)
    started = http.ensure_running(name)
    if started:
        how = "started it on the new config"
    elif st["pid"] is not None:
        how = f"its running process (state {st['state']}) keeps its old config until it restarts"
    else:
        how = "it starts on the new config"
    text = (f"{name} did not answer: {key} = {json.dumps(value)} written to its start-up config; {how}")
    return OpResult({"service": name, "key": key, "before": None, "value": value, "live": False,
                     "state": st["state"], "started": started}, text)



def _check_offline_value(name: str, startup: dict[str, Any], key: str, value: Any) -> None:
    """ConsoleError 422 (the model's message) when the service would refuse `key = value` at start-up."""
    import importlib

    from pydantic import ValidationError

    part = parts.part_for(name)
    if part is None or part.config_model is None:  # the part declares its config model (lab/parts/)
        return
    module, _, cls = part.config_model.partition(":")
    model = getattr(importlib.import_module(module), cls)
    try:
        model.model_validate({**startup, key: value})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or key}: {e['msg']}" for e in exc.errors())
        raise ConsoleError(f"{name} did not answer, and would refuse this at start-up: {problems}", 422) from None


def _stack(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except StackError as exc:
        raise ConsoleError(str(exc), 409) from exc
    except RuleError as exc:  # lab/rules.py: refused before anything changed
        raise ConsoleError(str(exc), exc.status) from exc


@operation("restart")
def restart(ctx: ConsoleContext, args: Any) -> OpResult:
    name = ctx.check_service(args.service)
    t0 = time.monotonic()
    _stack(ctx.stack.restart, name)
    st, died = _wait_up_or_down(ctx, name)
    took = time.monotonic() - t0
    if st["ready"]:
        how = f"ready again after {took:.1f}s"
    elif died:
        last = st.get("last_exit") or {}
        how = (f"it exited again after {took:.1f}s ({last.get('reason') or 'exit'}, code {last.get('code')}); "
               f"state {st['state']}")
    elif st["not_ready_reason"]:
        how = f"up but not ready after {took:.1f}s: {st['not_ready_reason']}"
    else:
        how = f"not ready after {took:.0f}s, state {st['state']}"
    return OpResult({"service": name, "pid": st["pid"], "state": st["state"], "ready": st["ready"],
                     "last_exit": st.get("last_exit"), "seconds": round(took, 2)}, f"{name} restarted: {how}")


def _stuck_reason(reason: str | None) -> bool:
    """The service itself answered not-ready with a reason that is not progress (the supervisor's reason reads
    "/readyz answered 503: <the service's reason>"; unreachable means it is still starting)."""
    if not reason or " answered " not in reason or ": " not in reason:
        return False
    return not TRANSIENT_REASON.match(reason.split(": ", 1)[1])


def _wait_up_or_down(ctx: ConsoleContext, name: str) -> tuple[dict[str, Any], bool]:
    """(status, died): once the service is ready, or once the process the restart started has died (a crash loop
    answers at once instead of holding the console for RESTART_WAIT_S), or at the deadline."""
    supervisor = ctx.stack.supervisor
    now = time.monotonic()
    deadline = now + RESTART_WAIT_S
    first_pid = None
    reason, reason_since = None, now
    while True:
        st = supervisor.service_status(name)
        first_pid = first_pid or st["pid"]
        died = first_pid is not None and st["pid"] != first_pid
        now = time.monotonic()
        if st["not_ready_reason"] != reason:
            reason, reason_since = st["not_ready_reason"], now
        # Up but refusing to become ready for a reason that is not progress (a model it cannot load): waiting
        # longer changes nothing.
        stuck = _stuck_reason(reason) and now - reason_since >= STUCK_AFTER_S
        if st["ready"] or died or stuck or now >= deadline:
            return st, died
        time.sleep(0.05)


@operation("scale")
def scale(ctx: ConsoleContext, args: Any) -> OpResult:
    if not 1 <= args.replicas <= MAX_CONSOLE_REPLICAS:
        raise ConsoleError(f"replicas must be between 1 and {MAX_CONSOLE_REPLICAS} on this console", 422)
    # the track named, the only one running, or the attempt's (lab/console/tracks.py)
    track = op_track(ctx, "scale", args.track, str(args.replicas))
    before = len(llm_replicas(ctx)) if track == LLM else ctx.stack.topology.replicas
    t0 = time.monotonic()
    res = _stack(ctx.stack.scale, args.replicas, track=track)
    took = time.monotonic() - t0
    what = "LLM replicas" if track == LLM else "replicas"
    text = f"scaled from {before} to {res['replicas']} {what} ({', '.join(res['models'])}) in {took:.1f}s"
    return OpResult({"track": track, "before": before, **res, "seconds": round(took, 2)}, text,
                    resolved={"track": track})


def _drained(ctx: ConsoleContext, replica: str, drain: bool) -> OpResult:
    llm = is_llm_replica(replica)  # the gateway's one `drained` list holds both tracks' replicas
    name = check_llm_replica(ctx, replica) if llm else ctx.check_replica(replica)
    current = list(_http(ctx.http.get_config, GATEWAY).get("drained") or [])
    wanted = sorted(set(current) | {name}) if drain else [r for r in current if r != name]
    if wanted != current:
        set_config(ctx, GATEWAY, {"drained": wanted})
    serving = [r for r in (llm_replicas(ctx) if llm else ctx.stack.topology.model_names()) if r not in wanted]
    verb = "drained" if drain else "back in rotation"
    text = f"{name} {verb}; the gateway routes to: {', '.join(serving) or 'NO replica'}"
    if drain and not serving:
        text += (" — every LLM replica is drained: completions now fail" if llm
                 else " — every replica is drained: scoring now fails (or falls back)")
    return OpResult({"replica": name, "drained": wanted, "serving": serving}, text)


@operation("drain")
def drain(ctx: ConsoleContext, args: Any) -> OpResult:
    return _drained(ctx, args.replica, True)


@operation("undrain")
def undrain(ctx: ConsoleContext, args: Any) -> OpResult:
    return _drained(ctx, args.replica, False)


def _rollout_result(res: dict[str, Any], text: str, **resolved: Any) -> OpResult:
    return OpResult({"track": "fraud", **res}, text, resolved={"version": res["version"], "track": "fraud", **resolved})


@operation("deploy")
def deploy(ctx: ConsoleContext, args: Any) -> OpResult:
    version = ctx.resolve_version(args.version)
    if version_track(ctx, "deploy", version, args.track) == LLM:
        return llm_rollout(ctx, version, args.canary, "deployed", args.part)
    if args.part not in (None, "all"):
        raise ConsoleError(f"part {args.part!r}: a model version of this track deploys whole (parts are the LLM "
                           "track's: weights, tokenizer, generation_config)", 422)
    replicas = ctx.stack.topology.model_names()
    if args.canary is not None:
        res = canary_rollout(ctx.http, replicas, version, args.canary)
        text = f"{version} deployed as a canary taking {args.canary:.0%} of traffic (stage canary)"
        return _rollout_result(res, text, canary=args.canary)
    res = full_rollout(ctx.http, replicas, version)
    return _rollout_result(res, f"{version} deployed to every replica (stage production)")


@operation("promote")
def promote(ctx: ConsoleContext, args: Any) -> OpResult:
    version = ctx.resolve_version(args.version)
    if version_track(ctx, "promote", version, args.track) == LLM:
        return llm_rollout(ctx, version, None, "promoted")
    res = full_rollout(ctx.http, ctx.stack.topology.model_names(), version, archive_canary=False)
    return _rollout_result(res, f"{version} promoted: production, 100% of traffic")


@operation("rollback")
def rollback(ctx: ConsoleContext, args: Any) -> OpResult:
    version = ctx.resolve_version(args.version)
    if version_track(ctx, "rollback", version, args.track) == LLM:
        return llm_rollout(ctx, version, None, "rolled back to")
    res = full_rollout(ctx.http, ctx.stack.topology.model_names(), version, archive_canary=True)
    extra = f"; canary {res['canary_archived']} archived" if res.get("canary_archived") else ""
    return _rollout_result(res, f"rolled back to {version}: production, 100% of traffic{extra}")


def _retrain_window(ctx: ConsoleContext, window_s: float) -> tuple[float, float]:
    """(wall-clock seconds the window covers, the unix time it starts). The window is in scenario seconds: during
    an attempt it is scaled by the attempt's time scale (labels arrive in real time), and it never reaches back
    before the attempt began (earlier rows belong to another scenario's traffic)."""
    attempt = ctx.attempt
    scale = float(getattr(attempt, "scale", None) or 1.0) if attempt is not None else 1.0
    wall = window_s * scale
    since = time.time() - wall
    started = getattr(attempt, "started_at", None) if attempt is not None else None
    if started is not None:
        since = max(since, float(started))
    return wall, since


def _labelled_rows(ctx: ConsoleContext, since: float) -> list[dict[str, Any]]:
    """The gateway's labelled rows scored after `since` (its own port), reduced to what training needs."""
    url = f"{ctx.http.service_url(GATEWAY)}/v1/recent?labelled=1&since={since:.3f}&limit={RETRAIN_MAX_ROWS}"
    got = _http(ctx.http.call, "GET", url, "the gateway", timeout=RETRAIN_FETCH_TIMEOUT_S)
    return [{k: row.get(k) for k in RETRAIN_FIELDS} for row in got.get("items") or []]


def _too_few(n: int, fraud: int) -> str | None:
    """Why n labelled rows holding `fraud` fraud cases are not enough to train on, or None."""
    if n < RETRAIN_MIN_ROWS:
        return f"need at least {RETRAIN_MIN_ROWS} rows"
    if fraud == 0 or fraud == n:
        return "all of one class: nothing to learn to tell apart"
    if fraud < RETRAIN_MIN_FRAUD:
        return f"need at least {RETRAIN_MIN_FRAUD} fraud cases"
    if n - fraud < RETRAIN_MIN_ROWS // 2:
        return f"need at least {RETRAIN_MIN_ROWS // 2} legitimate ones"
    return None


def _span_text(rows: list[dict[str, Any]]) -> tuple[float | None, str]:
    stamps = [r["ts"] for r in rows if isinstance(r.get("ts"), int | float)]
    if not stamps:
        return None, "an unknown span"
    span = max(stamps) - min(stamps)
    return span, f"{span:.0f} s of traffic"


def _release_memory() -> None:
    """Hand the heap that a large retrain used back to the OS: 100,000 rows are ~100 MiB of Python objects in this
    long-lived process, garbage once the registry has them, but kept by the allocator otherwise."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)  # glibc only


@operation("retrain")
def retrain(ctx: ConsoleContext, args: Any) -> OpResult:
    """Train on the gateway's labelled recent traffic (`GET /v1/recent?labelled=1`): rows scored in the window
    whose late label has arrived, fine-tuning the production version (registry `POST /v1/train`, warm start).
    With `wait_s`, wait that long first, so that the window holds labels that arrived from now on."""
    try:
        return _retrain(ctx, args)
    finally:
        _release_memory()


def _retrain(ctx: ConsoleContext, args: Any) -> OpResult:
    window = args.window_s or RETRAIN_DEFAULT_WINDOW_S
    scale = float(getattr(ctx.attempt, "scale", None) or 1.0) if ctx.attempt is not None else 1.0
    wait = (args.wait_s or 0.0) * scale
    if wait > RETRAIN_MAX_WAIT_S:
        raise ConsoleError(f"wait_s: at most {RETRAIN_MAX_WAIT_S:.0f} s of wall clock "
                           f"({RETRAIN_MAX_WAIT_S / scale:.0f} scenario seconds here)", 422)
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait:  # labels arrive late: let a fresh batch of them in
        if ctx.attempt is not None and getattr(ctx.attempt, "status", "running") != "running":
            raise ConsoleError("the attempt ended while retrain was waiting for labels; nothing was trained", 409)
        time.sleep(min(RETRAIN_WAIT_STEP_S, max(0.0, wait - (time.monotonic() - t0))))
    waited = time.monotonic() - t0
    wall, since = _retrain_window(ctx, window)
    rows = _labelled_rows(ctx, since)
    fraud = sum(r["label"] == 1 for r in rows)
    covered = f"the last {window:g} s" + (f" ({wall:.0f} s at time scale {scale:g})" if wall != window else "")
    short = _too_few(len(rows), fraud)
    if short is not None:
        after = f" after waiting {waited:.0f} s" if wait else ""
        raise ConsoleError(f"only {len(rows)} labelled rows ({fraud} fraud) in {covered}{after}: {short}; labels "
                           "arrive late, wait or widen --window", 409)

    parent = holder(ctx.http, "production")
    span, span_text = _span_text(rows)
    origin = f"gateway /v1/recent?labelled=1, {covered}: {len(rows)} rows, {fraud} fraud"
    body: dict[str, Any] = {"rows": rows, "epochs": RETRAIN_EPOCHS, "seed": 0, "stage": "staging", "origin": origin}
    if parent is not None:
        body.update(parent=parent, warm_start=True)
    t1 = time.monotonic()
    meta = _http(ctx.http.registry, "POST", "/v1/train", body, timeout=TRAIN_TIMEOUT_S)
    took = time.monotonic() - t1
    m = meta.get("metrics") or {}
    training = meta.get("training") or {}
    lineage = meta.get("lineage") or {}
    test_rows, test_fraud = (training.get("rows") or {}).get("test"), training.get("test_fraud")
    start = f"fine-tuned from {parent}" if lineage.get("warm_start") else "from scratch"
    data = {"version": meta["version"], "stage": meta.get("stage"), "metrics": m, "rows": len(rows), "fraud": fraud,
            "window_s": window, "wall_window_s": round(wall, 1), "since": round(since, 3),
            "span_s": None if span is None else round(span, 1),
            "parent": parent, "warm_start": lineage.get("warm_start"), "waited_s": round(waited, 1),
            "seconds": round(took, 1), "test_rows": test_rows, "test_fraud": test_fraud,
            "source": "the gateway's labelled recent traffic"}
    waited_text = f"waited {waited:.0f} s for labels, then " if waited >= 1 else ""
    text = (f"{waited_text}trained {meta['version']} on {len(rows)} labelled rows ({fraud} fraud) from {covered} "
            f"({span_text}), {start}, in {took:.0f}s. Held-out {test_rows} rows ({test_fraud} fraud): "
            f"auc {num(m.get('auc'), '{:.3f}')}, recall {num(m.get('recall'), '{:.3f}')}, precision "
            f"{num(m.get('precision'), '{:.3f}')} at its threshold {num(m.get('threshold'), '{:.2f}')}. Registered "
            f"as staging — roll it out with `deploy {meta['version']} --canary 0.1` or `promote {meta['version']}`")
    return OpResult(data, text, labels={"retrained": meta["version"]})


@operation("traffic")
def traffic(ctx: ConsoleContext, args: Any) -> OpResult:
    refusal = attempt_refusal("traffic", ctx.attempt.id if ctx.attempt is not None else None)
    if refusal is not None:
        raise ConsoleError(refusal, 409)
    current = ctx.stack.traffic_state()
    # base_rps: the rate before the profile's multiplier (target_rps of a surge is 4x it)
    rps = args.rps if args.rps is not None else float(current.get("base_rps") or 20.0)
    state = _stack(ctx.stack.traffic, rps, args.profile)
    text = f"traffic: {state.get('target_rps')} rps, profile {state.get('profile')}"
    return OpResult(state, text)


@operation("kill")
def kill(ctx: ConsoleContext, args: Any) -> OpResult:
    scenario = ctx.faults.ctx  # the processes a scenario started are the fault package's
    owned = scenario.scenario_pids()
    if args.fault is not None:
        pids = [p["pid"] for p in owned if p.get("fault_id") == args.fault]
        if not pids:
            raise ConsoleError(f"no live process was started by {args.fault!r}", 404)
        pid = pids[0]
    else:
        pid = args.pid
    info = _http(scenario.kill_scenario_process, pid)
    argv = info.get("argv") or []
    text = f"killed pid {pid} ({' '.join(['python', *argv[1:]]) if argv else '?'})"
    return OpResult({"pid": pid, "cpu_percent": info.get("cpu_percent"), "rss_bytes": info.get("rss_bytes")}, text,
                    resolved={"pid": pid, "fault": info.get("fault_id")})
