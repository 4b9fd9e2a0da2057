"""The lab server's one guard (lab/apiguard.py), route by route, against the real lab over real HTTP.

Issue 12, finding 1: the JSON API checked neither Host nor Origin, so a DNS-rebinding page could read it and any
site could drive it from the learner's browser (a text/plain POST needs no CORS preflight). Finding 5: a body
sent to a route that takes none was ignored and the action ran; any id grew the monitor's attempt map; 405s
without `Allow`.

The routes come from the lab's own app (`app.routes`, flattened through every included router, the UI's too),
built in this process exactly as `faultline serve` builds it; the requests go to the session's running lab. Each
walk starts with a canary so that a lab without the guard fails the test before anything dangerous (POST
/api/down) is sent to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from kit import REPO, child_env
from starlette.routing import compile_path

pytestmark = pytest.mark.stack

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
EVIL = "evil.example"


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/api/services/{name}/restart"
    url: str  # filled: "/api/services/registry/restart"
    regex: re.Pattern[str]
    methods: frozenset[str]

    @property
    def api(self) -> bool:
        return self.url.startswith("/api/") or self.url == "/api"


def _fill(template: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        return values[name]

    return re.sub(r"\{([^}]+)\}", one, template)


@pytest.fixture(scope="module")
def routes(stack: Any) -> Iterator[list[Route]]:
    """Every (method, route) of the lab's app, its path parameters filled with plausible values.

    The app is built in a fresh interpreter, as `faultline serve` builds it: built in this test process, a
    component could fail to attach because of state earlier tests left behind (the lab swallows that, by design),
    and the walk would silently miss its routes."""
    scenario_id = stack.client.get(stack.lab_url + "/api/scenarios").json()[0]["id"]
    values = {"name": "registry", "attempt_id": "a-20261206-0001", "fault_id": "f-0001", "pid": "1", "seq": "1",
              "scenario_id": scenario_id, "op": "status", "path": "app.css"}
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run([sys.executable, "-c", _LIST_ROUTES, home], capture_output=True, text=True,
                             timeout=120, env=child_env(), cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    listing = json.loads(out.stdout.strip().splitlines()[-1])
    assert not listing["errors"], f"components failed to attach: {listing['errors']}"
    found = []
    for path, methods in listing["routes"]:
        regex = compile_path(path)[0]
        for method in sorted(set(methods) - {"HEAD"}):
            found.append(Route(method, path, _fill(path, values), regex, frozenset(methods)))
    yield found


_LIST_ROUTES = """
import json, sys
from pathlib import Path
from fastapi.routing import iter_route_contexts
from lab.core import Lab, LabSettings
from lab.server import create_app
lab = Lab(LabSettings(home=Path(sys.argv[1])))
try:
    app = create_app(lab)
    routes = [[ctx.path, sorted(ctx.methods or ())] for ctx in iter_route_contexts(app.routes)]
    errors = list(lab.component_errors)
finally:
    lab.shutdown()
print(json.dumps({"routes": routes, "errors": errors}))
"""


def _headers(stack: Any, **extra: str) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{stack.topology.ports.lab}", **extra}


def _send(stack: Any, route: Route, headers: dict[str, str], content: bytes | None = None) -> httpx.Response:
    return stack.client.request(route.method, stack.lab_url + route.url, headers=headers, content=content,
                                timeout=60)


def _canary(stack: Any) -> None:
    """Stop here, before anything could act, when the lab has no guard (as before issue 12)."""
    r = stack.client.get(stack.lab_url + "/api/status", headers={"Host": f"{EVIL}:{stack.topology.ports.lab}"})
    assert r.status_code == 421, f"the lab answered a foreign Host with {r.status_code}: no guard in front of /api"


def test_the_walk_covers_every_part_of_the_app(routes: list[Route]) -> None:
    templates = {r.template for r in routes}
    assert len(routes) >= 70, len(routes)
    for template in ("/api/status", "/api/console/{op}", "/api/down", "/api/services/{name}/restart",
                     "/api/monitor/attempts/{attempt_id}/begin", "/", "/sandbox/faults", "/events",
                     "/static/{path:path}", "/attempts/{attempt_id}/console/{op}", "/openapi.json"):
        assert template in templates, template
    assert all("{" not in r.url for r in routes)


def test_every_route_refuses_a_foreign_host(stack: Any, routes: list[Route]) -> None:
    _canary(stack)
    port = stack.topology.ports.lab
    for host in (f"{EVIL}:{port}", EVIL, f"127.0.0.1.{EVIL}:{port}", f"localhost:{port + 1}"):
        for route in routes:
            body = b'{"replica": "model-1"}' if route.method in UNSAFE else None
            r = _send(stack, route, {"Host": host, "Content-Type": "application/json"}, body)
            assert r.status_code == 421, (host, route.method, route.url, r.status_code, r.text[:300])
            assert "only answers to its own address" in r.json()["detail"], r.text
    # and the lab's own names still work: loopback names with or without the port, IPv6 loopback
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert stack.client.get(stack.lab_url + "/api/health", headers={"Host": host}).status_code == 200, host


def test_every_state_changing_route_refuses_a_foreign_origin_and_a_text_plain_body(
        stack: Any, routes: list[Route]) -> None:
    _canary(stack)
    port = stack.topology.ports.lab
    unsafe = [r for r in routes if r.method in UNSAFE]
    assert len(unsafe) >= 30, len(unsafe)
    body = b'{"replica": "model-1"}'
    for route in unsafe:
        for origin in (f"http://{EVIL}", f"http://{EVIL}:{port}", "null", f"http://127.0.0.1:{port + 1}",
                       f"http://localhost:{port}"):
            r = _send(stack, route, _headers(stack, Origin=origin, **{"Content-Type": "application/json"}), body)
            assert r.status_code == 403, (origin, route.method, route.url, r.status_code, r.text[:300])
            assert "cross-origin" in r.json()["detail"]
        r = _send(stack, route, _headers(stack, **{"Sec-Fetch-Site": "cross-site",
                                                    "Content-Type": "application/json"}), body)
        assert r.status_code == 403 and "Sec-Fetch-Site" in r.json()["detail"], (route.url, r.text[:300])
        # the "simple request" a page on any site may send without a preflight, even with a same-origin Origin
        for ctype in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
            if ctype == "application/x-www-form-urlencoded" and not route.api:
                continue  # the UI's forms: their CSRF token is checked next (tests/ui/test_routes.py)
            r = _send(stack, route, _headers(stack, Origin=f"http://127.0.0.1:{port}", **{"Content-Type": ctype}),
                      body)
            assert r.status_code == 415, (ctype, route.method, route.url, r.status_code, r.text[:300])
            assert "Content-Type" in r.json()["detail"]
    # nothing acted: model-1 is not drained, the lab and every service are as they were
    st = stack.status()
    assert st["phase"] == "running" and all(s["state"] == "running" for s in st["services"]), st["services"]


def test_the_found_drain_and_its_siblings_are_refused_and_act_on_nothing(stack: Any) -> None:
    """The exact requests of finding 1: text/plain from evil.example, with and without a foreign Host."""
    _canary(stack)
    port = stack.topology.ports.lab
    gateway = stack.topology.service_url("gateway")
    before = {s["name"]: (s["pid"], s["restarts"]) for s in stack.status()["services"]}
    traffic_before = stack.client.get(stack.lab_url + "/api/traffic").json()
    attacks = [
        ("POST", "/api/console/drain", b'{"replica":"model-1"}'),
        ("POST", "/api/console/undrain", b'{"replica":"model-1"}'),
        ("POST", "/api/console/traffic", b'{"rps":500}'),
        ("POST", "/api/services/registry/restart", b""),
        ("POST", "/api/down", b""),
    ]
    for host in (f"{EVIL}:{port}", EVIL, f"127.0.0.1:{port}"):
        for method, path, body in attacks:
            headers = {"Host": host, "Origin": f"http://{EVIL}", "Content-Type": "text/plain;charset=UTF-8"}
            r = stack.client.request(method, stack.lab_url + path, headers=headers, content=body)
            assert r.status_code in (403, 421), (host, path, r.status_code, r.text)
    # same Host and no Origin (as a non-browser client), but text/plain: still never parsed as JSON
    r = stack.client.post(stack.lab_url + "/api/console/drain", content=b'{"replica":"model-1"}',
                          headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 415, r.text
    replicas = stack.client.get(gateway + "/v1/replicas").json()["replicas"]
    assert replicas["model-1"]["drained"] is False, replicas
    config = stack.client.get(gateway + "/admin/config").json()
    assert "model-1" not in config["drained"], config["drained"]
    assert {s["name"]: (s["pid"], s["restarts"]) for s in stack.status()["services"]} == before
    assert stack.client.get(stack.lab_url + "/api/traffic").json().get("target_rps") == \
        traffic_before.get("target_rps")


def test_api_routes_that_take_no_body_refuse_one_before_acting(stack: Any, routes: list[Route]) -> None:
    _canary(stack)
    r = stack.client.post(stack.lab_url + "/api/attempts/a-20261206-0001/hint", json={"x": 1})
    assert r.status_code == 400 and "takes no body" in r.json()["detail"], (r.status_code, r.text)
    before = {s["name"]: (s["pid"], s["restarts"]) for s in stack.status()["services"]}
    bodiless = [r for r in routes if r.api and r.method in UNSAFE and r.template in {
        "/api/services/{name}/restart", "/api/services/{name}/stop", "/api/services/{name}/start", "/api/down",
        "/api/traffic", "/api/faults", "/api/faults/{fault_id}", "/api/attempts/{attempt_id}/hint",
        "/api/attempts/{attempt_id}/fixed", "/api/monitor/attempts/{attempt_id}/begin",
        "/api/monitor/attempts/{attempt_id}/end"} and not (r.template in ("/api/traffic", "/api/faults")
                                                              and r.method == "POST")]
    assert len(bodiless) == 11, [(r.method, r.url) for r in bodiless]
    for route in bodiless:
        r = _send(stack, route, _headers(stack, **{"Content-Type": "application/json"}), b'{"force": true}')
        assert r.status_code == 400, (route.method, route.url, r.status_code, r.text)
        assert f"{route.method} {route.url} takes no body" in r.json()["detail"]
    assert {s["name"]: (s["pid"], s["restarts"]) for s in stack.status()["services"]} == before
    # without a body (and without a Content-Type, as the CLI sends it) such a route still works
    r = stack.client.post(stack.lab_url + "/api/monitor/attempts/a-20261206-0001/end")
    assert r.status_code == 404, r.text


def test_every_path_answers_other_methods_with_405_and_allow(stack: Any, routes: list[Route]) -> None:
    _canary(stack)
    seen: set[str] = set()
    for route in routes:
        if route.url in seen:
            continue
        seen.add(route.url)
        matching = [r for r in routes if r.regex.match(route.url)]
        # a path a route spells out (/api/faults/kinds) is that resource, not also /api/faults/{fault_id}
        literal = [r for r in matching if "{" not in r.template]
        allowed = set().union(*(r.methods for r in literal or matching))
        for method in (m for m in ALL_METHODS if m not in allowed):
            r = stack.client.request(method, stack.lab_url + route.url, headers=_headers(stack))
            assert r.status_code == 405, (method, route.url, r.status_code, r.text[:200])
            assert set(r.headers["allow"].split(", ")) == allowed, (method, route.url, r.headers["allow"])
            assert "not allowed" in r.json()["detail"]


def test_the_labs_own_clients_still_get_through(stack: Any) -> None:
    port = stack.topology.ports.lab
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    r = stack.client.post(stack.lab_url + "/api/console/status", json={}, headers=same)
    assert r.status_code == 200 and r.json()["op"] == "status", r.text
    r = stack.client.post(stack.lab_url + "/api/console/status", content=b"",
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    # the CLI: no Origin, no Content-Type on a body-less POST (`faultline status` goes through the same client)
    proc = stack.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr


def test_the_monitor_marks_only_the_running_attempt(stack: Any) -> None:
    lab = stack.lab_url
    for i in range(60):
        r = stack.client.post(f"{lab}/api/monitor/attempts/made-up-{i}/begin")
        assert r.status_code == 404 and "no running attempt" in r.json()["detail"], r.text
    assert stack.client.get(f"{lab}/api/monitor/attempts/made-up-0").status_code == 404


def test_the_monitor_route_against_a_running_attempt() -> None:
    """The same route with an attempt running (the attempts component's id): marked once, idempotent, bounded."""
    from lab.monitor.attach import MonitorRunner, router
    from lab.monitor.monitor import Monitor

    mon = Monitor(lambda: {}, slos=[])
    app = FastAPI()
    running = {"id": "a1"}
    app.include_router(router(MonitorRunner(mon), lambda: running["id"]))
    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            first = await c.post("/api/monitor/attempts/a1/begin")
            assert first.status_code == 200, first.text
            again = await c.post("/api/monitor/attempts/a1/begin")
            assert again.json()["from"] == first.json()["from"]
            for i in range(100):
                assert (await c.post(f"/api/monitor/attempts/x{i}/begin")).status_code == 404
            running["id"] = None
            assert (await c.post("/api/monitor/attempts/a1/begin")).status_code == 404

    asyncio.run(go())
    assert mon.attempt_began("a1") is not None and mon.attempt_began("x1") is None


def test_the_host_rule() -> None:
    from lab.apiguard import HostRule, split_host

    rule = HostRule(8000, "127.0.0.1", ["lab.example", "box.lan:9000"])
    for ok in ("127.0.0.1:8000", "LOCALHOST:8000", "localhost", "[::1]:8000", "lab.example", "lab.example:443",
               "box.lan:9000"):
        assert rule.allows(ok), ok
    for bad in ("evil.example:8000", "127.0.0.1:8001", "box.lan", "box.lan:8000", "", "[::1", "127.0.0.1:x",
                "127.0.0.1.evil.example:8000", "localhost:8000@evil", "lab.example.evil"):
        assert not rule.allows(bad), bad
    bound = HostRule(8000, "10.1.2.3")
    assert bound.allows("10.1.2.3:8000") and not bound.allows("10.1.2.4:8000")
    assert split_host("[::1]:80") == ("[::1]", 80)
    with pytest.raises(ValueError):
        split_host("a:99999")


def test_a_configured_name_is_served_and_others_are_not(guarded_lab: Any) -> None:
    """The private lab was started with `--allowed-host lab.test` (and its token)."""
    port = guarded_lab.port
    assert guarded_lab.http.get("/api/health", headers={"Host": f"lab.test:{port}"}).status_code == 200
    r = guarded_lab.http.get("/api/health", headers={"Host": f"other.test:{port}"})
    assert r.status_code == 421, r.text
    # the token is still required on top of an allowed Host
    r = httpx.get(guarded_lab.url + "/api/health", headers={"Host": f"lab.test:{port}"}, trust_env=False)
    assert r.status_code == 401, r.text


def test_the_cli_checks_allowed_host_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from lab.cli import LabError, _allowed_hosts

    monkeypatch.setenv("FAULTLINE_ALLOWED_HOSTS", "env.test, box.lan:9000")
    assert _allowed_hosts(argparse.Namespace(allowed_host=["lab.test"])) == ["lab.test", "env.test", "box.lan:9000"]
    for bad in ("lab.test:99999", "[::1", "a:b"):
        with pytest.raises(LabError, match="--allowed-host"):
            _allowed_hosts(argparse.Namespace(allowed_host=[bad]))
