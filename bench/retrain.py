"""Retrain → canary → promote benchmark, end to end on a running stack with labelled traffic.

    python -m bench retrain [--quick] [--json]

A real stack (two replicas) with the load generator sending transactions and, after its feedback delay, their
labels (`POST /api/traffic`), until the gateway holds enough labelled rows for a retrain (`GET
/v1/recent?labelled=1`; labels arrive in real time, so `--scale` cannot shorten that part). Then the learner's
console operations, through the lab API as the CLI and the UI call them: `retrain` (the production model
fine-tuned on the gateway's labelled rows of this traffic by the registry's trainer child process, registered as
staging), `deploy vN --canary 0.1` (loaded on every replica next to the default, 10% of the
gateway's traffic), `promote vN` (default on every replica, all traffic, stage production). The clock stops
when the gateway answers with vN for every one of 20 consecutive scored transactions. Goal: ≤ 60 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import stack as bstack
from bench.common import dumps, load_average, machine, transactions

GOAL_S = 60.0
TRAFFIC_RPS = 60.0
QUICK_TRAFFIC_RPS = 150.0  # the suite's smoke run: the same labels sooner
CONSECUTIVE = 20
# comfortably above the console's floor (500 rows, 25 fraud cases): ~2.6 % of baseline traffic is fraud
LABELLED_ROWS, LABELLED_FRAUD = 1500, 40
QUICK_LABELLED_ROWS, QUICK_LABELLED_FRAUD = 900, 30
LABELS_TIMEOUT_S = 240.0


def _served_by(st: bstack.BenchStack, version: str, bodies: list[bytes], timeout: float = 60.0) -> float:
    """Seconds until CONSECUTIVE scored transactions in a row came from `version`."""
    t0 = time.monotonic()
    streak = 0
    i = 0
    with httpx.Client(timeout=10, trust_env=False) as client:
        while time.monotonic() - t0 < timeout:
            r = client.post(st.public_url + "/v1/score", content=bodies[i % len(bodies)],
                            headers={"content-type": "application/json"})
            i += 1
            streak = streak + 1 if r.status_code == 200 and r.json().get("model_version") == version else 0
            if streak >= CONSECUTIVE:
                return time.monotonic() - t0
    raise RuntimeError(f"the gateway did not serve {version} consistently within {timeout:.0f}s")


def _labelled(st: bstack.BenchStack, since: float) -> tuple[int, int]:
    """(labelled rows, fraud among them) the gateway holds for transactions scored after `since`."""
    url = f"{st.topology.service_url('gateway')}/v1/recent"
    body = st.client.get(url, params={"labelled": 1, "since": since, "limit": 100_000}, timeout=30).json()
    return body["count"], sum(r["label"] for r in body["items"])


def _wait_for_labels(st: bstack.BenchStack, since: float, at_least_s: float, quick: bool) -> tuple[int, int]:
    t0 = time.monotonic()
    want_rows, want_fraud = (QUICK_LABELLED_ROWS, QUICK_LABELLED_FRAUD) if quick else (LABELLED_ROWS, LABELLED_FRAUD)
    while True:
        rows, fraud = _labelled(st, since)
        enough = rows >= want_rows and fraud >= want_fraud
        if enough and time.monotonic() - t0 >= at_least_s:
            return rows, fraud
        if time.monotonic() - t0 > LABELS_TIMEOUT_S:
            raise RuntimeError(f"only {rows} labelled rows ({fraud} fraud) after {LABELS_TIMEOUT_S:.0f}s of traffic")
        time.sleep(2.0)


def run(quick: bool = False, scale: float = 1.0) -> dict[str, Any]:
    warm_s = (10.0 if quick else 20.0) * scale
    rps = QUICK_TRAFFIC_RPS if quick else TRAFFIC_RPS
    result: dict[str, Any] = {"bench": "retrain", "quick": quick, "machine": machine(),
                              "plan": {"traffic_rps": rps, "labelled_traffic_s": warm_s, "canary": 0.1}}
    bodies = [dumps(t) for t in transactions(400, seed=23, id_prefix="retrain")]
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        tmpdir = Path(tmp)
        with bstack.running(tmpdir / "home", tmpdir / "cache", replicas=2) as st:
            started = time.time()
            st.api("POST", "/api/traffic", json={"rps": rps})
            # labelled traffic accumulates (labels follow after the feedback delay)
            labelled_rows, labelled_fraud = _wait_for_labels(st, started, warm_s, quick)
            traffic = st.api("GET", "/api/traffic")
            load = load_average()
            steps: dict[str, float] = {}
            t0 = time.monotonic()
            window = time.time() - started + 5.0  # this traffic's labels, all of them
            trained = st.api("POST", "/api/console/retrain", json={"window_s": window}, timeout=600)
            steps["retrain_s"] = time.monotonic() - t0
            version = trained["data"]["version"]
            t1 = time.monotonic()
            st.api("POST", "/api/console/deploy", json={"version": version, "canary": 0.1})
            steps["canary_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            st.api("POST", "/api/console/promote", json={"version": version})
            steps["promote_s"] = time.monotonic() - t2
            steps["until_served_s"] = _served_by(st, version, bodies)
            total = time.monotonic() - t0
    result.update({
        "version": version,
        "training": {k: trained["data"].get(k) for k in ("rows", "fraud", "span_s", "metrics", "parent", "warm_start",
                                                          "seconds", "source")},
        "labelled_before_retrain": {"rows": labelled_rows, "fraud": labelled_fraud},
        "traffic": {k: traffic.get(k) for k in ("achieved_rps", "profile", "feedback")},
        "steps": {k: round(v, 2) for k, v in steps.items()},
        "total_s": round(total, 2),
        "load_average": load,
        "goal": {"total_s": GOAL_S, "met": total <= GOAL_S},
        "load_average_end": load_average(),
    })
    return result


def table(r: dict[str, Any]) -> str:
    s = r["steps"]
    m = r["training"].get("metrics") or {}
    rows = ["| step | seconds |", "|---|---:|",
            f"| `retrain` ({r['training'].get('rows')} labelled rows, {r['training'].get('fraud')} fraud, auc "
            f"{m.get('auc', 0):.3f}) → {r['version']} staging "
            f"| {s['retrain_s']:.2f} |",
            f"| `deploy {r['version']} --canary 0.1` | {s['canary_s']:.2f} |",
            f"| `promote {r['version']}` | {s['promote_s']:.2f} |",
            f"| until {CONSECUTIVE} consecutive answers come from {r['version']} | {s['until_served_s']:.2f} |",
            f"| **end to end** | **{r['total_s']:.2f}** |"]
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    met = "✅ met" if r["goal"]["met"] else "❌ missed"
    return (f"On a running stack with labelled traffic ({r['plan']['traffic_rps']:g} rps, achieved "
            f"{r['traffic'].get('achieved_rps')}), retrain → canary → promote → served: **{r['total_s']:.1f} s** "
            f"(goal ≤ {GOAL_S:g} s: {met}; load average {r['load_average']}).")
