"""Toxiproxy v2 API conformance, written from the reference (codes, bodies, defaults, merges, populate, reset).

Runs against our embedded server, or unchanged against a real Toxiproxy with TOXIPROXY_URL set. Tests marked
`embedded_only` pin down where we are deliberately stricter than Toxiproxy (documented in docs/netproxy.md).
"""

from __future__ import annotations

import socket

import pytest

from tests.netproxy.support import connect, embedded_only, free_port

LOOPBACK_ANY = "127.0.0.1:0"


def port_accepts(listen: str) -> bool:
    try:
        connect(listen, timeout=2).close()
        return True
    except OSError:
        return False


def create(http, name: str, upstream: str = "127.0.0.1:9", **extra):
    return http("POST", "/proxies", json={"name": name, "listen": LOOPBACK_ANY, "upstream": upstream, **extra})


def test_version(http) -> None:
    r = http("GET", "/version")
    assert r.status_code == 200
    assert isinstance(r.json()["version"], str) and r.json()["version"]


def test_create_proxy_answers_201_with_the_bound_port(http, names) -> None:
    name = names()
    r = create(http, name, "127.0.0.1:20999")
    assert r.status_code == 201
    body = r.json()
    assert body == {
        "name": name,
        "listen": body["listen"],
        "upstream": "127.0.0.1:20999",
        "enabled": True,
        "toxics": [],
    }
    host, port = body["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert port_accepts(body["listen"])
    assert http("GET", f"/proxies/{name}").json() == body
    assert http("GET", "/proxies").json()[name] == body


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"listen": LOOPBACK_ANY, "upstream": "127.0.0.1:9"}, "missing required field: name"),
        ({"name": "t-no-upstream", "listen": LOOPBACK_ANY}, "missing required field: upstream"),
        ({"name": "", "upstream": "127.0.0.1:9"}, "missing required field: name"),
    ],
)
def test_create_missing_fields_is_400(http, payload, message) -> None:
    r = http("POST", "/proxies", json=payload)
    assert r.status_code == 400
    assert r.json() == {"error": message, "status": 400}


def test_create_with_a_bad_body_is_400(http) -> None:
    r = http("POST", "/proxies", data=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body")
    assert r.json()["status"] == 400


def test_create_twice_is_409(http, names) -> None:
    name = names()
    assert create(http, name).status_code == 201
    r = create(http, name)
    assert r.status_code == 409
    assert r.json() == {"error": "proxy already exists", "status": 409}


def test_create_on_a_port_in_use_is_500_with_the_listen_error(http, names) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        r = http("POST", "/proxies", json={"name": names(), "listen": address, "upstream": "127.0.0.1:9"})
    assert r.status_code == 500
    assert "address already in use" in r.json()["error"]
    assert r.json()["status"] == 500


def test_unknown_proxy_is_404_everywhere(http) -> None:
    missing = {"error": "proxy not found", "status": 404}
    for method, path, body in [
        ("GET", "/proxies/t-missing", None),
        ("PATCH", "/proxies/t-missing", {"enabled": False}),
        ("DELETE", "/proxies/t-missing", None),
        ("GET", "/proxies/t-missing/toxics", None),
        ("POST", "/proxies/t-missing/toxics", {"type": "latency"}),
        ("GET", "/proxies/t-missing/toxics/latency_downstream", None),
        ("DELETE", "/proxies/t-missing/toxics/latency_downstream", None),
    ]:
        r = http(method, path, json=body)
        assert (r.status_code, r.json()) == (404, missing), (method, path)


def test_disabled_proxy_does_not_listen_until_enabled(http, names) -> None:
    name = names()
    listen = f"127.0.0.1:{free_port()}"
    r = http("POST", "/proxies", json={"name": name, "listen": listen, "upstream": "127.0.0.1:9", "enabled": False})
    assert r.status_code == 201
    assert r.json()["enabled"] is False
    assert not port_accepts(listen)
    r = http("PATCH", f"/proxies/{name}", json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert port_accepts(listen)
    # POST is the deprecated spelling of PATCH and still accepted
    r = http("POST", f"/proxies/{name}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert not port_accepts(listen)


def test_patch_merges_fields_into_the_proxy(http, names) -> None:
    name = names()
    created = create(http, name, "127.0.0.1:20998").json()
    r = http("PATCH", f"/proxies/{name}", json={"upstream": "127.0.0.1:20997"})
    assert r.status_code == 200
    assert r.json() == {**created, "upstream": "127.0.0.1:20997"}
    r = http("PATCH", f"/proxies/{name}", json={})
    assert r.json() == {**created, "upstream": "127.0.0.1:20997"}
    bad = http("PATCH", f"/proxies/{name}", data=b"[")
    assert bad.status_code == 400 and bad.json()["error"].startswith("bad request body")


def test_delete_proxy_is_204_and_closes_the_listener(http, names) -> None:
    name = names()
    listen = create(http, name).json()["listen"]
    r = http("DELETE", f"/proxies/{name}")
    assert r.status_code == 204 and r.content == b""
    assert http("GET", f"/proxies/{name}").status_code == 404
    assert not port_accepts(listen)


def test_toxic_create_is_200_with_defaults(http, names) -> None:
    name = names()
    create(http, name)
    r = http("POST", f"/proxies/{name}/toxics", json={"type": "latency", "attributes": {"latency": 100}})
    assert r.status_code == 200
    assert r.json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    assert http("GET", f"/proxies/{name}/toxics/latency_downstream").json() == r.json()
    up = http("POST", f"/proxies/{name}/toxics", json={"type": "latency", "stream": "upstream"})
    assert up.status_code == 200 and up.json()["name"] == "latency_upstream"
    assert http("GET", f"/proxies/{name}").json()["toxics"] == http("GET", f"/proxies/{name}/toxics").json()


def test_every_toxic_type_is_known_with_its_attributes(http, names) -> None:
    name = names()
    create(http, name)
    expected = {
        "latency": {"latency", "jitter"},
        "bandwidth": {"rate"},
        "slow_close": {"delay"},
        "timeout": {"timeout"},
        "reset_peer": {"timeout"},
        "slicer": {"average_size", "size_variation", "delay"},
        "limit_data": {"bytes"},
    }
    for kind, attributes in expected.items():
        for stream in ("upstream", "downstream"):
            r = http("POST", f"/proxies/{name}/toxics", json={"type": kind, "stream": stream})
            assert r.status_code == 200, r.text
            assert set(r.json()["attributes"]) == attributes
            assert all(v == 0 for v in r.json()["attributes"].values())


def test_toxic_names_are_unique_across_streams(http, names) -> None:
    name = names()
    create(http, name)
    body = {"name": "slow", "type": "latency", "stream": "upstream"}
    assert http("POST", f"/proxies/{name}/toxics", json=body).status_code == 200
    for stream in ("upstream", "downstream"):
        r = http("POST", f"/proxies/{name}/toxics", json={**body, "stream": stream})
        assert (r.status_code, r.json()) == (409, {"error": "toxic already exists", "status": 409})


def test_toxic_create_errors(http, names) -> None:
    name = names()
    create(http, name)
    path = f"/proxies/{name}/toxics"
    r = http("POST", path, json={"type": "latency", "stream": "sideways"})
    assert (r.status_code, r.json()) == (
        400,
        {"error": "stream was invalid, can be either upstream or downstream", "status": 400},
    )
    r = http("POST", path, json={"type": "no_such_toxic"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid toxic type", "status": 400})
    r = http("POST", path, data=b"{oops")
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")
    r = http("POST", path, json={"type": "latency", "attributes": {"latency": "slow"}})
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")
    assert http("GET", path).json() == []


def test_unknown_toxic_is_404(http, names) -> None:
    name = names()
    create(http, name)
    missing = {"error": "toxic not found", "status": 404}
    for method in ("GET", "PATCH", "DELETE"):
        r = http(method, f"/proxies/{name}/toxics/nope", json={} if method == "PATCH" else None)
        assert (r.status_code, r.json()) == (404, missing), method


def test_toxic_update_merges_attributes_and_keeps_toxicity(http, names) -> None:
    name = names()
    create(http, name)
    path = f"/proxies/{name}/toxics"
    http(
        "POST",
        path,
        json={"name": "lag", "type": "latency", "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}},
    )
    r = http("PATCH", f"{path}/lag", json={"attributes": {"latency": 1000}})
    assert r.status_code == 200
    assert r.json()["attributes"] == {"latency": 1000, "jitter": 10}
    assert r.json()["toxicity"] == 0.5
    r = http("POST", f"{path}/lag", json={"toxicity": 1})  # POST is accepted for updates too
    assert r.status_code == 200
    assert r.json()["toxicity"] == 1.0 and r.json()["attributes"] == {"latency": 1000, "jitter": 10}
    assert r.json()["name"] == "lag" and r.json()["stream"] == "downstream" and r.json()["type"] == "latency"


def test_toxic_delete_is_204(http, names) -> None:
    name = names()
    create(http, name)
    http("POST", f"/proxies/{name}/toxics", json={"type": "timeout"})
    r = http("DELETE", f"/proxies/{name}/toxics/timeout_downstream")
    assert r.status_code == 204 and r.content == b""
    assert http("DELETE", f"/proxies/{name}/toxics/timeout_downstream").status_code == 404
    assert http("GET", f"/proxies/{name}/toxics").json() == []


def test_toxics_are_listed_upstream_first_then_in_order(http, names) -> None:
    name = names()
    create(http, name)
    for toxic, stream in [("d1", "downstream"), ("u1", "upstream"), ("d2", "downstream"), ("u2", "upstream")]:
        http("POST", f"/proxies/{name}/toxics", json={"name": toxic, "type": "latency", "stream": stream})
    assert [t["name"] for t in http("GET", f"/proxies/{name}/toxics").json()] == ["u1", "u2", "d1", "d2"]


def test_populate_creates_keeps_and_replaces(http, names) -> None:
    a, b = names(), names()
    la, lb = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    entries = [
        {"name": a, "listen": la, "upstream": "127.0.0.1:9"},
        {"name": b, "listen": lb, "upstream": "127.0.0.1:9"},
    ]
    r = http("POST", "/populate", json=entries)
    assert r.status_code == 201
    assert [(p["name"], p["listen"], p["enabled"]) for p in r.json()["proxies"]] == [(a, la, True), (b, lb, True)]
    http("POST", f"/proxies/{a}/toxics", json={"type": "latency"})
    http("POST", f"/proxies/{b}/toxics", json={"type": "latency"})
    # a: same listen and upstream -> kept with its toxic; b: new upstream -> replaced, toxics gone
    entries[1]["upstream"] = "127.0.0.1:10"
    r = http("POST", "/populate", json=entries)
    assert r.status_code == 201
    got = {p["name"]: p for p in r.json()["proxies"]}
    assert [t["name"] for t in got[a]["toxics"]] == ["latency_downstream"]
    assert got[b]["upstream"] == "127.0.0.1:10" and got[b]["toxics"] == []
    assert port_accepts(lb)


def test_populate_checks_every_entry_before_creating_any(http, names) -> None:
    a = names()
    r = http(
        "POST",
        "/populate",
        json=[
            {"name": a, "listen": LOOPBACK_ANY, "upstream": "127.0.0.1:9"},
            {"listen": LOOPBACK_ANY, "upstream": "127.0.0.1:9"},
        ],
    )
    assert r.status_code == 400
    assert r.json()["error"] == "missing required field: name at proxy 2"
    assert r.json()["status"] == 400
    assert http("GET", f"/proxies/{a}").status_code == 404
    r = http("POST", "/populate", json=[{"name": a, "listen": LOOPBACK_ANY}])
    assert r.status_code == 400 and r.json()["error"] == "missing required field: upstream at proxy 1"


def test_populate_failing_part_way_reports_what_it_did(http, names) -> None:
    a, b = names(), names()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        r = http(
            "POST",
            "/populate",
            json=[
                {"name": a, "listen": LOOPBACK_ANY, "upstream": "127.0.0.1:9"},
                {"name": b, "listen": taken, "upstream": "127.0.0.1:9"},
            ],
        )
    assert r.status_code == 500
    body = r.json()
    assert "address already in use" in body["error"] and body["status"] == 500
    assert [p["name"] for p in body["proxies"]] == [a]
    assert http("GET", f"/proxies/{a}").status_code == 200


def test_populate_with_a_bad_body_is_400(http) -> None:
    r = http("POST", "/populate", data=b"{")
    assert r.status_code == 400 and r.json()["error"].startswith("bad request body")


def test_reset_enables_proxies_and_removes_toxics(http, names) -> None:
    name = names()
    listen = create(http, name).json()["listen"]
    http("POST", f"/proxies/{name}/toxics", json={"type": "latency", "stream": "upstream"})
    http("POST", f"/proxies/{name}/toxics", json={"type": "bandwidth"})
    http("PATCH", f"/proxies/{name}", json={"enabled": False})
    r = http("POST", "/reset")
    assert r.status_code == 204 and r.content == b""
    proxy = http("GET", f"/proxies/{name}").json()
    assert proxy["enabled"] is True and proxy["toxics"] == []
    assert port_accepts(listen)


def test_browsers_are_refused(http) -> None:
    r = http("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert r.status_code == 403
    assert r.text.strip() == "User agent not allowed"


# Where the embedded server is stricter than Toxiproxy: bad input gets a clear 400 instead of being accepted.


@embedded_only
@pytest.mark.parametrize("listen", ["no-port", "127.0.0.1:99999", "10.1.2.3:20001", "0.0.0.0:20001"])
def test_embedded_rejects_bad_or_non_loopback_listen(http, names, listen) -> None:
    r = http("POST", "/proxies", json={"name": names(), "listen": listen, "upstream": "127.0.0.1:9"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body: listen")


@embedded_only
def test_embedded_rejects_bad_upstream(http, names) -> None:
    r = http("POST", "/proxies", json={"name": names(), "listen": LOOPBACK_ANY, "upstream": "db"})
    assert r.status_code == 400
    assert r.json()["error"] == "bad request body: upstream address db: missing port in address"


@embedded_only
@pytest.mark.parametrize(
    ("toxic", "fragment"),
    [
        ({"type": "latency", "attributes": {"latency": -5}}, "must be >= 0"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity must be between 0 and 1"),
        ({"type": "latency", "attributes": {"jitter": 2.5}}, "must be an integer"),
    ],
)
def test_embedded_rejects_nonsense_toxics(http, names, toxic, fragment) -> None:
    name = names()
    create(http, name)
    r = http("POST", f"/proxies/{name}/toxics", json=toxic)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


@embedded_only
@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "latency", "attributes": {"latency": 1e400}}',
        b'{"type": "latency", "attributes": {"latency": 100000000000000000000000000000}}',
        b'{"type": "latency", "toxicity": NaN}',
        b"[" * 100_000,
    ],
)
def test_embedded_answers_400_not_500_to_extreme_bodies(http, names, raw) -> None:
    name = names()
    create(http, name)
    r = http("POST", f"/proxies/{name}/toxics", data=raw)
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body")


@embedded_only
def test_embedded_answers_unknown_routes_with_json(http) -> None:
    assert http("GET", "/nope").status_code == 404
    r = http("DELETE", "/version")
    assert r.status_code == 405 and r.json()["status"] == 405
