"""The headless runner: `faultline run SCENARIO [--solve | --wrong-fix] [--seed N] [--time-scale X] [--json]`.

It starts its own lab and stack on a free block of ports, in a temporary FAULTLINE_HOME holding a copy of the
trained registry (`PrivateLab`, which tests use too), and drives one attempt through the lab's HTTP API
(lab/client.py), like any other client:
1. start the attempt with the seed (a scenario file outside the catalog is sent as a document: the lab validates
   it with the same loader, refuses an id of the catalog's with other content, and journals it like any other);
   wait until the steady state is violated after the injection, or the scenario's own `page:` fires (the page):
   the proof that the scenario breaks;
2. `--solve`: run the reference `solution` through the console (pinning its investigations' outputs as
   evidence), submit the scenario's answers (`diagnosis.answer`), claim fixed and wait for the verdict (a
   control's solution may hold no action: the claim then says nothing needs fixing);
   `--wrong-fix`: run `wrong_fix` instead, claim fixed, and give up once it is rejected;
   neither: do nothing for `--give-up-after` seconds (default: the scaled par detection time), then give up;
3. print the debrief (text, or `--json`: scenario, seed, broke, fixed, score, breakdown, timeline, ...);
4. tear everything down.
Exit code: 0 when the scenario behaved (it broke; solved: fixed; wrong fix: not fixed), 3 when it did not break,
4 when the solution did not fix it (or the wrong fix passed), 1 for any other failure. `--lab-url` runs the
attempt on an already running lab instead of a private one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.client import LabClient, LabError
from lab.privatelab import UP_TIMEOUT_S, PrivateLab, child_env, source_registry  # noqa: F401 (tests import them here)
from lab.scenario import ScenarioError, load_scenario, render, taxonomy
from lab.scenario.loader import CATALOG_DIR, SUFFIX
from lab.scenario.ops import INVESTIGATE_OPS, op_args

EXIT_OK, EXIT_ERROR, EXIT_NOT_BROKEN, EXIT_NOT_FIXED = 0, 1, 3, 4
POLL_S = 0.5


# The run could not be carried out (no models, the stack did not start, the lab refused): one LabError, like every
# `faultline` command's; the old name stays because tests/catalog/catalogkit.py catches it.
RunError = LabError


def log(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


# --- one run ------------------------------------------------------------------------------------------------------


def scenario_path(scenario: str) -> Path:
    path = Path(scenario)
    if path.suffix == SUFFIX and path.is_file():
        return path
    path = CATALOG_DIR / f"{scenario}{SUFFIX}"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(CATALOG_DIR.glob(f"*{SUFFIX}")))
        raise LabError(f"no scenario {scenario!r}; known: {known}")
    return path


def break_deadline_s(sc: Any) -> float:
    """How long after the stack is ready the page may take: every fault's delays, then a few probe windows."""
    scale = sc.time_scale
    delays = sum((f.when.at_s or 0.0) + (f.when.delay_s or 0.0) for f in sc.faults) * scale
    if sc.page is not None and sc.page.at_s is not None:  # an alert-paged scenario pages at its own time
        delays = max(delays, sc.page.at_s * scale)
    windows = max((getattr(p, "window_s", 0.0) for p in sc.steady_state), default=0.0) * scale
    return delays + 4 * max(windows, 3.0) + 30.0


def _state(client: LabClient, attempt_id: str) -> dict[str, Any]:
    return client.call("GET", f"/api/attempts/{attempt_id}")


def _wait(client: LabClient, attempt_id: str, until: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        st = _state(client, attempt_id)
        if until(st) or time.monotonic() > deadline:
            return st
        time.sleep(POLL_S)


def _console(client: LabClient, op: Any) -> dict[str, Any]:
    args = op_args(op)
    res = client.call("POST", f"/api/console/{op.op}", args)
    log(f"$ {' '.join([op.op, *(f'{k}={v}' for k, v in args.items())])}: {res['summary']}")
    return res


def _claim_and_wait(client: LabClient, attempt_id: str) -> dict[str, Any]:
    res = client.call("POST", f"/api/attempts/{attempt_id}/fixed")
    log(f"claimed fixed: settling {res['settle_s']}s, then holding {res['hold_s']}")
    budget = res["settle_s"] + max(res["hold_s"]) + 60.0
    return _wait(client, attempt_id, lambda s: not s["fix"]["verifying"], budget)


def in_catalog(path: Path) -> bool:
    """Whether `path` is the catalog's own file for its id (else `run` sends the lab the document itself)."""
    return path.resolve() == (CATALOG_DIR / f"{path.stem}{SUFFIX}").resolve()


def run_attempt(client: LabClient, sc: Any, mode: str, give_up_after: float | None,
                document: dict[str, Any] | None = None,
                before_acting: Callable[[], None] | None = None) -> tuple[str, int]:
    """Drive one attempt; returns (attempt id, exit code). `document`: the scenario file's data, for a file
    outside the catalog (the lab validates it with the same loader and refuses a catalog id with other content).
    `before_acting`: called after the page and before the first console op, for a caller that must see a symptom
    happen before the solution removes its cause (tests/compose waits there for the container's OOM kill)."""
    body: dict[str, Any] = {"seed": sc.seed, "time_scale": sc.time_scale}
    body.update({"scenario": document} if document is not None else {"scenario_id": sc.id})
    st = client.call("POST", "/api/attempts", body)
    attempt_id = st["attempt_id"]
    log(f"attempt {attempt_id} started")
    try:
        return _drive(client, sc, mode, give_up_after, attempt_id, before_acting)
    except BaseException as exc:  # an error or Ctrl-C: never leave an attempt running on someone's lab
        try:
            _abort(client, attempt_id, f"the headless run stopped: {exc!r}"[:300])
        except LabError as abort_exc:
            log(f"could not abort {attempt_id}: {abort_exc}")
        raise


def _drive(client: LabClient, sc: Any, mode: str, give_up_after: float | None, attempt_id: str,
           before_acting: Callable[[], None] | None = None) -> tuple[str, int]:
    st = _wait(client, attempt_id, lambda s: s["phase"] not in ("preparing", "warming"), 300)
    if st["phase"] != "running":
        raise LabError(f"the attempt did not start running: {st['phase']} ({st.get('end_reason')})")
    log("stack healthy, scenario clock running; waiting for the steady state to break")
    st = _wait(client, attempt_id, lambda s: s["paged"] or s["status"] != "running", break_deadline_s(sc))
    if not st["paged"]:
        log("the steady state never broke")
        _abort(client, attempt_id, "the scenario did not break")
        return attempt_id, EXIT_NOT_BROKEN
    log(f"broke: paged at {st['paged_at_s']}s on the scenario clock")
    if before_acting is not None:
        before_acting()
    code = EXIT_OK
    if mode == "solve":
        for op in sc.solution:
            res = _console(client, op)
            if op.op in INVESTIGATE_OPS and res.get("seq") is not None:  # the solution's looks are its evidence
                client.call("POST", f"/api/attempts/{attempt_id}/pin", {"seq": res["seq"]})
        # the first accepted option of each question (lab/scenario/taxonomy.py), never read off the form
        answers = {kind: accepted[0] for kind, accepted in taxonomy.answers(sc).items()}
        client.call("POST", f"/api/attempts/{attempt_id}/diagnosis", {"answers": answers})
        st = _claim_and_wait(client, attempt_id)
        if not (st["fix"]["last"] or "").startswith("verified") and st["status"] == "running":
            log(f"claim {st['fix']['last']}; claiming again once the windows roll over")  # noise on a busy host
            st = _claim_and_wait(client, attempt_id)
        verified = (st["fix"]["last"] or "").startswith("verified")
        log(f"fix {st['fix']['last']}")
        if not verified:
            _abort(client, attempt_id, "the reference solution did not fix it")
            code = EXIT_NOT_FIXED
    elif mode == "wrong-fix":
        for op in sc.wrong_fix or []:
            _console(client, op)
        st = _claim_and_wait(client, attempt_id)
        log(f"fix {st['fix']['last']}")
        if (st["fix"]["last"] or "").startswith("verified"):
            code = EXIT_NOT_FIXED  # a wrong fix must not pass
        else:
            _abort(client, attempt_id, "gave up after a wrong fix")
    else:
        wait_s = give_up_after if give_up_after is not None else sc.scoring.par_detect_s * sc.time_scale
        log(f"doing nothing for {wait_s:g}s, then giving up")
        time.sleep(wait_s)
        _abort(client, attempt_id, "gave up without acting (headless run)")
    _wait(client, attempt_id, lambda s: s["status"] != "running", 180)
    return attempt_id, code


def _abort(client: LabClient, attempt_id: str, reason: str) -> None:
    if _state(client, attempt_id)["status"] == "running":
        # 409: it ended between the two requests
        client.call("POST", f"/api/attempts/{attempt_id}/abort", {"reason": reason}, allow=(409,))


def report(debrief: dict[str, Any], mode: str, code: int, seconds: float) -> dict[str, Any]:
    return {
        "scenario": debrief["scenario"], "seed": debrief["seed"], "time_scale": debrief["time_scale"],
        "mode": mode, "attempt_id": debrief["attempt_id"], "broke": debrief["broke"], "fixed": debrief["fixed"],
        "score": debrief["score"], "ok": code == EXIT_OK, "exit_code": code, "seconds": round(seconds, 1),
        "breakdown": debrief["breakdown"], "timeline": debrief["timeline"], "faults": debrief["faults"],
        "ideal_path": debrief["ideal_path"], "learner_path": debrief["learner_path"],
        "what_happened": debrief["what_happened"], "lesson": debrief["lesson"], "end_reason": debrief["end_reason"],
    }


def run(scenario: str, seed: int, mode: str = "none", time_scale: float | None = None, as_json: bool = False,
        lab_url: str | None = None, give_up_after: float | None = None, home: str | None = None,
        keep: bool = False, backend: str = "process") -> int:
    t0 = time.monotonic()
    try:
        path = scenario_path(scenario)
        template = load_scenario(path)
        sc = render(template, seed, time_scale)
    except ScenarioError as exc:
        raise LabError("\n".join(exc.problems)) from exc
    document = None if in_catalog(path) else template._template
    if mode == "wrong-fix" and not sc.wrong_fix:
        raise LabError(f"scenario {sc.id} has no wrong_fix")
    private = None
    if lab_url is None:
        # on the scenario's track: an LLM scenario's private stack runs llm-N (and no fraud replicas)
        fraud = sc.track == "fraud"
        log(f"starting a private stack ({sc.track} track, {sc.stack.replicas} replicas)")
        private = PrivateLab.start(source_registry(Path(home) if home else None),
                                   replicas=sc.stack.replicas if fraud else 2, up_args=("--backend", backend),
                                   track=sc.track, llm_replicas=2 if fraud else sc.stack.replicas)
        lab_url = private.url
        log(f"stack up in {private.up_seconds}s at {lab_url} (home {private.home})")
    client = LabClient(lab_url)
    try:
        attempt_id, code = run_attempt(client, sc, mode, give_up_after, document)
        debrief = client.call("GET", f"/api/attempts/{attempt_id}/debrief")
    finally:
        client.close()
        if private is not None:
            log("tearing the stack down")
            private.stop(keep=keep)
    out = report(debrief, mode, code, time.monotonic() - t0)
    out["lab"] = {"url": lab_url, "private": private is not None,
                  "home": str(private.home) if private is not None else None}
    print(json.dumps(out, indent=2) if as_json else debrief["text"])
    return code


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("scenario", help="scenario id (scenarios/ID.yaml) or a path to a scenario file")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--solve", action="store_true", help="apply the reference solution and the right diagnosis")
    what.add_argument("--wrong-fix", action="store_true", help="apply the scenario's plausible wrong fix instead")
    sp.add_argument("--seed", type=int, default=1, help="variables' seed (default 1)")
    sp.add_argument("--time-scale", type=float, help="compress every duration (e.g. 0.2); default the scenario's")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--give-up-after", type=float, help="unsolved: seconds of inaction after the page "
                    "(default: the scaled par detection time)")
    sp.add_argument("--lab-url", help="run on this running lab instead of starting a private one")
    sp.add_argument("--home", help="where the trained registry comes from (default $FAULTLINE_HOME/./.faultline)")
    sp.add_argument("--keep", action="store_true", help="keep the private home (logs, journal) after the run")
    sp.add_argument("--backend", choices=("process", "compose"), default="process",
                    help="the private stack's services as processes (default) or containers (docs/compose.md)")


def cmd_run(args: argparse.Namespace) -> int:
    mode = "solve" if args.solve else "wrong-fix" if args.wrong_fix else "none"
    if args.time_scale is not None and not 0 < args.time_scale <= 10:
        print("faultline: --time-scale must be in (0, 10]", file=sys.stderr)
        return EXIT_ERROR
    try:
        return run(args.scenario, args.seed, mode, args.time_scale, args.json, args.lab_url, args.give_up_after,
                   args.home, args.keep, args.backend)
    except LabError as exc:
        print(f"faultline run: {exc}", file=sys.stderr)
        return EXIT_ERROR
