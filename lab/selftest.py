"""The scenario self-test: `faultline scenarios test PATH... [--seeds N] [--time-scale X] [--json]`.

The catalog's own test, for any scenario file (tests/catalog/ calls this same code): on one private lab (or a
running one, `--lab-url`), for each file and each of N seeds,
- `solve` (seeds 1..N): the steady state breaks (or the scenario's `page:` fires), the reference solution with the
  right diagnosis is verified as a fix, grades at least 90 with full diagnosis credit and no collateral penalty,
  and the learner who does nothing until the first move grades below 50 (the grade is a pure function of the
  journal, so the journal cut before the learner's first move is exactly an attempt where nobody acted);
- `wrong-fix` (seeds N+1..2N, when the scenario has a `wrong_fix`): it breaks, the wrong fix's claim is rejected
  and penalised, the grade stays below 90;
- after every run, the stack is back at its baseline: no attempt, fault or scenario process left, every service
  ready, configs, versions, replicas and proxies as before, and a real scoring request answered by v1 (on the LLM
  track: a real completion streamed through the gateway, every LLM replica serving v1).
The report lists per scenario, per run, per check: ok or not, the grade and, for a failed check, the failing
probes (value and limit) from the attempt's journal.

Exit codes: 0 every check passed; 1 the test could not be carried out (the stack did not start, the lab refused a
request); 2 a file is not a valid scenario (its problems are printed as file:line: field: message); 4 a check
failed.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lab import parts
from lab.client import LabClient, LabError
from lab.grader import grade
from lab.parts.loadgen import NAME as LOADGEN
from lab.parts.registry import NAME as REGISTRY
from lab.scenario import ScenarioError, check_file, load_scenario, render
from lab.scenario.loader import CATALOG_DIR, SUFFIX
from lab.scenario.vocab import replica_number, replica_of

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_FAILED = 0, 1, 2, 4
DEFAULT_SEEDS = 2
DEFAULT_TIME_SCALE = 0.05
HEALTHY_WAIT_S = 120.0
PASS_GRADE = 90
IDLE_GRADE = 50
# The learner's first move: what an attempt where nobody acted never has.
MOVES = ("console_op", "diagnosis_submitted", "fix_claimed", "hint_taken")

Guard = Callable[[Any], contextlib.AbstractContextManager[Any]]


def _no_guard(_sc: Any) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def log(msg: str) -> None:
    print(f"[test] {msg}", file=sys.stderr, flush=True)


def config_services() -> list[str]:
    """The single-instance parts with a live config (GET /admin/config): what a run must leave as it found it."""
    return [p.name for p in parts.parts() if p.settable and not p.replicated]


def lab_track(tracks: Sequence[str]) -> str:
    """`faultline up --track` for a lab that runs scenarios of these tracks: the one, or `all` for several."""
    wanted = sorted(set(tracks)) or ["fraud"]
    return wanted[0] if len(wanted) == 1 else "all"


def rendered(path: Path, seed: int, time_scale: float) -> Any:
    return render(load_scenario(path), seed, time_scale)


def scenario_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files named, and every scenario file of the folders named, in order; a bare catalog id (`frozen-streams`,
    not a file here) is the catalog's scenarios/ID.yaml, as `faultline run ID` takes it."""
    out: list[Path] = []
    for p in map(Path, paths):
        catalog = CATALOG_DIR / f"{p.name}{SUFFIX}"
        if not p.exists() and p.suffix != SUFFIX and p.name == str(p) and catalog.is_file():
            p = catalog
        out += sorted(p.glob(f"*{SUFFIX}")) if p.is_dir() else [p]
    return out


# --- one run ------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    scenario: Any
    mode: str
    code: int
    attempt_id: str
    debrief: dict[str, Any]
    events: list[dict[str, Any]]
    seconds: float
    log: list[str] = field(default_factory=list)

    def summary(self) -> str:
        d = self.debrief
        b = d["breakdown"]
        parts = {k: b[k]["points"] for k in ("diagnosis", "fix", "time", "hints")}
        return (f"{self.scenario.id} seed {self.scenario.seed} {self.mode}: broke={d['broke']} fixed={d['fixed']} "
                f"score={d['score']} {parts} collateral={[c['pattern'] for c in b['collateral']]} "
                f"end={d.get('end_reason')!r} ({self.seconds:.0f}s)")

    def journal(self) -> str:
        """The attempt's journal, one short line per event: what a failure message needs to be diagnosed."""
        t0 = self.events[0]["at"] if self.events else 0.0
        lines = []
        for e in self.events:
            data = e["data"]
            keys = ("fault_id", "probe", "ok", "value", "op", "args", "seq", "reason", "slo", "state", "summary",
                    "error")
            brief = {k: data[k] for k in keys if k in data}
            lines.append(f"  +{e['at'] - t0:6.1f}s {e['type']} {brief}"[:240])
        return "\n".join(lines)

    def failure(self, what: str) -> str:
        return f"{what}: {self.summary()}\n{self.journal()}"

    def failing_probes(self) -> list[str]:
        """`id = value (wanted tolerance)` of every probe a fix claim was rejected on, else of the steady-state
        probes last seen violated."""
        out: list[str] = []
        for e in self.events:
            if e["type"] == "fix_rejected":
                out += [f"{p['id']} = {p['value']} (wanted {p['tolerance']})" for p in e["data"].get("probes") or []]
        if out:
            return list(dict.fromkeys(out))
        last: dict[str, dict[str, Any]] = {}
        for e in self.events:
            if e["type"] == "probe_result":
                last[e["data"]["probe"]] = e["data"]
        return [f"{k} = {d['value']} (wanted {d['tolerance']})" for k, d in last.items() if d.get("ok") is False]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def idle_grade(res: RunResult) -> dict[str, Any]:
    """The grade of the same attempt had nobody acted: its journal cut before the learner's first move."""
    cut = next((i for i, e in enumerate(res.events) if e["type"] in MOVES), len(res.events))
    return grade(res.scenario, res.events[:cut])


def reset_check(res: RunResult) -> Check:
    """The engine's reset to the baseline before the attempt went through: a step that failed even after its retry
    leaves the attempt on a stack that is not the one its scenario describes."""
    ready = next((e["data"] for e in res.events if e["type"] == "stack_ready"), {})
    errors = (ready.get("reset") or {}).get("errors") or []
    return Check("reset to the baseline before it", not errors, "; ".join(errors))


def solve_checks(res: RunResult) -> list[Check]:
    d = res.debrief
    weights = res.scenario.scoring.weights
    diag = d["breakdown"]["diagnosis"]
    idle = idle_grade(res)
    return [
        reset_check(res),
        Check("breaks", bool(d["broke"]), "" if d["broke"] else "the steady state never broke and nothing paged"),
        Check("solution fixes it", res.code == 0 and bool(d["fixed"]),
              "" if d["fixed"] else "the reference solution's fix claim was not verified"),
        Check(f"solution grades >= {PASS_GRADE}", d["score"] >= PASS_GRADE, f"score {d['score']}"),
        Check("full diagnosis credit", abs(diag["points"] - weights.diagnosis) < 1e-6,
              f"{diag['points']} of {weights.diagnosis}"),
        Check("no collateral", d["breakdown"]["collateral"] == [],
              "; ".join(str(c.get("reason") or c["pattern"]) for c in d["breakdown"]["collateral"])),
        Check(f"inaction grades < {IDLE_GRADE}", bool(idle["broke"]) and not idle["fixed"]
              and idle["score"] < IDLE_GRADE, f"score {idle['score']} (broke={idle['broke']}, fixed={idle['fixed']})"),
    ]


def wrong_fix_checks(res: RunResult) -> list[Check]:
    d = res.debrief
    rejected = any(e["type"] == "fix_rejected" for e in res.events)
    return [
        reset_check(res),
        Check("breaks", bool(d["broke"]), "" if d["broke"] else "the steady state never broke and nothing paged"),
        Check("wrong fix does not pass", res.code == 0 and not d["fixed"],
              "the wrong fix was verified as a fix" if d["fixed"] else ""),
        Check("wrong fix's claim rejected", rejected, "" if rejected else "no fix claim was ever rejected"),
        Check(f"wrong fix penalised, grade < {PASS_GRADE}", d["score"] < PASS_GRADE and d["breakdown"]["penalties"] > 0,
              f"score {d['score']}, penalties {d['breakdown']['penalties']}"),
    ]


# --- the lab a self-test runs on -----------------------------------------------------------------------------------


class SelfTestLab:
    """A running lab (its URL) on which runs are driven as `faultline run --lab-url` drives them. `guard(scenario)`
    wraps each run (the catalog test holds its CPU lock there)."""

    def __init__(self, url: str, guard: Guard = _no_guard) -> None:
        self.url = url
        self.guard = guard
        self.client = LabClient(url)
        self.http = httpx.Client(timeout=30, trust_env=False)
        self.baseline: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.call(method, path, body)

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/api/status")

    def service_url(self, name: str) -> str:
        return next(s["url"] for s in self.status()["services"] if s["name"] == name)

    def config(self, name: str) -> dict[str, Any]:
        r = self.http.get(self.service_url(name) + "/admin/config")
        r.raise_for_status()
        return r.json()

    def replicas(self) -> list[str]:
        """Every track's replicas that run (model-N, llm-N)."""
        return sorted(s["name"] for s in self.status()["services"] if replica_of(s["name"]) is not None)

    def running_services(self) -> list[str]:
        return [s["name"] for s in self.status()["services"]]

    def capture_baseline(self) -> None:
        """Configs of every service before any attempt: what a run must leave behind."""
        running = set(self.running_services())
        self.baseline = {n: self.config(n) for n in [*config_services(), *self.replicas()] if n in running}

    def _extend_baseline(self) -> None:
        """A track the lab started for an attempt (beside the running one) joins the baseline as the lab reset it:
        its replicas were not there when the baseline was captured."""
        known = {replica_of(n)[0] for n in self.baseline if replica_of(n) is not None}  # type: ignore[index]
        for name in self.replicas():
            track = replica_of(name)[0]  # type: ignore[index]
            if track not in known and name not in self.baseline:
                self.baseline[name] = self.config(name)

    def abort_active(self) -> None:
        active = self.call("GET", "/api/attempts/active")["attempt"]
        if active is None:
            return
        r = self.client.http.post(f"/api/attempts/{active['attempt_id']}/abort", json={"reason": "self-test cleanup"})
        if r.status_code not in (200, 409):
            raise LabError(f"could not abort attempt {active['attempt_id']}: {r.status_code} {r.text[:300]}")

    def run(self, path: Path, seed: int, mode: str, time_scale: float) -> RunResult:
        """One attempt, driven as `faultline run --lab-url` drives it; never leaves an attempt running. A file
        outside the catalog is sent as a document (the lab validates it and journals it)."""
        from lab.runner import in_catalog, run_attempt

        template = load_scenario(path)
        sc = render(template, seed, time_scale)
        document = None if in_catalog(path) else template._template
        # A run that failed half-way was aborted; a new attempt starts with the engine's own reset to the baseline.
        self.abort_active()
        t0 = time.monotonic()
        try:
            with self.guard(sc):
                attempt_id, code = run_attempt(self.client, sc, mode, give_up_after=None, document=document)
        except (LabError, httpx.HTTPError) as exc:
            self.abort_active()
            raise LabError(f"{sc.id} seed {seed} {mode}: the run could not be carried out: {exc}"
                           + self._why_it_ended()) from exc
        debrief = self.call("GET", f"/api/attempts/{attempt_id}/debrief")
        events = self.call("GET", f"/api/attempts/{attempt_id}/events")
        return RunResult(sc, mode, code, attempt_id, debrief, events, time.monotonic() - t0)

    def _why_it_ended(self) -> str:
        """The latest attempt's end reason (an attempt the lab ended on its own says why there), or ""."""
        try:
            last = self.call("GET", "/api/attempts?limit=1")
            if not last or last[0]["status"] == "running":
                return ""
            reason = self.call("GET", f"/api/attempts/{last[0]['id']}/debrief").get("end_reason")
        except (LabError, httpx.HTTPError):
            return ""
        return f" (attempt {last[0]['id']} ended: {reason})" if reason else ""

    # --- the stack as a run must leave it -------------------------------------------------------------------

    def health_problems(self) -> list[str]:
        """Everything that differs from a healthy, clean baseline stack; empty when all is well."""
        problems: list[str] = []
        if self.call("GET", "/api/attempts/active")["attempt"] is not None:
            problems.append("an attempt is still running")
        faults = self.call("GET", "/api/faults")
        if faults["active"]:
            problems.append(f"faults still active: {[f['fault_id'] for f in faults['active']]}")
        procs = self.call("GET", "/api/faults/processes")
        if procs:
            problems.append(f"scenario processes still running: {procs}")
        st = self.status()
        if st["phase"] != "running":
            problems.append(f"stack phase {st['phase']}")
        for s in st["services"]:
            if s["name"] == LOADGEN:
                continue
            if not s["ready"] or s["state"] != "running":
                problems.append(f"{s['name']} is {s['state']} (ready={s['ready']})")
        self._extend_baseline()
        replicas = sorted(s["name"] for s in st["services"] if replica_of(s["name"]) is not None)
        if replicas != sorted(n for n in self.baseline if replica_of(n) is not None):
            problems.append(f"replicas {replicas}")
        for p in st["proxies"]:
            if not p["enabled"] or p["toxics"]:
                problems.append(f"proxy {p['name']} enabled={p['enabled']} toxics={p['toxics']}")
        if problems:
            return problems  # the rest needs every service up
        for name, before in self.baseline.items():
            now = self.config(name)
            diff = sorted(k for k in set(before) | set(now) if k != "replicas" and before.get(k) != now.get(k))
            if diff:
                problems.append(f"{name} config differs from its baseline: "
                                + ", ".join(f"{k}={now.get(k)!r} (was {before.get(k)!r})" for k in diff))
        registry = self.service_url(REGISTRY)
        production = [m["version"] for m in self.http.get(registry + "/v1/models?stage=production").json()]
        canary = [m["version"] for m in self.http.get(registry + "/v1/models?stage=canary").json()]
        if production != ["v1"] or canary:
            problems.append(f"registry production={production} canary={canary}")
        for r in replicas:
            served = self.http.get(self.service_url(r) + "/v1/models").json()
            # a model replica names its default version; an LLM replica lists the one it serves (OpenAI's shape)
            default = served.get("default") if replica_number(r) is not None else (served.get("data") or [{}])[0].get(
                "id")
            if default != "v1":
                problems.append(f"{r} serves {default} by default")
        return problems

    def complete_once(self, public_url: str) -> dict[str, Any]:
        """A short completion through the gateway's LLM route, as a client sends it."""
        r = self.http.post(public_url + "/v1/completions", json={"prompt": "The weather today", "max_tokens": 4})
        ctype = r.headers.get("content-type", "")
        return {"status": r.status_code, **(r.json() if ctype.startswith("application/json") else {})}

    def score_once(self, public_url: str) -> dict[str, Any]:
        from services.trainer.generator import Generator

        body = {k: v for k, v in Generator(seed=7).sample(1)[0].items() if k != "label"}
        body["transaction_id"] = f"self-test-{time.time_ns()}"
        r = self.http.post(public_url + "/v1/score", json=body)
        ctype = r.headers.get("content-type", "")
        return {"status": r.status_code, **(r.json() if ctype.startswith("application/json") else {})}

    def baseline_problems(self, timeout_s: float = HEALTHY_WAIT_S) -> list[str]:
        """The baseline reset runs after an attempt has ended: wait for it; [] once the stack is clean."""
        public_url = self.status()["public_url"]
        deadline = time.monotonic() + timeout_s
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = self.health_problems()
            if not problems:
                problems = self._requests_answered(public_url)
                if not problems:
                    return []
            time.sleep(1.0)
        return problems

    def _requests_answered(self, public_url: str) -> list[str]:
        """A real request of every track the lab runs, answered as at the baseline."""
        tracks = {replica_of(n)[0] for n in self.replicas()}  # type: ignore[index]
        problems = []
        if "fraud" in tracks:
            answer = self.score_once(public_url)
            if not (answer["status"] == 200 and answer.get("fallback") is None and answer.get("model_version") == "v1"):
                problems.append(f"a scoring request answered {answer}")
        if "llm" in tracks:
            answer = self.complete_once(public_url)
            if answer["status"] != 200 or not answer.get("choices"):
                problems.append(f"a completion answered {str(answer)[:300]}")
        return problems

    def wait_healthy(self, public_url: str | None = None, timeout_s: float = HEALTHY_WAIT_S) -> None:
        problems = self.baseline_problems(timeout_s)
        if problems:
            raise AssertionError("the stack was not healthy and clean after the run: " + "; ".join(problems))


# --- the self-test ------------------------------------------------------------------------------------------------


def run_report(res: RunResult, checks: list[Check]) -> dict[str, Any]:
    failed = [c for c in checks if not c.ok]
    return {"seed": res.scenario.seed, "mode": res.mode, "attempt_id": res.attempt_id, "ok": not failed,
            "score": res.debrief["score"], "broke": res.debrief["broke"], "fixed": res.debrief["fixed"],
            "seconds": round(res.seconds, 1), "checks": [c.to_dict() for c in checks],
            "failing_probes": res.failing_probes() if failed else [],
            "journal": res.journal().splitlines() if failed else []}


def selftest_file(lab: SelfTestLab, path: Path, seeds: int, time_scale: float) -> dict[str, Any]:
    """Every run of one scenario file; {"file", "id", "ok", "runs": [...]}."""
    sc = rendered(path, 1, time_scale)
    plan = [(s, "solve") for s in range(1, seeds + 1)]
    if sc.wrong_fix:
        plan += [(s, "wrong-fix") for s in range(seeds + 1, 2 * seeds + 1)]
    runs = []
    for seed, mode in plan:
        log(f"{sc.id} seed {seed} {mode}")
        res = lab.run(path, seed, mode, time_scale)
        checks = solve_checks(res) if mode == "solve" else wrong_fix_checks(res)
        problems = lab.baseline_problems()
        checks.append(Check("stack back at its baseline", not problems, "; ".join(problems)))
        runs.append(run_report(res, checks))
        log(f"{sc.id} seed {seed} {mode}: {'ok' if runs[-1]['ok'] else 'FAILED'} (score {res.debrief['score']})")
    note = "" if sc.wrong_fix else "no wrong_fix: the wrong-fix runs were skipped"
    return {"file": str(path), "id": sc.id, "ok": all(r["ok"] for r in runs), "runs": runs, "note": note}


@contextlib.contextmanager
def _lab(lab_url: str | None, home: str | None, replicas: int, track: str = "fraud",
         llm_replicas: int = 2) -> Iterator[SelfTestLab]:
    from lab.privatelab import PrivateLab, source_registry

    private = None
    if lab_url is None:
        log(f"starting a private stack ({track} track, {replicas} replicas)")
        private = PrivateLab.start(source_registry(Path(home) if home else None), replicas=replicas, track=track,
                                   llm_replicas=llm_replicas)
        lab_url = private.url
    lab = SelfTestLab(lab_url)
    try:
        lab.capture_baseline()
        problems = lab.baseline_problems()
        if problems:
            raise LabError("the stack is not healthy before the test: " + "; ".join(problems))
        yield lab
    finally:
        lab.close()
        if private is not None:
            log("tearing the stack down")
            private.stop()


def text_report(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r['ok'] else 'FAIL'}  {r['id']}  ({r['file']})")
        if r.get("problems"):
            lines += [f"    {p}" for p in r["problems"]]
        if r.get("note"):
            lines.append(f"    note: {r['note']}")
        for run in r.get("runs", []):
            lines.append(f"    seed {run['seed']} {run['mode']}: {'ok' if run['ok'] else 'FAILED'} — score "
                         f"{run['score']}, broke={run['broke']}, fixed={run['fixed']} ({run['seconds']:.0f}s)")
            for c in run["checks"]:
                detail = f" — {c['detail']}" if c["detail"] else ""
                lines.append(f"      [{'ok' if c['ok'] else 'FAIL'}] {c['check']}{detail}")
            if run["failing_probes"]:
                lines.append("      failing probes: " + "; ".join(run["failing_probes"]))
    passed = sum(1 for r in results if r["ok"])
    lines.append(f"{passed} of {len(results)} scenario(s) passed")
    return "\n".join(lines)


def self_test(paths: Sequence[str | Path], seeds: int = DEFAULT_SEEDS, time_scale: float = DEFAULT_TIME_SCALE,
              as_json: bool = False, lab_url: str | None = None, home: str | None = None) -> int:
    files = scenario_files(paths)
    if not files:
        print("faultline scenarios test: no scenario files given", file=sys.stderr)
        return EXIT_ERROR
    invalid: list[dict[str, Any]] = []
    valid: list[Path] = []
    for path in files:
        scenario, problems = check_file(path)
        if scenario is None or problems:
            invalid.append({"file": str(path), "id": path.stem, "ok": False, "problems": problems, "runs": []})
        else:
            valid.append(path)
    if invalid:
        for r in invalid:
            for line in r["problems"]:
                print(line)
        print(f"{len(invalid)} invalid scenario file(s); nothing was run", file=sys.stderr)
        return EXIT_INVALID
    try:
        loaded = [load_scenario(p) for p in valid]
        # The private lab runs the tracks of the scenarios under test (a lab at --lab-url starts a missing track
        # itself, beside the running one, when an attempt needs it).
        replicas = max([s.stack.replicas for s in loaded if s.track == "fraud"] or [2])
        llm_replicas = max([s.stack.replicas for s in loaded if s.track == "llm"] or [2])
        results = []
        with _lab(lab_url, home, max(2, replicas), lab_track([s.track for s in loaded]), llm_replicas) as lab:
            for path in valid:
                results.append(selftest_file(lab, path, seeds, time_scale))
    except (LabError, ScenarioError) as exc:
        print(f"faultline scenarios test: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(results, indent=2) if as_json else text_report(results))
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_FAILED
