"""Helpers for the catalog test: one private lab shared by every run, attempts driven through the lab's HTTP API
with the headless runner's own driver (`lab.runner.run_attempt`), and the check that a run left the stack as it
found it.

The lab is started once (`lab.runner.PrivateLab`: a temporary home holding a copy of the trained registry, a free
block of ports); each run is one attempt on it, and the attempt engine resets the stack to its baseline between
attempts — the same path a learner's lab takes between two scenarios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cpulock
import httpx

from lab.runner import EXIT_OK, LabClient, RunError, run_attempt
from lab.scenario import load_scenario, render

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
HEALTHY_WAIT_S = 120.0
CONFIG_SERVICES = ("gateway", "feature-store", "registry")


def scenario_paths() -> list[Path]:
    """Every scenario of the catalog, by file name (a new file is picked up without touching this test)."""
    return sorted(SCENARIOS.glob("*.yaml"))


def rendered(path: Path, seed: int, time_scale: float) -> Any:
    return render(load_scenario(path), seed, time_scale)


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


class CatalogLab:
    """The shared private lab, through its JSON API and the services' own ports."""

    def __init__(self, url: str, lock_dir: Path) -> None:
        self.url = url
        self.lock_dir = lock_dir
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
        return sorted(s["name"] for s in self.status()["services"] if s["name"].startswith("model-"))

    def capture_baseline(self) -> None:
        """Configs of every service before any attempt: what a run must leave behind."""
        names = [*CONFIG_SERVICES, *self.replicas()]
        self.baseline = {n: self.config(n) for n in names}

    def abort_active(self) -> None:
        active = self.call("GET", "/api/attempts/active")["attempt"]
        if active is None:
            return
        r = self.client.http.post(f"/api/attempts/{active['attempt_id']}/abort",
                                  json={"reason": "catalog test cleanup"})
        assert r.status_code in (200, 409), r.text

    def run(self, path: Path, seed: int, mode: str, time_scale: float) -> RunResult:
        """One attempt, driven as `faultline run --lab-url` drives it; never leaves an attempt running."""
        sc = rendered(path, seed, time_scale)
        # A run that failed half-way was aborted; a new attempt starts with the engine's own reset to the baseline,
        # so a stack left unclean by one run (which that run's test reports) does not fail the next one.
        self.abort_active()
        t0 = time.monotonic()
        try:
            with cpulock.machine(self.lock_dir, exclusive=cpulock.is_cpu_heavy(sc)):
                attempt_id, code = run_attempt(self.client, sc, mode, give_up_after=None)
        except (RunError, httpx.HTTPError) as exc:
            self.abort_active()
            raise AssertionError(f"{sc.id} seed {seed} {mode}: the run could not be carried out: {exc}\n"
                                 + self._last_journal()) from exc
        debrief = self.call("GET", f"/api/attempts/{attempt_id}/debrief")
        events = self.call("GET", f"/api/attempts/{attempt_id}/events")
        return RunResult(sc, mode, code, attempt_id, debrief, events, time.monotonic() - t0)

    def _last_journal(self) -> str:
        """The latest attempt's journal, once it has ended (for the message of a run that failed half-way)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            last = self.call("GET", "/api/attempts?limit=1")
            if last and last[0]["status"] != "running":
                events = self.call("GET", f"/api/attempts/{last[0]['id']}/events")
                sc = rendered(SCENARIOS / f"{last[0]['scenario_id']}.yaml", last[0]["seed"], last[0]["time_scale"])
                debrief = {"broke": None, "fixed": None, "score": last[0]["score"], "end_reason": "failed run",
                           "breakdown": {k: {"points": None} for k in ("diagnosis", "fix", "time", "hints")}
                           | {"collateral": []}}
                return RunResult(sc, "failed", -1, last[0]["id"], debrief, events, 0.0).journal()
            time.sleep(0.5)
        return "(the attempt did not end within 60 s)"

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
            if s["name"] == "loadgen":
                continue
            if not s["ready"] or s["state"] != "running":
                problems.append(f"{s['name']} is {s['state']} (ready={s['ready']})")
        replicas = sorted(s["name"] for s in st["services"] if s["name"].startswith("model-"))
        if replicas != sorted(n for n in self.baseline if n.startswith("model-")):
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
        registry = self.service_url("registry")
        production = [m["version"] for m in self.http.get(registry + "/v1/models?stage=production").json()]
        canary = [m["version"] for m in self.http.get(registry + "/v1/models?stage=canary").json()]
        if production != ["v1"] or canary:
            problems.append(f"registry production={production} canary={canary}")
        for r in replicas:
            served = self.http.get(self.service_url(r) + "/v1/models").json()
            if served.get("default") != "v1":
                problems.append(f"{r} serves {served.get('default')} by default")
        return problems

    def score_once(self, public_url: str) -> dict[str, Any]:
        from services.trainer.generator import Generator

        body = {k: v for k, v in Generator(seed=7).sample(1)[0].items() if k != "label"}
        body["transaction_id"] = f"catalog-check-{time.time_ns()}"
        r = self.http.post(public_url + "/v1/score", json=body)
        return {"status": r.status_code, **(r.json() if r.headers.get("content-type", "").startswith("application/json")
                                            else {})}

    def wait_healthy(self, public_url: str, timeout_s: float = HEALTHY_WAIT_S) -> None:
        """The baseline reset runs after an attempt has ended: wait for it, then require a clean stack."""
        deadline = time.monotonic() + timeout_s
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = self.health_problems()
            if not problems:
                answer = self.score_once(public_url)
                if answer["status"] == 200 and answer.get("fallback") is None and answer.get("model_version") == "v1":
                    return
                problems = [f"a scoring request answered {answer}"]
            time.sleep(1.0)
        raise AssertionError("the stack was not healthy and clean after the run: " + "; ".join(problems))


__all__ = ["EXIT_OK", "CatalogLab", "RunResult", "rendered", "scenario_paths"]
