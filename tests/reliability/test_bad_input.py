"""Hostile input on the shared real stack: oversized and deeply nested JSON bodies, and path traversal in ids.

Each must be refused with a clear 4xx quickly — never a 500, a hang, a crash of the process, or a file's
contents. After the barrage every service is still the same process (no restart) and the stack is healthy.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from relkit import HOSTILE_BODIES, PASSWD_MARKERS, raw, score_ok, stack_healthy, wait_until

from services.trainer.generator import Generator

pytestmark = pytest.mark.stack

QUICK_S = 30.0  # generous: a shared 2-core machine; a hang would be minutes (the client times out at 60 s)

# (service, method, path): every JSON-taking route of the gateway, the lab API and the netproxy API, plus the
# other services' own (their admin routes take JSON too).
BODY_ROUTES: list[tuple[str, str, str]] = [
    ("gateway", "POST", "/v1/score"),
    ("gateway", "POST", "/v1/feedback"),
    ("gateway", "PATCH", "/admin/config"),
    ("gateway-proxy", "POST", "/v1/score"),
    ("lab", "POST", "/api/faults"),
    ("lab", "POST", "/api/attempts"),
    ("lab", "POST", "/api/attempts/x/diagnosis"),
    ("lab", "POST", "/api/attempts/x/abort"),
    ("lab", "POST", "/api/console/status"),
    ("lab", "PUT", "/api/slo"),
    ("lab", "POST", "/api/scale"),
    ("lab", "POST", "/api/traffic"),
    ("lab", "PATCH", "/api/services/gateway"),
    ("lab", "POST", "/api/faults/processes/1/kill"),
    ("netproxy", "POST", "/proxies"),
    ("netproxy", "POST", "/populate"),
    ("netproxy", "POST", "/proxies/gateway"),
    ("netproxy", "POST", "/proxies/gateway/toxics"),
    ("feature-store", "PATCH", "/admin/config"),
    ("registry", "POST", "/v1/variants"),
    ("registry", "POST", "/v1/train"),
    ("registry", "POST", "/v1/models/v1/stage"),
    ("model-1", "POST", "/v1/predict"),
    ("model-1", "POST", "/admin/reload"),
    ("model-1", "PATCH", "/admin/config"),
]


def _port(stack: Any, service: str) -> int:
    ports = stack.topology.ports
    fixed = {"lab": ports.lab, "netproxy": ports.netproxy, "gateway-proxy": ports.gateway_proxy}
    return fixed.get(service) or stack.topology.service_port(service)


def _processes(stack: Any) -> dict[str, tuple[int, int]]:
    return {s["name"]: (s["pid"], s["restarts"]) for s in stack.status()["services"]}


def test_oversized_and_deeply_nested_bodies_are_quick_4xx_and_crash_nothing(stack: Any) -> None:
    before = _processes(stack)
    problems = []
    for service, method, path in BODY_ROUTES:
        for name, body in HOSTILE_BODIES.items():
            try:
                r = raw(method, _port(stack, service), path, body)
            except OSError as exc:  # reset or timeout: the server gave no answer
                problems.append(f"{service} {method} {path} {name}: no answer ({exc!r})")
                continue
            if not 400 <= r.status < 500 or r.seconds > QUICK_S or not r.body.strip():
                problems.append(f"{service} {method} {path} {name}: {r.status} in {r.seconds:.1f}s {r.text[:120]!r}")
            elif len(r.body) > 64 * 1024:  # a refusal says why in a line; it does not echo 10 MB back
                problems.append(f"{service} {method} {path} {name}: {len(r.body)}-byte answer")
    assert not problems, "\n".join(problems)
    # nothing crashed or restarted, and the stack still scores
    assert _processes(stack) == before
    wait_until(lambda: stack_healthy(stack.status()), 60, what="healthy stack")
    txn = Generator(seed=11).sample(1)[0]
    txn.pop("label")
    score_ok(stack.public_url, {**txn, "transaction_id": "reliability-after-hostile-bodies"})


def test_the_size_limits_name_themselves(stack: Any) -> None:
    gw = raw("POST", _port(stack, "gateway"), "/v1/score", HOSTILE_BODIES["10MB"])
    assert gw.status == 413 and "larger than" in gw.json()["detail"]
    lab = raw("POST", _port(stack, "lab"), "/api/faults", HOSTILE_BODIES["10MB"])
    assert lab.status == 413 and "larger than" in lab.json()["detail"]
    deep = raw("POST", _port(stack, "lab"), "/api/console/status", HOSTILE_BODIES["deep-objects"])
    assert deep.status == 400 and "nested too deeply" in deep.json()["detail"]
    deep = raw("PATCH", _port(stack, "gateway"), "/admin/config", HOSTILE_BODIES["deep-arrays"])
    assert deep.status == 400, deep.text
    np = raw("POST", _port(stack, "netproxy"), "/proxies", HOSTILE_BODIES["deep-arrays"])
    assert np.status == 400 and "nested too deeply" in np.text


# Every /api route that takes a body, with a value JSON does not have (NaN, Infinity): a 400 naming it, from the
# guard, before any route's validation could echo the value back (which once made each of them a 500).
NON_FINITE_ROUTES = [("POST", "/api/scale"), ("POST", "/api/traffic"), ("PATCH", "/api/services/gateway"),
                     ("POST", "/api/attempts"), ("POST", "/api/attempts/x/pin"), ("POST", "/api/attempts/x/diagnosis"),
                     ("POST", "/api/attempts/x/abort"), ("POST", "/api/faults"), ("PUT", "/api/slo"),
                     ("POST", "/api/console/logs"), ("POST", "/api/faults/processes/1/kill")]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_in_a_lab_body_are_a_400_naming_them(stack: Any, constant: bytes) -> None:
    problems = []
    for method, path in NON_FINITE_ROUTES:
        r = raw(method, _port(stack, "lab"), path, b'{"replicas": ' + constant + b', "rps": 1}',
                {"Content-Type": "application/json"})
        detail = r.json().get("detail") if r.body.startswith(b"{") else None
        if r.status != 400 or not isinstance(detail, str) or constant.decode().lstrip("-") not in detail:
            problems.append(f"{method} {path}: {r.status} {r.text[:160]!r}")
    assert not problems, "\n".join(problems)
    # a string that merely spells them is data, not a refusal
    r = raw("POST", _port(stack, "lab"), "/api/console/logs", b'{"service": "gateway", "grep": "NaN Infinity"}',
            {"Content-Type": "application/json"})
    assert r.status == 200, r.text


TRAVERSALS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "....//....//etc/passwd",
    "..%5C..%5Cetc%5Cpasswd",
    "%2Fetc%2Fpasswd",
    "..",
    "%2e%2e",
    "slow-replica%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "x%00.yaml",
]

# Routes whose path carries a scenario id, an attempt id or another name that could become a file path.
ID_ROUTES: list[tuple[str, str, str]] = [
    ("lab", "GET", "/api/scenarios/{}"),
    ("lab", "GET", "/api/attempts/{}"),
    ("lab", "GET", "/api/attempts/{}/debrief"),
    ("lab", "GET", "/api/attempts/{}/events"),
    ("lab", "POST", "/api/attempts/{}/hint"),
    ("lab", "POST", "/api/attempts/{}/fixed"),
    ("lab", "POST", "/api/attempts/{}/abort"),
    ("lab", "GET", "/api/monitor/attempts/{}"),
    ("lab", "GET", "/api/faults/{}"),
    ("lab", "DELETE", "/api/faults/{}"),
    ("lab", "GET", "/api/services/{}/logs"),
    ("lab", "POST", "/api/console/{}"),
    ("lab", "GET", "/scenarios/{}"),
    ("lab", "GET", "/attempts/{}"),
    ("lab", "GET", "/attempts/{}/debrief"),
    ("lab", "GET", "/attempts/{}/ended"),
    ("lab", "GET", "/attempts/{}/console/status"),
    ("lab", "GET", "/sandbox/console/{}"),
    ("lab", "GET", "/static/{}"),
    ("registry", "GET", "/v1/models/{}"),
    ("registry", "GET", "/v1/models/{}/reference"),
    ("registry", "GET", "/v1/models/{}/verify"),
    ("gateway", "GET", "/v1/recent?limit={}"),
]


def test_path_traversal_in_ids_is_a_4xx_and_never_a_file(stack: Any) -> None:
    problems = []
    for service, method, template in ID_ROUTES:
        for ident in TRAVERSALS:
            path = template.format(ident)
            r = raw(method, _port(stack, service), path, b"{}" if method != "GET" else None)
            leaked = [m for m in PASSWD_MARKERS if m in r.text]
            if not 400 <= r.status < 500 or leaked:
                problems.append(f"{service} {method} {path}: {r.status} {leaked} {r.text[:120]!r}")
            elif r.headers.get("content-type", "").startswith("application/json") and not r.json().get("detail"):
                problems.append(f"{service} {method} {path}: {r.status} without a message")
    assert not problems, "\n".join(problems)


def test_ids_in_bodies_cannot_name_files_either(stack: Any) -> None:
    lab = httpx.Client(base_url=stack.lab_url, timeout=60, trust_env=False)
    registry = stack.topology.service_url("registry")
    model = stack.topology.service_url("model-1")
    try:
        for ident in ("../../etc/passwd", "/etc/passwd", "..\\..\\etc\\passwd", "slow-replica/../../x", "a\x00b"):
            cases = [
                lab.post("/api/attempts", json={"scenario_id": ident}),
                lab.get(f"/api/scenarios/{quote(ident, safe='')}"),
                lab.post("/api/console/logs", json={"service": ident}),
                lab.post("/api/faults", json={"kind": "process", "action": "kill", "target": ident}),
                httpx.post(registry + "/v1/variants", json={"base": ident, "variant": "nan"}, trust_env=False),
                httpx.post(registry + "/v1/train", json={"parent": ident, "data_seed": 1, "n_rows": 100},
                           trust_env=False),
                httpx.post(model + "/admin/reload", json={"versions": [ident]}, trust_env=False, timeout=60),
            ]
            for r in cases:
                assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)
                assert r.json()["detail"], r.text
                assert not any(m in r.text for m in PASSWD_MARKERS), r.text
    finally:
        lab.close()
    # the model replica still serves its versions
    assert httpx.get(model + "/v1/models", trust_env=False, timeout=30).json()["ready"] is True


def test_the_operations_left_out_of_fuzzing_refuse_bad_values(stack: Any) -> None:
    """POST /api/scale and POST /api/traffic are not fuzzed (a valid draw would start 16 replicas or 10,000 rps):
    their bounds, types and unknown keys are checked here instead. Nothing changes."""
    replicas = stack.status()["replicas"]
    lab = httpx.Client(base_url=stack.lab_url, timeout=60, trust_env=False)
    try:
        bad = [("/api/scale", {"replicas": 17}), ("/api/scale", {"replicas": 0}), ("/api/scale", {"replicas": 1.5}),
               ("/api/scale", {"replicas": 2, "force": True}), ("/api/scale", []),
               ("/api/traffic", {"rps": -1}), ("/api/traffic", {"rps": 10_001}), ("/api/traffic", {"rps": "fast"}),
               ("/api/traffic", {"rps": 5, "profile": ""}), ("/api/traffic", {"rps": 5, "feedback_delay_s": -1}),
               ("/api/traffic", {"rps": 5, "burst": 3}), ("/api/traffic", {})]
        for path, body in bad:
            r = lab.post(path, json=body)
            assert r.status_code == 422 and r.json()["detail"], (path, body, r.status_code, r.text)
    finally:
        lab.close()
    assert stack.status()["replicas"] == replicas


def test_a_lab_422_names_the_field_without_echoing_the_value(stack: Any) -> None:
    """Pydantic's 422 lists the input it refused; a 900 KB string (under the 1 MiB body limit) came back whole."""
    big = "x" * 900_000
    for method, path, body in [("POST", "/api/attempts/nothing/abort", {"reason": big}),
                               ("POST", "/api/scale", {"replicas": big}),
                               ("POST", "/api/traffic", {"rps": 5, "profile": [big]})]:
        r = raw(method, _port(stack, "lab"), path, json.dumps(body).encode())
        assert r.status == 422, (path, r.status, r.text[:200])
        assert len(r.body) < 4096, (path, len(r.body))
        detail = r.json()["detail"]
        assert detail and all(e["loc"] and e["msg"] and "input" not in e for e in detail), detail


def _slo_specs(lab: httpx.Client) -> list[dict[str, Any]]:
    """The objectives as declared; their live `value`, `state` and `since` move with the traffic between reads."""
    live = ("value", "state", "since")
    return [{k: v for k, v in s.items() if k not in live} for s in lab.get("/api/slo").json()["slos"]]


def test_put_slo_refuses_what_no_objective_needs_and_keeps_the_set(stack: Any) -> None:
    """An objective's target, description and track are bounded, names are unique, the set is small: each of these
    was accepted (a 900 KB target stored and served back on every GET /api/slo; a second spec of the same name
    silently replaced the first)."""
    lab = httpx.Client(base_url=stack.lab_url, timeout=60, trust_env=False)
    spec = {"name": "x", "kind": "error_rate", "target": "gateway", "threshold": 0.1, "window_s": 10}
    try:
        before = _slo_specs(lab)
        for body, field in [([{**spec, "target": "a" * 900_000}], "target"), ([{**spec, "target": "../x"}], "target"),
                            ([{**spec, "description": "d" * 100_000}], "description"),
                            ([{**spec, "track": "sideways"}], "track"), ([spec, {**spec, "threshold": 0.5}], "name"),
                            ([{**spec, "name": f"s{i}"} for i in range(1000)], "at most")]:
            r = lab.put("/api/slo", json=body)
            assert r.status_code == 422 and field in r.text[:300] and len(r.content) < 4096, (field, r.status_code,
                                                                                             r.text[:300])
        assert _slo_specs(lab) == before
    finally:
        lab.close()


def test_a_refusal_names_a_huge_value_without_echoing_it(stack: Any) -> None:
    """Names checked against the stack's vocabulary (services, hops, features, versions, fault kinds) are quoted
    in the refusal: cut short, not 900 KB sent back."""
    big = "a" * 900_000
    cases = [("/api/console/logs", {"service": big}), ("/api/console/drift", {"feature": big}),
             ("/api/console/deploy", {"version": big}), ("/api/faults", {"kind": "process", "action": "kill",
                                                                          "target": big}),
             ("/api/faults", {"kind": "network", "action": "toxic", "target": big,
                              "params": {"type": "latency", "latency": 10}}),
             ("/api/faults", {"kind": big, "action": "x"})]
    for path, body in cases:
        r = raw("POST", _port(stack, "lab"), path, json.dumps(body).encode())
        assert r.status == 422 and r.json()["detail"], (path, r.status, r.text[:200])
        assert len(r.body) < 4096, (path, len(r.body), r.text[:200])
