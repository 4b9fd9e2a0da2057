"""The whole stack as real processes behind real proxies, driven through the `faultline` CLI and the lab's JSON API.

Non-destructive checks share the session's `stack`; the issue's end-to-end chain and the SIGKILL test start
stacks of their own because they take them down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from kit import assert_all_gone
from kit import wait_until as wait_for

from lab.ports import find_free_block, is_free, stack_ports
from lab.topology import Topology

pytestmark = [pytest.mark.stack, pytest.mark.slow]

GiB = 1024**3


def txn(tid: str, **over) -> dict:
    body = {"transaction_id": tid, "card_id": "c000042", "amount": 42.5, "merchant_category": "grocery",
            "hour": 13, "country": "US", "card_present": True, "device_age_days": 300}
    return {**body, **over}


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample over series whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# --- the shared stack --------------------------------------------------------------------------------------------


def test_status_lists_services_and_proxies(stack):
    # The load generator is listed only while traffic runs; an earlier module may have left some on the shared stack.
    stack.cli("traffic", "--stop")
    st = json.loads(stack.cli("status", "--json").stdout)
    names = [s["name"] for s in st["services"]]
    assert names == ["gateway", "feature-store", "model-1", "model-2", "registry", "netproxy"]
    assert st["supervisor_pid"] == stack.lab_pid and st["phase"] == "running" and st["ready"]
    assert st["component_errors"] == []
    for s in st["services"]:
        assert s["state"] == "running" and s["ready"] and s["pid"] > 0 and s["rss_bytes"] > 5_000_000, s
        assert {"url", "cpu_percent", "restarts", "last_exit"} <= set(s)
    proxies = {p["name"]: p for p in st["proxies"]}
    assert list(proxies) == [h.name for h in stack.topology.hops()]
    for hop in stack.topology.hops():
        assert proxies[hop.name]["listen"] == hop.listen and proxies[hop.name]["upstream"] == hop.upstream
    # The human-readable form names every service and proxy too.
    text = stack.cli("status").stdout
    assert all(n in text for n in names) and stack.topology.hop("model-2").listen in text


def test_whole_stack_with_two_replicas_stays_under_1_5_gib(stack):
    st = stack.status()
    total = sum(s["rss_bytes"] for s in st["services"])
    assert total == st["total_rss_bytes"] or abs(total - st["total_rss_bytes"]) < 50_000_000
    assert total < 1.5 * GiB, f"stack RSS {total / 2**20:.0f} MiB"


def test_score_round_trip_through_the_gateway_proxy_and_bad_input_is_4xx(stack):
    r = stack.client.post(stack.public_url + "/v1/score", json=txn("shared-ok-1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["score"] <= 1.0 and body["decision"] in ("approve", "decline")
    assert body["replica"] in ("model-1", "model-2") and body["model_version"] == "v1"
    bad = stack.client.post(stack.public_url + "/v1/score", json=txn("shared-bad-1", amount="lots"))
    assert bad.status_code == 422 and "amount" in bad.json()["detail"]
    assert stack.client.post(stack.public_url + "/v1/score", content=b"{not json").status_code in (400, 422)


def test_every_hop_goes_through_its_proxy(stack):
    """Disabling proxy `feature-store` changes what the gateway does: it falls back to default features."""
    gw = stack.service("gateway")
    assert stack.topology.hop("feature-store").url in gw["argv"]
    assert all(stack.topology.hop(m).url in " ".join(gw["argv"]) for m in stack.topology.model_names())
    api = stack.status()["netproxy_url"]
    ok = stack.client.post(stack.public_url + "/v1/score", json=txn("hop-1")).json()
    assert ok["fallback"] is None
    r = stack.client.post(f"{api}/proxies/feature-store", json={"enabled": False})
    assert r.status_code == 200, r.text
    try:
        down = stack.client.post(stack.public_url + "/v1/score", json=txn("hop-2")).json()
        assert down["fallback"] == "default_features"
        assert not next(p for p in stack.status()["proxies"] if p["name"] == "feature-store")["enabled"]
    finally:
        stack.client.post(f"{api}/proxies/feature-store", json={"enabled": True})
    back = wait_for(lambda: (b := stack.client.post(stack.public_url + "/v1/score", json=txn("hop-3")).json())
                    and b["fallback"] is None and b, timeout=15)
    assert back["fallback"] is None


def test_logs_are_captured_timestamped_and_filterable(stack):
    out = stack.cli("logs", "model-1", "--regex", "--grep", r"\[faultline\] (started|ready)").stdout.splitlines()
    assert len(out) >= 2 and all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in out)
    assert "started pid=" in out[0] and "ready after" in out[1]
    tail = stack.cli("logs", "gateway", "--tail", "1").stdout.splitlines()
    assert len(tail) == 1
    api = stack.client.get(stack.lab_url + "/api/services/gateway/logs", params={"grep": "starting", "tail": 5}).json()
    assert api["lines"] and all("starting" in x["line"] for x in api["lines"])
    assert "starting" in Path(api["file"]).read_text()
    bad = stack.client.get(stack.lab_url + "/api/services/gateway/logs", params={"grep": "(", "regex": 1})
    assert bad.status_code == 400 and "regular expression" in bad.json()["detail"]
    plain = stack.client.get(stack.lab_url + "/api/services/gateway/logs", params={"grep": "("})
    assert plain.status_code == 200  # without regex, grep is a plain substring
    assert stack.client.get(stack.lab_url + "/api/services/nope/logs").status_code == 404
    assert "no service named 'nope'" in stack.cli("logs", "nope").stderr


def test_lab_api_rejects_bad_input_with_4xx(stack):
    c, url = stack.client, stack.lab_url
    assert c.post(url + "/api/scale", json={"replicas": 0}).status_code == 422
    assert c.post(url + "/api/scale", json={"replicas": "two"}).status_code == 422
    assert c.patch(url + "/api/services/gateway", json={"memory_limit_bytes": -5}).status_code == 422
    assert c.patch(url + "/api/services/gateway", json={"restart_policy": "sometimes"}).status_code == 422
    assert c.post(url + "/api/services/nope/restart").status_code == 404
    proc = stack.cli("scale", "99")
    assert proc.returncode == 2 and "between 1 and 16" in proc.stderr


# --- errors before anything starts -------------------------------------------------------------------------------


def test_port_in_use_is_a_clear_error_and_nothing_starts(fresh_home, faultline_cli):
    ports = find_free_block()
    taken = Topology(ports=ports).ports.gateway
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        proc = faultline_cli("up", "-d", "--home", str(fresh_home), "--base-port", str(ports.base),
                             "--netproxy-port", str(ports.netproxy), "--lab-port", str(ports.lab), timeout=60)
    assert proc.returncode == 1
    assert f"port {taken} (gateway) is already in use" in proc.stderr
    assert "--base-port" in proc.stderr and "faultline down" in proc.stderr
    assert not (fresh_home / "lab.json").exists()
    assert all(u.port == taken or is_free(u.port) for u in stack_ports(Topology(ports=ports)))


def test_missing_models_is_a_clear_error(tmp_path, faultline_cli):
    proc = faultline_cli("up", "-d", "--home", str(tmp_path), timeout=60)
    assert proc.returncode == 1 and "no trained models" in proc.stderr and "make setup" in proc.stderr


# --- own stacks: the issue's chain, and SIGKILL of the lab ------------------------------------------------------


def test_issue_chain_up_score_feedback_scale_kill_oom_corrupt_down(stack_factory, faultline_cli):
    h = stack_factory()
    assert "Faultline is up in" in h.up_output and h.public_url in h.up_output
    c = h.client
    # score -> feedback -> metrics show it
    scored = [c.post(h.public_url + "/v1/score", json=txn(f"chain-{i}", amount=20.0 + i)).json() for i in range(6)]
    assert all(0 <= s["score"] <= 1 for s in scored)
    for s in scored:
        assert c.post(h.public_url + "/v1/feedback", json={"transaction_id": s["transaction_id"],
                                                           "label": 0}).status_code == 202
    assert c.post(h.public_url + "/v1/feedback", json={"transaction_id": "never-scored", "label": 1}
                  ).status_code == 404
    metrics = c.get(h.public_url + "/metrics").text
    assert metric(metrics, "gateway_feedback_total", model_version="v1") >= 6
    assert metric(metrics, "gateway_predictions_total", model_version="v1") >= 6

    # scale replicas up: a third replica, its proxy, and the gateway told about it; a scenario's toxic on an
    # existing proxy survives the scale
    api = h.status()["netproxy_url"]
    toxic = {"name": "slow", "type": "latency", "stream": "downstream", "attributes": {"latency": 1}}
    assert c.post(f"{api}/proxies/model-1/toxics", json=toxic).status_code == 200
    out = h.cli("scale", "3")
    assert out.returncode == 0, out.stderr
    assert [t["name"] for t in c.get(f"{api}/proxies/model-1/toxics").json()] == ["slow"]
    assert c.delete(f"{api}/proxies/model-1/toxics/slow").status_code == 204
    st = h.status()
    assert [s["name"] for s in st["services"]][:5] == ["gateway", "feature-store", "model-1", "model-2", "model-3"]
    assert h.service("model-3")["ready"] and any(p["name"] == "model-3" for p in st["proxies"])
    gw_cfg = c.get(h.topology.service_url("gateway") + "/admin/config").json()
    assert gw_cfg["replicas"]["model-3"] == h.topology.with_replicas(3).hop("model-3").url

    def reaches_model_3() -> bool:
        replies = [c.post(h.public_url + "/v1/score", json=txn(f"spread-{uuid.uuid4().hex}")) for _ in range(20)]
        return "model-3" in {r.json()["replica"] for r in replies}

    wait_for(reaches_model_3, timeout=30)

    # kill a replica -> restarted by policy
    victim = h.service("model-1")
    os.kill(victim["pid"], signal.SIGKILL)
    again = wait_for(lambda: (s := h.service("model-1"))["ready"] and s["pid"] != victim["pid"] and s, 60)
    assert again["restarts"] == 1 and again["last_exit"]["code"] == 137 and again["last_exit"]["reason"] == "Killed"
    assert c.post(h.public_url + "/v1/score", json=txn("after-kill")).status_code == 200

    # memory limit below what the replica uses -> killed like the OOM killer, exit 137 OOMKilled
    m2 = h.service("model-2")
    assert h.cli("limit", "model-2", "--memory", str(m2["rss_bytes"] // 2)).returncode == 0
    oom = wait_for(lambda: (s := h.service("model-2"))["last_exit"] and s, 30)
    assert oom["last_exit"]["code"] == 137 and oom["last_exit"]["reason"] == "OOMKilled"
    assert "memory limit exceeded" in h.cli("logs", "model-2", "--grep", "memory limit").stdout
    assert h.cli("limit", "model-2", "--memory", "none").returncode == 0
    # The learner's fix: lift the limit and restart now rather than wait out the crash-loop backoff.
    assert h.cli("restart", "model-2").returncode == 0
    wait_for(lambda: h.service("model-2")["ready"], 90)

    # a corrupt artifact is refused; the old version keeps serving
    registry = h.topology.service_url("registry")
    assert c.post(f"{registry}/admin/models/v2/corrupt").status_code == 200
    model1 = h.topology.service_url("model-1")
    refused = c.post(model1 + "/admin/reload", json={"versions": ["v2"]})
    assert refused.status_code == 409 and "sha256" in refused.text.lower()
    served = c.post(model1 + "/v1/predict", json={"rows": [_row()]}).json()
    assert served["model_version"] == "v1"

    pids = h.all_pids()
    ports = [u.port for u in stack_ports(h.topology.with_replicas(3))]
    # down leaves nothing: no process, no listening port, no lab.json
    out = faultline_cli("down", "--home", str(h.home))
    assert out.returncode == 0 and "stopped" in out.stdout
    assert_all_gone(pids, ports, timeout=15)
    assert not (h.home / "lab.json").exists()


def _row() -> dict:
    return {"amount": 42.5, "hour": 13, "device_age_days": 300, "txn_count_24h": 2, "avg_amount_30d": 60.0,
            "account_age_days": 700, "merchant_category": "grocery", "country": "US", "card_present": True,
            "home_country": "US"}


def test_sigkill_of_the_detached_lab_leaves_no_orphans(stack_factory, faultline_cli):
    h = stack_factory(replicas=1)
    pids = h.all_pids()
    ports = [u.port for u in stack_ports(h.topology)]
    assert len(pids) == 6
    os.kill(h.lab_pid, signal.SIGKILL)
    assert_all_gone(pids, ports, timeout=10)
    # The stale lab.json is recognised as dead: no lab, and a new `up` would be allowed.
    proc = faultline_cli("status", "--home", str(h.home))
    assert proc.returncode == 1 and "no lab is running" in proc.stderr


def test_ready_quickly(stack):
    """Generous functional bound here; the ≤ 5 s figure is measured separately (docs/supervisor.md)."""
    assert stack.up_seconds < 60
    st = stack.status()
    assert st["ready_after_s"] is not None and st["ready_after_s"] < 60


def test_lab_api_health(stack):
    r = httpx.get(stack.lab_url + "/api/health", trust_env=False)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_traffic_starts_changes_and_stops_through_the_lab(stack):
    started = json.loads(stack.cli("traffic", "--rps", "15", "--json").stdout)
    try:
        assert started["target_rps"] == 15 and started["profile"] == "baseline"
        lg = stack.service("loadgen")
        assert lg["ready"] and lg["url"].endswith(f":{stack.topology.ports.locust_web}")
        assert stack.topology.public_url in lg["argv"]  # traffic enters through the gateway's proxy
        wait_for(lambda: json.loads(stack.cli("traffic", "--json").stdout)["achieved_rps"] > 3, timeout=30)
        bad = stack.cli("traffic", "--rps", "5", "--profile", "no-such-profile")
        assert bad.returncode == 1 and "no-such-profile" in bad.stderr
        assert stack.client.post(stack.lab_url + "/api/traffic", json={"rps": -1}).status_code == 422
        changed = json.loads(stack.cli("traffic", "--rps", "5", "--json").stdout)
        assert changed["target_rps"] == 5
        argv = stack.service("loadgen")["argv"]
        assert argv[argv.index("--rps") + 1] == "5"  # a restart would come back at the new rate
    finally:
        assert stack.cli("traffic", "--stop").returncode == 0
    assert "loadgen" not in [s["name"] for s in stack.status()["services"]]
    assert json.loads(stack.cli("traffic", "--json").stdout) == {"running": False}


def test_foreground_up_prints_urls_and_ctrl_c_stops_everything(fresh_home):
    """`faultline up` in the foreground: ready banner with every URL; SIGINT (Ctrl-C) leaves nothing behind."""
    ports = find_free_block()
    topo = Topology(ports=ports)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("TOXIPROXY_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "up", "--home", str(fresh_home), "--base-port", str(ports.base),
         "--netproxy-port", str(ports.netproxy), "--lab-port", str(ports.lab), "--exit-with", str(os.getpid())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            assert line, f"faultline up exited early ({proc.poll()}): {''.join(lines)}"
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        banner = "".join(lines)
        assert "Faultline is up in" in banner and topo.public_url in banner
        assert all(topo.service_url(n) in banner for n in ("gateway", "feature-store", "model-1", "registry"))
        st = httpx.get(f"http://127.0.0.1:{ports.lab}/api/status", trust_env=False, timeout=10).json()
        pids = [proc.pid] + [s["pid"] for s in st["services"] if s["pid"]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0  # Ctrl-C is the normal way to stop a foreground lab (`make run`)
        assert_all_gone(pids, [u.port for u in stack_ports(topo)], timeout=10)
        assert not (fresh_home / "lab.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
