"""The `faultline` CLI without a running stack: clear errors, and `faultline netproxy` serving the Toxiproxy API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lab.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_commands_without_a_lab_say_how_to_start_one(tmp_path, faultline_cli):
    for args in (["status"], ["scale", "3"], ["logs", "gateway"], ["restart", "model-1"], ["traffic"]):
        proc = faultline_cli(*args, "--home", str(tmp_path), timeout=60)
        assert proc.returncode == 1, args
        assert "no lab is running" in proc.stderr and "faultline up -d" in proc.stderr
    down = faultline_cli("down", "--home", str(tmp_path), timeout=60)
    assert down.returncode == 0 and "nothing to stop" in down.stdout


def test_bad_arguments_are_usage_errors(tmp_path, faultline_cli):
    assert faultline_cli("up", "--replicas", "0", "--home", str(tmp_path)).returncode == 2
    assert faultline_cli("up", "--base-port", "70000", "--home", str(tmp_path)).returncode == 2
    bad = faultline_cli("limit", "gateway", "--memory", "lots", "--home", str(tmp_path))
    assert bad.returncode == 2 and "bad size" in bad.stderr


def test_start_up_traffic_is_checked_before_anything_starts(tmp_path, faultline_cli):
    home = tmp_path / "home"
    for args, says in ((("--rps", "5", "--profile", "nope"), "known profiles: baseline"),
                       (("--rps", "2001"), "between 0 and 2,000")):
        for cmd in ("up", "serve"):
            proc = faultline_cli(cmd, *args, "--home", str(home), timeout=60)
            assert proc.returncode == 1 and says in proc.stderr, (cmd, args, proc.stderr)
    assert not home.exists()  # nothing was created, let alone started


def test_faultline_netproxy_serves_the_toxiproxy_api():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "netproxy", "--port", str(port)], env=env,
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                assert time.time() < deadline, "netproxy did not answer"
                time.sleep(0.1)
        assert r.status_code == 200 and "version" in r.json()
        assert httpx.get(f"http://127.0.0.1:{port}/proxies", trust_env=False).json() == {}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
