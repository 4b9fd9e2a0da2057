"""Where the lab listens and who may talk to it: 127.0.0.1 by default (every service too); another address only
with a token, and then every /api request without it is a 401.

Nothing here ever binds a non-loopback address: the refusal is checked with an address this machine does not
have (TEST-NET-1), the token check on a lab started with `--token` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import httpx
import psutil
import pytest
from relkit import token_in_env

from lab.apiguard import is_loopback
from lab.cli import CliError, _binding
from lab.ports import find_free_block, is_free

pytestmark = pytest.mark.stack

UNASSIGNED = "192.0.2.10"  # TEST-NET-1 (RFC 5737): never an address of this machine


def _listening(pid: int) -> list[tuple[str, int]]:
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def test_the_lab_and_every_service_listen_on_loopback_only(stack: Any) -> None:
    st = stack.status()
    pids = [stack.lab_pid] + [s["pid"] for s in st["services"] if s["pid"]]
    sockets = {pid: _listening(pid) for pid in pids}
    assert sockets[stack.lab_pid], "the lab listens somewhere"
    assert sum(len(v) for v in sockets.values()) >= len(pids), sockets
    elsewhere = {pid: [s for s in socks if s[0] != "127.0.0.1"] for pid, socks in sockets.items()}
    assert not any(elsewhere.values()), elsewhere
    proxies = [p["listen"] for p in st["proxies"]]
    assert proxies and all(p.startswith("127.0.0.1:") for p in proxies), proxies


@pytest.mark.parametrize("command", ["serve", "up"])
@pytest.mark.parametrize("host", ["0.0.0.0", UNASSIGNED, "::"])
def test_another_address_without_a_token_is_refused_before_anything_starts(
        faultline_cli: Any, fresh_home: Any, monkeypatch: pytest.MonkeyPatch, command: str, host: str) -> None:
    monkeypatch.delenv("FAULTLINE_TOKEN", raising=False)
    ports = find_free_block(1)
    proc = faultline_cli(command, "--home", str(fresh_home), "--host", host, "--replicas", "1",
                         "--base-port", str(ports.base), "--netproxy-port", str(ports.netproxy),
                         "--lab-port", str(ports.lab), timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert f"refusing to listen on {host} without a token" in proc.stderr
    assert "--token" in proc.stderr and "FAULTLINE_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (fresh_home / "lab.json").exists()
    assert all(is_free(p) for p in (ports.lab, ports.netproxy, ports.gateway, ports.gateway_proxy))


def _args(host: str, token: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(host=host, token=token)


def test_the_binding_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULTLINE_TOKEN", raising=False)
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert is_loopback(host) and _binding(_args(host)) == (host, None)
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", UNASSIGNED):
        assert not is_loopback(host)
        with pytest.raises(CliError, match="without a token"):
            _binding(_args(host))
    assert _binding(_args("0.0.0.0", "a-long-token")) == ("0.0.0.0", "a-long-token")
    monkeypatch.setenv("FAULTLINE_TOKEN", "from-the-environment")
    assert _binding(_args("0.0.0.0")) == ("0.0.0.0", "from-the-environment")
    with pytest.raises(CliError, match="at least 8"):
        _binding(_args("0.0.0.0", "short"))


def _fill(path: str) -> str:
    return re.sub(r"\{pid\}", "1", re.sub(r"\{(?!pid\})[^}]+\}", "x", path))


def test_with_a_token_every_api_route_refuses_requests_without_it(guarded_lab: Any) -> None:
    doc = guarded_lab.http.get("/openapi.json").json()
    routes = [(method.upper(), _fill(path)) for path, ops in doc["paths"].items() for method in ops
              if path.startswith("/api")]
    assert len(routes) >= 30 and ("POST", "/api/down") in routes, routes
    anonymous = httpx.Client(base_url=guarded_lab.url, timeout=30, trust_env=False)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-value"}, {"X-Faultline-Token": "nope"},
                        {"Authorization": f"Basic {guarded_lab.token}"}):
            for method, path in routes:
                r = anonymous.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        # the token, as a bearer token or in its own header
        assert anonymous.get("/api/health", headers={"X-Faultline-Token": guarded_lab.token}).status_code == 200
        assert guarded_lab.http.get("/api/status").json()["phase"] == "running"
        # nothing the refused requests asked for happened: the lab is up, nothing was stopped
        st = guarded_lab.http.get("/api/status").json()
        assert all(s["state"] == "running" for s in st["services"]), st["services"]
        # the UI's pages still answer a browser on this machine (loopback peer; their own Host/CSRF checks apply)
        assert anonymous.get("/").status_code == 200
    finally:
        anonymous.close()


def test_the_cli_sends_the_token_from_the_environment(guarded_lab: Any, faultline_cli: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULTLINE_TOKEN", raising=False)
    home = str(guarded_lab.handle.home)
    for command in (("status",), ("history",)):  # lab/cli.py's client, and the console's (lab/console/cli.py)
        refused = faultline_cli(*command, "--home", home, timeout=60)
        assert refused.returncode == 1 and "missing token" in refused.stderr, (command, refused.stderr)
    with token_in_env(guarded_lab.token):
        ok = faultline_cli("status", "--json", "--home", home, timeout=60)
        history = faultline_cli("history", "--home", home, timeout=60)
    assert ok.returncode == 0 and '"phase": "running"' in ok.stdout, ok.stderr
    assert history.returncode == 0, history.stderr
