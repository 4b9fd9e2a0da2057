"""Investigate operations: status, logs, metrics, drift, slo, deploys, config_show (trace has its own module).

They only read. What they show is what an on-call engineer would see — process states, logs, metrics, configs,
registry versions — never the lab's own fault bookkeeping (no toxics, no fault ids).
"""

from __future__ import annotations

import json
from typing import Any

from lab import parts
from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation, table
from lab.console.llm import is_llm_replica, llm_deploys, replica_metrics
from lab.console.tracks import LLM, op_track
from lab.logbuffer import iso_utc
from lab.logsearch import BadSearch
from lab.parts.gateway import NAME as GATEWAY
from lab.stackclients import ServiceCallError, argv_config

STATUS_FIELDS = ("name", "state", "ready", "pid", "restarts", "last_exit", "rss_bytes", "cpu_percent")
DEFAULT_TAIL = 50


def _mib(n: Any) -> str:
    return f"{(n or 0) / 1048576:.0f}MiB"


def processes(ctx: ConsoleContext) -> list[dict[str, Any]]:
    """Processes on the host the scenario started (what `top` would show next to the services)."""
    out = []
    for p in ctx.faults.ctx.scenario_pids():
        argv = list(p.get("argv") or [])
        command = " ".join(["python", *argv[1:]] if argv and "python" in argv[0] else argv)
        out.append({"pid": p["pid"], "command": command, "cpu_percent": p.get("cpu_percent"),
                    "rss_bytes": p.get("rss_bytes")})
    return out


def _is_proxy_server(name: str) -> bool:
    part = parts.part_for(name)
    return part is not None and part.proxy_server


@operation("status")
def status(ctx: ConsoleContext, args: Any) -> OpResult:
    st = ctx.lab.status()
    services = [{k: s.get(k) for k in STATUS_FIELDS} for s in st["services"]
                if not _is_proxy_server(s["name"])]
    runner = ctx.lab.components.get("monitor")
    if ctx.attempt is not None and runner is not None:  # restarts since this attempt began, not since the lab did
        for s in services:
            s["restarts"] = runner.monitor.restarts_since_attempt(s["name"], s["restarts"])
    procs = processes(ctx)
    data = {"phase": st["phase"], "replicas": st.get("replicas"), "services": services, "processes": procs,
            "total_rss_bytes": st.get("total_rss_bytes")}
    rows = [["SERVICE", "STATE", "READY", "PID", "RSS", "CPU%", "RESTARTS", "LAST EXIT"]]
    for s in services:
        last = s["last_exit"]
        rows.append([s["name"], s["state"], "yes" if s["ready"] else "no", str(s["pid"] or "-"), _mib(s["rss_bytes"]),
                     num(s["cpu_percent"], "{:.0f}"), str(s["restarts"]),
                     f"{last['code']} {last['reason']}" if last else "-"])
    unready = [s["name"] for s in services if not s["ready"]]
    text = [f"stack {st['phase']}, {len(services)} services"
            + (f", not ready: {', '.join(unready)}" if unready else ", all ready"), table(rows)]
    if procs:
        prow = [["PID", "CPU%", "RSS", "COMMAND"]] + [[str(p["pid"]), num(p["cpu_percent"], "{:.0f}"),
                                                       _mib(p["rss_bytes"]), p["command"]] for p in procs]
        text += ["", "other processes on the host:", table(prow)]
    return OpResult(data, "\n".join(text))


@operation("logs")
def logs(ctx: ConsoleContext, args: Any) -> OpResult:
    name = ctx.check_service(args.service)
    tail = args.tail or DEFAULT_TAIL
    # During an attempt the incident starts with the scenario clock: the lab's own set-up (baseline reset, the
    # scenario's stack changes) happened before it and is not part of what the learner investigates.
    attempt = ctx.attempt
    since = getattr(attempt, "ready_at", None) if attempt is not None else None
    try:
        lines = ctx.stack.logs(name, args.grep or None, tail, since=since, regex=bool(args.regex))
    except BadSearch as exc:
        raise ConsoleError(str(exc), 400) from exc
    data = {"service": name, "grep": args.grep, "regex": bool(args.regex), "tail": tail, "lines": lines,
            "since": since, "setup": attempt is not None and since is None}
    matching = "matching the expression" if args.regex else "containing"
    head = f"{len(lines)} line(s) of {name}" + (f" {matching} {args.grep!r}" if args.grep else "")
    if since is not None:
        head += f" since the scenario clock started ({iso_utc(since)}; set-up before it is not shown)"
    elif attempt is not None:
        head += " — SET-UP: the scenario clock has not started yet"
    return OpResult(data, "\n".join([head] + [f"{ln['ts']} {ln['line']}" for ln in lines]))


def _service_metrics_text(name: str, s: dict[str, Any]) -> str:
    keys = ("up", "state", "rps", "error_rate", "p50_ms", "p95_ms", "p99_ms", "queue_ms", "compute_ms",
            "queue_p99_ms", "compute_p99_ms", "batch_size", "queue_depth", "inflight", "fallback_rate",
            "retry_rps", "rss_bytes", "cpu_percent", "restarts")
    lines = [f"{name} (last {num(s.get('window_s'), '{:g}')} s)"]
    lines += [f"  {k:16} {num(s[k], '{:.4g}') if isinstance(s[k], float) else s[k]}" for k in keys if k in s]
    ups = s.get("upstreams") or {}
    if ups:
        rows = [["UPSTREAM (as the gateway sees it)", "RPS", "ERRORS", "P99 MS"]]
        rows += [[u, num(f.get("rps")), num(None if f.get("error_rate") is None else 100 * f["error_rate"],
                                            "{:.1f}%"), num(f.get("p99_ms"))] for u, f in ups.items()]
        lines += ["", table(rows)]
    via = s.get("via_gateway")
    if via:
        lines.append(f"  seen from the gateway: {num(via.get('rps'))} rps, p99 {num(via.get('p99_ms'))} ms, "
                     f"errors {num(None if via.get('error_rate') is None else 100 * via['error_rate'], '{:.1f}%')}")
    return "\n".join(lines)


@operation("metrics")
def metrics(ctx: ConsoleContext, args: Any) -> OpResult:
    from lab.monitor.text import format_metrics

    if args.service is not None and is_llm_replica(args.service):
        return replica_metrics(ctx, ctx.check_service(args.service))
    snapshot = ctx.monitor.metrics()
    if args.service is None:
        return OpResult(snapshot, format_metrics(snapshot))
    name = ctx.check_service(args.service)
    if is_llm_replica(name):  # its own vLLM figures, read from its /metrics
        return replica_metrics(ctx, name)
    entry = (snapshot.get("services") or {}).get(name)
    if entry is None:
        raise ConsoleError(f"no metrics for {name} yet (the monitor scrapes once a second)", 404)
    data = {"service": name, "at": snapshot.get("at"), "window_s": snapshot.get("window_s"), **entry}
    text = _service_metrics_text(name, entry)
    if name == GATEWAY and "llm_rps" in entry:  # the LLM routes: server side, and as the clients measure them
        text += "\n\n" + _gateway_llm_text(entry)
    if name == GATEWAY and parts.DEFAULT_TRACK in ctx.stack.topology.tracks:  # the fraud model's quality
        data["versions"] = snapshot.get("versions")
        data["quality"] = {k: snapshot.get(k) for k in ("accuracy", "precision", "recall", "labels")}
        text += "\n\n" + _gateway_model_text(snapshot)
    return OpResult(data, text)


def _gateway_llm_text(g: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return num(None if v is None else 100 * v, "{:.1f}%")

    return "\n".join([
        "LLM routes (the gateway's own figures, then the clients')",
        f"  requests/s       {num(g.get('llm_rps'))}   errors {pct(g.get('llm_error_rate'))}   "
        f"rate-limited (429) {pct(g.get('rate_limited_rate'))}",
        f"  TTFT p50/p99     gateway {num(g.get('llm_ttft_p50_ms'))}/{num(g.get('llm_ttft_p99_ms'))} ms   "
        f"clients {num(g.get('client_ttft_p50_ms'))}/{num(g.get('client_ttft_p99_ms'))} ms",
        f"  ITL p50/p99      clients {num(g.get('client_itl_p50_ms'))}/{num(g.get('client_itl_p99_ms'))} ms",
        f"  e2e p50/p99      clients {num(g.get('client_e2e_p50_ms'))}/{num(g.get('client_e2e_p99_ms'))} ms",
        f"  output tokens/s  gateway {num(g.get('llm_output_tokens_per_s'))}   clients "
        f"{num(g.get('client_output_tokens_per_s'))}",
        f"  goodput          {pct(g.get('goodput_ratio'))} ({num(g.get('goodput_rps'))} rps)",
    ])


def _gateway_model_text(snapshot: dict[str, Any]) -> str:
    """By model version: traffic, decline rate, score; and quality on the labels (what a debrief cites)."""
    def pct(v: Any) -> str:
        return num(None if v is None else 100 * v, "{:.1f}%")

    rows = [["MODEL VERSION", "RPS", "DECLINE RATE", "MEAN SCORE", "MEDIAN SCORE"]]
    rows += [[v, num(f.get("rps")), pct(f.get("decline_rate")), num(f.get("score_mean"), "{:.3f}"),
              num(f.get("score_p50"), "{:.3f}")] for v, f in (snapshot.get("versions") or {}).items()]
    quality = (f"quality on {num(snapshot.get('labels'), '{:.0f}')} labels: accuracy {pct(snapshot.get('accuracy'))}, "
               f"recall {pct(snapshot.get('recall'))}, precision {pct(snapshot.get('precision'))}")
    return table(rows) + "\n" + quality


@operation("drift")
def drift(ctx: ConsoleContext, args: Any) -> OpResult:
    from lab.monitor.text import format_drift

    report = ctx.monitor.drift()
    if args.feature is not None:
        feats = [f for f in report.get("features") or [] if f.get("name") == args.feature]
        report = {**report, "features": feats, "drifted": [d for d in report.get("drifted") or []
                                                           if d == args.feature]}
        # picking a feature shows its detail: quantiles and histogram, live against training
        full = ctx.monitor.distributions(args.feature)
        if full.get("features"):
            from lab.console.evidence import distributions_text

            report["distribution"] = full["features"][0]
            return OpResult(report, format_drift(report) + "\n\n" + distributions_text(full))
    return OpResult(report, format_drift(report))


@operation("slo")
def slo(ctx: ConsoleContext, args: Any) -> OpResult:
    from lab.monitor.text import format_slo

    data = ctx.monitor.slo()
    text = format_slo(data)
    if ctx.attempt is not None:
        probes = ctx.attempt.steady_state_view()
        data = {**data, "steady_state": probes}
        rows = [["STEADY STATE", "KIND", "TARGET", "VALUE", "TOLERANCE", "OK"]]
        rows += [[p["id"], p["kind"], str(p.get("target") or "-"), num(p.get("value"), "{:.4g}")
                  if isinstance(p.get("value"), float) else str(p.get("value")), p["tolerance"],
                  {True: "yes", False: "NO", None: "?"}[p.get("ok")]] for p in probes]
        text = "scenario steady state:\n" + table(rows) + "\n\n" + text
    return OpResult(data, text)


@operation("deploys")
def deploys(ctx: ConsoleContext, args: Any) -> OpResult:
    if op_track(ctx, "deploys", args.track) == LLM:  # lab/console/tracks.py
        return llm_deploys(ctx)
    http = ctx.http
    try:
        versions = http.registry("GET", "/v1/models")
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc
    gateway = _config(ctx, GATEWAY)
    serving: dict[str, Any] = {}
    for replica in ctx.stack.topology.model_names():
        try:
            got = http.call("GET", http.service_url(replica) + "/v1/models", replica)
            serving[replica] = {"default": got.get("default"), "versions": [v["version"] for v in got["versions"]],
                                "ready": got.get("ready")}
        except ServiceCallError as exc:
            serving[replica] = {"error": str(exc)}
    listing = [{k: m.get(k) for k in ("version", "stage", "created_at", "metrics", "lineage", "variant", "sha256")}
               for m in versions]
    data = {"track": "fraud", "versions": listing, "routing": gateway.get("routing"), "drained": gateway.get("drained"),
            "replicas": serving}
    rows = [["VERSION", "STAGE", "AUC", "RECALL", "PRECISION", "THRESHOLD", "PARENT", "SOURCE", "CREATED"]]
    for m in listing:
        met, lin = m.get("metrics") or {}, m.get("lineage") or {}
        rows.append([m["version"], m.get("stage") or "-", num(met.get("auc"), "{:.3f}"), num(met.get("recall"),
                     "{:.3f}"), num(met.get("precision"), "{:.3f}"), num(met.get("threshold"), "{:.3f}"),
                     str(lin.get("parent") or "-"),
                     str(lin.get("source") or lin.get("variant") or "-"), str(m.get("created_at") or "-")[:19]])
    routing = gateway.get("routing") or {}
    text = [table(rows), "",
            "gateway routing: " + (", ".join(f"{v} {w:.0%}" for v, w in routing.items()) if routing
                                   else "every replica's default version"),
            "drained: " + (", ".join(gateway.get("drained") or []) or "none"),
            "gateway decision threshold: " + num(gateway.get("decision_threshold"), "{:g}")
            + " (decline when score >= it; THRESHOLD above is each version's calibrated value, where its metrics were"
            " measured: the lab starts the gateway at the served version's, and rollouts do not change it)"]
    for replica, s in serving.items():
        text.append(f"{replica}: " + (f"serves {s['default']} (loaded: {', '.join(s['versions'])})"
                                      if "error" not in s else f"unreachable: {s['error']}"))
    return OpResult(data, "\n".join(text))


def _config(ctx: ConsoleContext, name: str) -> dict[str, Any]:
    try:
        return ctx.http.get_config(name)
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


@operation("config_show")
def config_show(ctx: ConsoleContext, args: Any) -> OpResult:
    from lab.console.settable import settable as settable_keys

    name = ctx.check_service(args.service)
    try:
        config, live, note = ctx.http.get_config(name), True, "live config"
    except ServiceCallError as exc:
        if exc.status != 503:
            raise ConsoleError(str(exc), exc.status) from exc
        state = ctx.stack.supervisor.service_status(name)["state"]
        config, live = startup_config(ctx, name), False
        note = f"not answering (state {state}): the config it starts with"
    settable = sorted(k for k in config if k in settable_keys(name))
    lines = [f"{name} {note} ({len(config)} keys; settable with config_set: {', '.join(settable) or 'none'})"]
    lines += [f"  {k} = {json.dumps(v)}" for k, v in sorted(config.items())]
    return OpResult({"service": name, "config": config, "settable": settable, "live": live}, "\n".join(lines))


def startup_config(ctx: ConsoleContext, name: str) -> dict[str, Any]:
    """What a service that does not answer will start with: its last known full config (the lab's baseline), with
    its start-up `--config` on top."""
    manager = ctx.lab.components.get("attempts")
    snapshot = getattr(getattr(manager, "baseline", None), "snapshot", None) or {}
    config = dict((snapshot.get("configs") or {}).get(name) or {})
    config.update(argv_config(ctx.http.spec_argv(name)))
    return config
