"""The console and attempt commands of `faultline`, all thin clients of the running lab's HTTP API (lab/client.py;
a LabError they raise is printed by lab/cli.py's main as `faultline: MESSAGE`, exit code 1).

`add_commands(sub, common)` (called by lab/cli.py's build_parser) adds:
- the console: `status`, `logs`, `metrics`, `trace`, `drift`, `slo`, `deploys`, `config show|set`, `distributions`,
  `decisions`, `status-codes`, `upstreams`, `inspect`, `send`, `generate`, `eval`, `restart`,
  `scale`, `drain`, `undrain`, `deploy`, `rollback`, `promote`, `retrain`, `kill`, `traffic` — each one
  `POST /api/console/{op}`. Commands lab/cli.py already has for the stack (status, logs, scale, restart,
  traffic, and metrics/drift/slo if present) keep their own behaviour in the sandbox and go through the console
  while an attempt runs, so every learner action is journaled;
- the attempt: `attempt start|status|abort`, `hint`, `declare`, `pin N`, `diagnose`, `fixed`, `debrief`,
  `history`, `progress`;
- the headless runner: `run SCENARIO [--solve|--wrong-fix] [--seed N] [--time-scale X] [--json]` (lab/runner.py).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from lab.client import LabError, api

EXIT_OK, EXIT_ERROR = 0, 1
Handler = Callable[[argparse.Namespace], int]


def active_attempt(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running attempt's state, or None (also when the lab has no attempts component)."""
    try:
        return api(args, "GET", "/api/attempts/active", timeout=15)["attempt"]
    except LabError:
        return None


def console(args: argparse.Namespace, op: str, op_args: dict[str, Any]) -> int:
    body = {k: v for k, v in op_args.items() if v is not None}
    res = api(args, "POST", f"/api/console/{op}", body)
    print(json.dumps(res["data"], indent=2) if getattr(args, "json", False) else res["text"])
    if res.get("seq") is not None and not getattr(args, "json", False):
        print(f"[output #{res['seq']}: `faultline pin {res['seq']}` to keep it as evidence for your diagnosis]")
    return EXIT_OK


TRACKS = ("fraud", "llm")
TRACK_HELP = ("which track: needed on a lab running both when the version does not say it (v1 is both a fraud and "
              "an LLM version)")


# --- commands lab/cli.py already has: the console while an attempt runs ------------------------------------------


def _wrap(original: Handler | None, op: str, to_args: Callable[[argparse.Namespace], dict[str, Any]]) -> Handler:
    def run(args: argparse.Namespace) -> int:
        read_only = op == "traffic" and args.rps is None and args.profile is None and not args.stop
        if original is not None and read_only:
            return original(args)  # showing the traffic changes nothing: the stack's own command
        # an LLM replica's metrics are its own vLLM figures, which only the console reads
        own_figures = op == "metrics" and _other_replica(getattr(args, "service", None))
        if original is None or own_figures or active_attempt(args) is not None:
            code = console(args, op, to_args(args))
            if op == "logs" and getattr(args, "follow", False):
                return _follow(args)
            return code
        return original(args)

    return run


def _other_replica(name: str | None) -> bool:
    """`name` is a replica of another track than the fraud one (llm-N)."""
    from lab import parts

    part = parts.part_for(name) if name else None
    return part is not None and part.replicated and part is not parts.replica_part()


def _follow(args: argparse.Namespace) -> int:
    since = time.time()
    while True:
        time.sleep(0.5)
        got = api(args, "GET", f"/api/services/{args.service}/logs",
                  params={"since": since, **({"grep": args.grep} if args.grep else {}),
                          **({"regex": "true"} if args.grep and getattr(args, "regex", False) else {})}, timeout=15)
        for line in got["lines"]:
            print(f"{line['ts']} {line['line']}", flush=True)
            since = line["t"]


WRAPPED: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "status": ("status", lambda a: {}),
    "logs": ("logs", lambda a: {"service": a.service, "grep": a.grep, "tail": a.tail,
                                "regex": True if getattr(a, "regex", False) else None}),
    "scale": ("scale", lambda a: {"replicas": a.replicas, "track": getattr(a, "track", None)}),
    "restart": ("restart", lambda a: {"service": a.service}),
    "traffic": ("traffic", lambda a: {"rps": a.rps, "profile": a.profile}),
    "metrics": ("metrics", lambda a: {"service": getattr(a, "service", None)}),
    "drift": ("drift", lambda a: {"feature": getattr(a, "feature", None)}),
    "slo": ("slo", lambda a: {}),
}


# --- console commands -----------------------------------------------------------------------------------------


def _value(text: str) -> Any:
    """A config value from the command line: JSON when it parses (300, true, ["model-1"]), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _console_cmd(op: str, to_args: Callable[[argparse.Namespace], dict[str, Any]]) -> Handler:
    def run(args: argparse.Namespace) -> int:
        return console(args, op, to_args(args))

    return run


def _add_console_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    def new(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        common(sp)
        sp.add_argument("--json", action="store_true", help="print the structured result")
        return sp

    def ensure(name: str, help_text: str, build: Callable[[argparse.ArgumentParser], None]) -> None:
        if name in sub.choices:
            parser = sub.choices[name]
            op, to_args = WRAPPED[name]
            parser.set_defaults(func=_wrap(parser.get_default("func"), op, to_args))
            return
        sp = new(name, help_text)
        build(sp)
        op, to_args = WRAPPED[name]
        sp.set_defaults(func=_wrap(None, op, to_args))

    ensure("metrics", "derived metrics (one service, or all)",
           lambda sp: sp.add_argument("service", nargs="?"))
    ensure("drift", "input drift of the live traffic against the production model's reference",
           lambda sp: sp.add_argument("--feature"))
    ensure("slo", "SLO states (and, in an attempt, the scenario's steady state)", lambda sp: None)
    for name in ("status", "logs", "scale", "restart", "traffic"):
        if name in sub.choices:
            ensure(name, "", lambda sp: None)

    sp = new("trace", "send a few real requests and show the slowest, hop by hop")
    sp.add_argument("--limit", type=int, help="how many of the slowest to show (default 5)")
    sp.set_defaults(func=_console_cmd("trace", lambda a: {"limit": a.limit}))

    sp = new("deploys", "model versions: registry stages, lineage, metrics; gateway routing; what each replica serves")
    sp.add_argument("--track", choices=TRACKS, help=TRACK_HELP)
    sp.set_defaults(func=_console_cmd("deploys", lambda a: {"track": a.track}))

    sp = new("reference", "a model version's training reference: score quantiles and histogram, the share above "
             "its calibrated threshold, each feature's distribution (default: the production version)")
    sp.add_argument("version", nargs="?")
    sp.set_defaults(func=_console_cmd("reference", lambda a: {"version": a.version}))

    cfg = sub.add_parser("config", help="a service's live config: show, or set one key")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="show a service's live config")
    common(show)
    show.add_argument("--json", action="store_true")
    show.add_argument("service")
    show.set_defaults(func=_console_cmd("config_show", lambda a: {"service": a.service}))
    cset = cfg_sub.add_parser("set", help="set one key (JSON value, e.g. 300, true, '[\"model-1\"]')")
    common(cset)
    cset.add_argument("--json", action="store_true")
    cset.add_argument("service")
    cset.add_argument("key")
    cset.add_argument("value", type=_value)
    cset.set_defaults(func=_console_cmd("config_set", lambda a: {"service": a.service, "key": a.key,
                                                                 "value": a.value}))

    for name, help_text in (("drain", "stop routing to a replica"), ("undrain", "route to a replica again")):
        sp = new(name, help_text)
        sp.add_argument("replica")
        sp.set_defaults(func=_console_cmd(name, lambda a: {"replica": a.replica}))

    sp = new("deploy", "roll a model version out to every replica, or as a canary")
    sp.add_argument("version")
    sp.add_argument("--canary", type=float, help="share of traffic for the new version (0..1, exclusive)")
    sp.add_argument("--part", choices=("all", "weights", "tokenizer", "generation_config"),
                    help="LLM track: deploy one part of the version alone (default: all)")
    sp.add_argument("--track", choices=TRACKS, help=TRACK_HELP)
    sp.set_defaults(func=_console_cmd("deploy", lambda a: {"version": a.version, "canary": a.canary,
                                                           "part": a.part, "track": a.track}))
    for name, help_text in (("rollback", "back to VERSION: production, 100%% of traffic, canary removed"),
                            ("promote", "make VERSION production, 100%% of traffic")):
        sp = new(name, help_text)
        sp.add_argument("version")
        sp.add_argument("--track", choices=TRACKS, help=TRACK_HELP)
        sp.set_defaults(func=_console_cmd(name, lambda a: {"version": a.version, "track": a.track}))

    sp = new("retrain", "train a new version on recent labelled traffic and register it (staging)")
    sp.add_argument("--window", type=float, dest="window_s", help="seconds of recent traffic (default 600)")
    sp.add_argument("--wait", type=float, dest="wait_s",
                    help="seconds to wait first, for late labels to come in (default 0)")
    sp.set_defaults(func=_console_cmd("retrain", lambda a: {"window_s": a.window_s, "wait_s": a.wait_s}))

    sp = new("distributions", "quantiles and a histogram of each request feature and the score, live vs training")
    sp.add_argument("--feature", help="one feature (or `score`): its histogram too")
    sp.set_defaults(func=_console_cmd("distributions", lambda a: {"feature": a.feature}))
    sp = new("decisions", "decline rate, score histogram, confusion matrix and cost-weighted loss")
    sp.set_defaults(func=_console_cmd("decisions", lambda a: {}))
    sp = new("status-codes", "HTTP status codes per route (one service, or all)")
    sp.add_argument("service", nargs="?")
    sp.set_defaults(func=_console_cmd("status_codes", lambda a: {"service": a.service}))
    sp = new("upstreams", "per-upstream latency as the gateway sees it: feature store, each replica")
    sp.set_defaults(func=_console_cmd("upstreams", lambda a: {}))
    sp = new("inspect", "the request inspector: recent requests with features, score and decision")
    sp.add_argument("--limit", type=int, help="how many (default 20)")
    sp.set_defaults(func=_console_cmd("inspect", lambda a: {"limit": a.limit}))
    sp = new("send", "send one scoring request through the gateway and show the answer")
    sp.add_argument("amount", type=float, help="amount in dollars, e.g. 42.5 (try 4250 to test cents)")
    sp.add_argument("--merchant-category", dest="merchant_category")
    sp.add_argument("--hour", type=int)
    sp.add_argument("--country")
    sp.add_argument("--card-present", dest="card_present", type=_value, help="true or false")
    sp.add_argument("--device-age-days", dest="device_age_days", type=float)
    sp.add_argument("--card-id", dest="card_id")
    sp.set_defaults(func=_console_cmd("send", lambda a: {k: getattr(a, k) for k in (
        "amount", "merchant_category", "hour", "country", "card_present", "device_age_days", "card_id")}))

    sp = new("generate", "LLM track: stream one completion through the gateway (or to one replica) with its "
             "timings: TTFT, ITL, tokens/s")
    sp.add_argument("prompt")
    sp.add_argument("--max-tokens", dest="max_tokens", type=int, help="1..256 (default 32)")
    sp.add_argument("--replica", help="send to this LLM replica (llm-N) instead of the gateway")
    sp.add_argument("--temperature", type=float, help="0..2 (default: the version's generation config)")
    sp.set_defaults(func=_console_cmd("generate", lambda a: {k: getattr(a, k) for k in (
        "prompt", "max_tokens", "replica", "temperature")}))
    sp = new("eval", "LLM track: canary perplexity of a fixed held-out text on each replica and each version")
    sp.set_defaults(func=_console_cmd("eval", lambda a: {}))

    sp = new("kill", "kill a process the scenario started (see `status`)")
    sp.add_argument("pid", type=int)
    sp.set_defaults(func=_console_cmd("kill", lambda a: {"pid": a.pid}))


# --- attempts -----------------------------------------------------------------------------------------------------


def _state_text(st: dict[str, Any]) -> str:
    lines = [f"{st.get('title', st['scenario_id'])} — attempt {st['attempt_id']} (seed {st['seed']}, "
             f"time scale {st['time_scale']}): {st['phase']}" + (f", {st['progress']}" if st.get("progress") and
                                                                 st["phase"] not in ("finished", "aborted") else "")]
    if st.get("clock_s") is not None:
        lines.append(f"clock {st['clock_s']:.0f}s" + (f" of {st['deadline_s']:.0f}s" if st.get("deadline_s") else "")
                     + (f"; paged at {st['paged_at_s']:.0f}s" if st.get("paged") else "; no page yet"))
    for p in st.get("steady_state") or []:
        mark = {True: "ok", False: "VIOLATED", None: "?"}[p["ok"]]
        lines.append(f"  {p['id']:20} {mark:9} value {p['value']}  ({p['tolerance']})")
    hints = st.get("hints")
    if hints:
        lines.append(f"hints taken: {len(hints['taken'])}, left: {hints['left']}"
                     + (f" (next costs {hints['next_cost']})" if hints.get("next_cost") is not None else ""))
    fix = st.get("fix")
    if fix and (fix["claims"] or fix["verifying"]):
        lines.append(f"fix: {'verifying…' if fix['verifying'] else fix['last']}")
    if st.get("score") is not None:
        lines.append(f"score {st['score']:g}/100 — `faultline debrief {st['attempt_id']}`")
    return "\n".join(lines)


def _current(args: argparse.Namespace) -> str:
    if getattr(args, "attempt", None):
        return args.attempt
    st = active_attempt(args)
    if st is None:
        raise LabError("no attempt is running — start one with `faultline attempt start SCENARIO`")
    return st["attempt_id"]


def cmd_attempt_start(args: argparse.Namespace) -> int:
    body = {"scenario_id": args.scenario, "seed": args.seed, "time_scale": args.time_scale}
    st = api(args, "POST", "/api/attempts", {k: v for k, v in body.items() if v is not None})
    while args.wait and st["phase"] in ("preparing", "warming"):
        time.sleep(0.5)
        st = api(args, "GET", f"/api/attempts/{st['attempt_id']}")
    print(json.dumps(st, indent=2) if args.json else _state_text(st) + "\n\n" + st["briefing"].rstrip())
    return EXIT_OK


def cmd_attempt_status(args: argparse.Namespace) -> int:
    st = api(args, "GET", f"/api/attempts/{_current(args)}")
    print(json.dumps(st, indent=2) if args.json else _state_text(st))
    return EXIT_OK


def cmd_attempt_abort(args: argparse.Namespace) -> int:
    st = api(args, "POST", f"/api/attempts/{_current(args)}/abort", {"reason": args.reason} if args.reason else None)
    print(_state_text(st))
    return EXIT_OK


def cmd_hint(args: argparse.Namespace) -> int:
    h = api(args, "POST", f"/api/attempts/{_current(args)}/hint")
    print(f"hint {h['index'] + 1} (cost {h['cost']}):\n{h['text']}")
    return EXIT_OK


def cmd_declare(args: argparse.Namespace) -> int:
    api(args, "POST", f"/api/attempts/{_current(args)}/declare")
    print("incident declared: the diagnosis is open (`faultline diagnose`)")
    return EXIT_OK


def cmd_pin(args: argparse.Namespace) -> int:
    res = api(args, "POST", f"/api/attempts/{_current(args)}/pin", {"seq": args.seq})
    print("pinned as evidence: " + ", ".join(f"#{s}" for s in res["pinned"]))
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace) -> int:
    attempt = _current(args)
    if not args.answers:
        st = api(args, "GET", f"/api/attempts/{attempt}")
        if not st["diagnosis"].get("open"):
            print("the diagnosis opens when the page fires, or declare an incident: `faultline declare`")
        for q in st["diagnosis"]["questions"]:
            print(f"{q['id']}: {q['prompt']}")
            for o in q["options"]:
                print(f"    {o['id']:24} {o['label']}")
        print("\nanswer with `faultline diagnose QUESTION=OPTION ...`, e.g. "
              + " ".join(f"{q['id']}={q['options'][0]['id']}" for q in st["diagnosis"]["questions"]))
        return EXIT_OK
    answers = {}
    for pair in args.answers:
        if "=" not in pair:
            raise LabError(f"{pair!r}: answers are QUESTION=OPTION")
        q, o = pair.split("=", 1)
        answers[q] = o
    api(args, "POST", f"/api/attempts/{attempt}/diagnosis", {"answers": answers})
    print("diagnosis submitted: " + ", ".join(f"{k}={v}" for k, v in answers.items()))
    return EXIT_OK


def cmd_fixed(args: argparse.Namespace) -> int:
    attempt = _current(args)
    res = api(args, "POST", f"/api/attempts/{attempt}/fixed")
    print(f"fix claimed: verifying (windows roll over in {res['settle_s']:g}s, then an accepted state must hold "
          f"{' or '.join(f'{h:g}s' for h in res['hold_s'])})")
    while args.wait:
        time.sleep(1)
        st = api(args, "GET", f"/api/attempts/{attempt}")
        if not st["fix"]["verifying"]:
            print(st["fix"]["last"])
            if st.get("score") is not None:
                print(f"score {st['score']:g}/100 — `faultline debrief {attempt}`")
            return EXIT_OK if (st["fix"]["last"] or "").startswith("verified") else EXIT_ERROR
    return EXIT_OK


def cmd_debrief(args: argparse.Namespace) -> int:
    attempt = args.attempt
    if attempt is None:
        history = api(args, "GET", "/api/attempts", params={"limit": 1})
        if not history:
            raise LabError("no attempt yet")
        attempt = history[0]["id"]
    d = api(args, "GET", f"/api/attempts/{attempt}/debrief")
    print(json.dumps(d, indent=2) if args.json else d["text"])
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    rows = api(args, "GET", "/api/attempts", params={"limit": args.limit})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for a in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(a["started_at"]))
        score = "-" if a["score"] is None else f"{a['score']:g}"
        print(f"{started}  {a['id']:44} {a['status']:9} score {score:>5}")
    return EXIT_OK


def cmd_progress(args: argparse.Namespace) -> int:
    p = api(args, "GET", "/api/progress")
    if args.json:
        print(json.dumps(p, indent=2))
        return EXIT_OK
    print(f"{p['attempts']} attempt(s) on {p['scenarios_tried']} scenario(s)")
    for s in p["skills"]:
        best = "-" if s["mean_best_score"] is None else f"{s['mean_best_score']:g}"
        print(f"  {s['skill']:14} tried {s['tried']}/{s['scenarios']} scenario(s), mean best score {best}")
    return EXIT_OK


def _add_attempt_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    at = sub.add_parser("attempt", help="start, follow or abort an attempt at a scenario")
    at_sub = at.add_subparsers(dest="attempt_command", required=True)
    start = at_sub.add_parser("start", help="start an attempt (one at a time)")
    common(start)
    start.add_argument("scenario")
    start.add_argument("--seed", type=int)
    start.add_argument("--time-scale", type=float, help="compress every duration (e.g. 0.2)")
    start.add_argument("--wait", action="store_true", help="return once the scenario clock runs")
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=cmd_attempt_start)
    status = at_sub.add_parser("status", help="the attempt's state")
    common(status)
    status.add_argument("attempt", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_attempt_status)
    abort = at_sub.add_parser("abort", help="give up: faults are reverted and the attempt is graded")
    common(abort)
    abort.add_argument("attempt", nargs="?")
    abort.add_argument("--reason")
    abort.set_defaults(func=cmd_attempt_abort)

    sp = sub.add_parser("hint", help="reveal the next hint (it costs points)")
    common(sp)
    sp.add_argument("--attempt")
    sp.set_defaults(func=cmd_hint)
    sp = sub.add_parser("declare", help="declare an incident before the page: the diagnosis opens")
    common(sp)
    sp.add_argument("--attempt")
    sp.set_defaults(func=cmd_declare)
    sp = sub.add_parser("pin", help="pin a console output (#N, printed under it) as evidence for the diagnosis")
    common(sp)
    sp.add_argument("seq", type=int)
    sp.add_argument("--attempt")
    sp.set_defaults(func=cmd_pin)
    sp = sub.add_parser("diagnose", help="show the diagnosis questions, or answer them: QUESTION=OPTION ...")
    common(sp)
    sp.add_argument("answers", nargs="*")
    sp.add_argument("--attempt")
    sp.set_defaults(func=cmd_diagnose)
    sp = sub.add_parser("fixed", help="claim the incident fixed: the steady state must hold to be verified")
    common(sp)
    sp.add_argument("--attempt")
    sp.add_argument("--wait", action="store_true", help="wait for the verdict")
    sp.set_defaults(func=cmd_fixed)
    sp = sub.add_parser("debrief", help="an ended attempt's grade, timeline, ideal path and lesson")
    common(sp)
    sp.add_argument("attempt", nargs="?", help="default: the latest attempt")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_debrief)
    sp = sub.add_parser("history", help="past attempts with their scores")
    common(sp)
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_history)
    sp = sub.add_parser("progress", help="progress by skill")
    common(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_progress)


def _add_run_command(sub: Any) -> None:
    from lab.runner import add_arguments, cmd_run

    sp = sub.add_parser("run", help="headless: start a private stack, run a scenario (optionally solved), grade it")
    add_arguments(sp)
    sp.set_defaults(func=cmd_run)


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the console, attempt and run commands to `faultline`'s subparsers."""
    _add_console_commands(sub, common)
    _add_attempt_commands(sub, common)
    _add_run_command(sub)
