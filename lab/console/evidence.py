"""Evidence operations: distributions, decisions, status_codes, upstreams (the monitor's figures a debrief cites),
and the request inspector: inspect (recent requests as the gateway scored them) and send (one typed scoring request
through the gateway, its answer shown).

They only read, except `send`, which scores one transaction like any client would (journaled like every op).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation, table
from lab.parts.gateway import NAME as GATEWAY

# The evidence a debrief may quote, as the words it uses (a pattern on the ideal path's text), and, per operation,
# the marker its output always carries for it. tests/scenario/test_ideal_path_evidence.py checks that every ideal-path
# step quoting one of these names an operation that shows it; tests/attempts/test_console_evidence.py checks each
# marker against the real output. Extend both when an operation learns to show more.
EVIDENCE_TERMS: dict[str, str] = {
    "decline": r"\bdeclin(?:e|es|ed|ing)\b",
    "median": r"\bmedian\b",
    "psi": r"\bPSI\b",
    "status code": r"\b[45][0-9][0-9]s?\b(?! ?(?:ms|MiB|KiB|s\b))",
    "score": r"\bscores?\b",
    "accuracy": r"\baccuracy\b",
    "recall": r"\brecall\b",
    "precision": r"\bprecision\b",
    "restarts": r"\brestarts\b",
}
SHOWS: dict[str, dict[str, str]] = {
    "slo": {"accuracy": "accuracy", "recall": "recall"},  # the quality objectives (default SLOs) by name
    "metrics": {"decline": "DECLINE RATE", "score": "MEAN SCORE", "accuracy": "accuracy", "recall": "recall",
                "precision": "precision", "restarts": "restarts"},
    "decisions": {"decline": "decline rate", "score": "score histogram", "accuracy": "accuracy", "recall": "recall",
                  "precision": "precision"},
    "distributions": {"median": "LIVE/TRAIN MEDIAN", "score": "score"},
    "drift": {"psi": "psi", "score": "(model score)"},
    "status_codes": {"status code": "CODE"},
    "status": {"restarts": "RESTARTS"},
    "inspect": {"score": "SCORE", "decline": "DECISION"},
    "send": {"score": "score", "decline": "decision"},
}
EVIDENCE_PATTERNS = {term: re.compile(p, re.IGNORECASE if term != "psi" else 0) for term, p in EVIDENCE_TERMS.items()}


def quoted_evidence(text: str) -> set[str]:
    """The evidence terms a debrief text quotes."""
    return {term for term, pattern in EVIDENCE_PATTERNS.items() if pattern.search(text)}


DEFAULT_INSPECT = 20
INSPECT_FIELDS = ("amount", "merchant_category", "hour", "country", "card_present", "device_age_days")


def _pct(value: Any) -> str:
    return num(None if value is None else 100.0 * value, "{:.1f}%")


def _g(value: Any) -> str:
    return num(value, "{:.4g}")


def distributions_text(report: dict[str, Any]) -> str:
    feats = report.get("features") or []
    lines = [f"distributions: live window of {report.get('window', 0)} requests against the training sample of "
             f"{report.get('reference_version') or '-'} ({report.get('reference_rows', 0)} rows)"]
    numeric = [f for f in feats if f["kind"] in ("numeric", "score")]
    if numeric:
        rows = [["FEATURE", "", "P5", "P25", "P50", "P75", "P95", "LIVE/TRAIN MEDIAN"]]
        for f in numeric:
            for side in ("reference", "live"):
                q = f[side]
                rows.append([f["name"] if side == "reference" else "", "train" if side == "reference" else "live",
                             *(_g(q[k]) for k in ("p5", "p25", "p50", "p75", "p95")),
                             ("x" + _g(f["median_ratio"])) if side == "live" and f["median_ratio"] is not None
                             else ""])
        lines += ["", table(rows)]
    if len(feats) == 1:  # one feature picked: its histogram too
        f = feats[0]
        lines += ["", f"{f['name']} histogram (share of requests per bin; bins are the training deciles):"]
        for b in f["histogram"]:
            label = b.get("category") or f"{_g(b.get('from')) if b.get('from') is not None else '-inf'} .. " \
                                          f"{_g(b.get('to')) if b.get('to') is not None else '+inf'}"
            lines.append(f"  {label:24} train {_pct(b['reference']):>6} {'#' * round(20 * b['reference']):20}  "
                         f"live {_pct(b['live']):>6} {'#' * round(20 * b['live'])}")
    else:
        cats = [f for f in feats if f["kind"] == "categorical"]
        for f in cats:
            top = sorted(f["histogram"], key=lambda b: -b["live"])[:4]
            shares = [f"{b['category']} {_pct(b['live'])} (train {_pct(b['reference'])})" for b in top]
            lines.append(f"{f['name']}: " + ", ".join(shares))
    return "\n".join(lines)


@operation("distributions")
def distributions(ctx: ConsoleContext, args: Any) -> OpResult:
    report = ctx.monitor.distributions(args.feature)
    if not report.get("features"):
        raise ConsoleError("no distributions yet: the monitor has no training reference or live window "
                           "(it refreshes every few seconds)", 404)
    return OpResult(report, distributions_text(report))


def decisions_text(d: dict[str, Any]) -> str:
    lines = [f"decline rate {_pct(d.get('decline_rate'))} over the last {num(d.get('window_s'), '{:g}')} s"]
    for v, f in (d.get("versions") or {}).items():
        lines.append(f"  {v}: decline rate {_pct(f.get('decline_rate'))}, {num(f.get('rps'))} rps, "
                     f"mean score {num(f.get('score_mean'), '{:.3f}')}")
    buckets = (d.get("score") or {}).get("buckets") or []
    if buckets:
        lines += ["", "score histogram (share of scored requests, by upper bound):"]
        lines += [f"  <= {str(b):5} {_pct(f):>6} {'#' * round(40 * f)}" for b, f in buckets]
    c = d.get("confusion") or {}
    lines += ["", f"confusion matrix from {num(c.get('labels'), '{:.0f}')} labels over the last "
                  f"{num(d.get('quality_window_s'), '{:g}')} s:",
              table([["", "DECLINED", "APPROVED"],
                     ["fraud", num(c.get("tp"), "{:.0f}"), num(c.get("fn"), "{:.0f}")],
                     ["legitimate", num(c.get("fp"), "{:.0f}"), num(c.get("tn"), "{:.0f}")]]),
              f"accuracy {_pct(d.get('accuracy'))}, recall {_pct(d.get('recall'))}, "
              f"precision {_pct(d.get('precision'))} (failed requests count as wrong decisions)",
              f"cost-weighted loss {num(d.get('cost_per_label'), '{:.3f}')} per labelled request "
              f"(a missed fraud costs {num(d['costs']['missed_fraud'], '{:g}')}, a false decline "
              f"{num(d['costs']['false_decline'], '{:g}')})"]
    return "\n".join(lines)


@operation("decisions")
def decisions(ctx: ConsoleContext, args: Any) -> OpResult:
    d = ctx.monitor.decisions()
    return OpResult(d, decisions_text(d))


@operation("status_codes")
def status_codes(ctx: ConsoleContext, args: Any) -> OpResult:
    snapshot = ctx.monitor.metrics()
    services = snapshot.get("services") or {}
    names = [ctx.check_service(args.service)] if args.service else [n for n in services if n in ctx.services()]
    data: dict[str, Any] = {"window_s": snapshot.get("window_s"), "services": {}}
    rows = [["SERVICE", "ROUTE", "CODE", "REQUESTS", "SHARE OF ROUTE"]]
    for name in names:
        codes = (services.get(name) or {}).get("status_codes") or {}
        data["services"][name] = codes
        for route, by_code in codes.items():
            total = sum(by_code.values()) or 1.0
            rows += [[name, route, code, num(n, "{:.0f}"), _pct(n / total)] for code, n in by_code.items()]
    text = f"HTTP status codes per route over the last {num(snapshot.get('window_s'), '{:g}')} s"
    return OpResult(data, text + "\n" + (table(rows) if len(rows) > 1 else "(no requests in the window)"))


@operation("upstreams")
def upstreams(ctx: ConsoleContext, args: Any) -> OpResult:
    snapshot = ctx.monitor.metrics()
    ups = snapshot.get("upstream_latency") or {}
    rows = [["UPSTREAM (as the gateway sees it)", "RPS", "ERRORS", "P50 MS", "P95 MS", "P99 MS"]]
    rows += [[u, num(f.get("rps")), _pct(f.get("error_rate")), num(f.get("p50_ms")), num(f.get("p95_ms")),
              num(f.get("p99_ms"))] for u, f in ups.items()]
    text = f"per-upstream latency from {GATEWAY} over the last {num(snapshot.get('window_s'), '{:g}')} s\n"
    return OpResult({"window_s": snapshot.get("window_s"), "upstreams": ups},
                    text + (table(rows) if ups else "(no upstream calls in the window)"))


@operation("inspect")
def inspect(ctx: ConsoleContext, args: Any) -> OpResult:
    limit = args.limit or DEFAULT_INSPECT
    http = ctx.http
    got = http.call("GET", http.service_url(GATEWAY) + f"/v1/recent?limit={limit}", GATEWAY)
    items = list(reversed(got.get("items") or []))  # newest first
    rows = [["AGE", "TRANSACTION", *(f.upper() for f in INSPECT_FIELDS), "SCORE", "DECISION", "VERSION", "LABEL"]]
    now = time.time()
    for it in items:
        rows.append([f"{max(0.0, now - float(it.get('ts') or now)):.0f}s", str(it.get("transaction_id"))[:18],
                     *(_g(it.get(f)) if isinstance(it.get(f), float) else str(it.get(f)) for f in INSPECT_FIELDS),
                     num(it.get("score"), "{:.3f}"), str(it.get("decision")), str(it.get("model_version")),
                     str(it.get("label", "-"))])
    text = (f"{len(items)} most recent request(s) the gateway scored (of {got.get('total_scored')}), newest first; "
            f"features as the model saw them\n" + table(rows))
    return OpResult({"items": items, "total_scored": got.get("total_scored")}, text)


@operation("send")
def send(ctx: ConsoleContext, args: Any) -> OpResult:
    body = {"transaction_id": f"console-{uuid.uuid4().hex[:12]}", **args.model_dump()}
    http = ctx.http
    t0 = time.perf_counter()
    try:
        r = http.http.request("POST", http.service_url(GATEWAY) + "/v1/score", json=body, timeout=10.0)
    except Exception as exc:  # noqa: BLE001 - the gateway's silence is the answer shown
        raise ConsoleError(f"send: {GATEWAY} did not answer: {exc!r}", 503) from None
    ms = (time.perf_counter() - t0) * 1000
    try:
        answer: Any = r.json()
    except ValueError:
        answer = r.text[:500]
    data = {"request": body, "status": r.status_code, "answer": answer, "ms": round(ms, 1)}
    if r.status_code == 200 and isinstance(answer, dict):
        head = (f"{r.status_code}: score {num(answer.get('score'), '{:.4f}')}, decision {answer.get('decision')} "
                f"(model {answer.get('model_version')}, {ms:.0f} ms)")
    else:
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        head = f"{r.status_code}: {detail}"
    text = head + "\nrequest: " + json.dumps(body) + "\nanswer: " + json.dumps(answer)
    return OpResult(data, text, summary=f"send amount={args.amount}: {head}"[:160])
