"""A new part of the stack declared outside the repo's code: a trivial echo service, defined here.

This module is both the part's declaration (what `lab/parts/` modules hold) and its service (`python -m
tests.stack.test_part_echo --host H --port P`: /healthz, /readyz, /metrics, /admin/config, and an echo of
anything else). Naming it in FAULTLINE_PARTS is all it takes: a real lab started with that variable starts the
echo service with a proxy in front of it, and it appears in `faultline status`, the monitor, the stack map, the
console's targets, the sandbox forms and the generated compose file — no other file changed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lab.parts import register
from lab.parts.base import MapPlace, MiB, Part

MODULE = "tests.stack.test_part_echo"
NAME = "echo"
ROOT = Path(__file__).resolve().parents[2]

ECHO = Part(
    name=NAME,
    module=MODULE,
    doc="a trivial echo service declared by a test",
    port_offset=71,
    proxy_offset=70,
    tier=1,
    memory_limit=128 * MiB,
    status_rank=30,
    metrics_prefix=NAME,
    settable=frozenset({"greeting"}),
    map=MapPlace("downstream", rank=30),
)

# Registered only where FAULTLINE_PARTS names this module (the lab and CLI processes the test starts): the pytest
# process's own registry stays the repo's, so other tests in the same session see the stack they expect.
if __name__ == MODULE and MODULE in os.environ.get("FAULTLINE_PARTS", "").split(","):
    register(ECHO)


# --- the service ------------------------------------------------------------------------------------------------

class EchoHandler(BaseHTTPRequestHandler):
    config: dict[str, Any] = {"greeting": "hello"}
    served = 0

    def log_message(self, *_args: Any) -> None:  # quiet: the supervisor captures stderr
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path in ("/healthz", "/readyz"):
            return self._send(200, {"status": "ok"})
        if self.path == "/metrics":
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            text = (f'echo_requests_total{{code="200"}} {EchoHandler.served}\n'
                    f"process_resident_memory_bytes {rss}\n")
            return self._send(200, text, "text/plain; version=0.0.4")
        if self.path == "/admin/config":
            return self._send(200, EchoHandler.config)
        EchoHandler.served += 1
        return self._send(200, {"echo": self.path, "greeting": EchoHandler.config["greeting"]})

    def do_PATCH(self) -> None:  # noqa: N802
        if self.path != "/admin/config":
            return self._send(404, {"detail": "not found"})
        try:
            changes = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self._send(400, {"detail": "body is not JSON"})
        unknown = set(changes) - set(EchoHandler.config) if isinstance(changes, dict) else {"(not an object)"}
        if unknown:
            return self._send(422, {"detail": f"unknown config keys: {', '.join(sorted(unknown))}"})
        EchoHandler.config.update(changes)
        return self._send(200, EchoHandler.config)


def serve(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=MODULE)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", default=None)
    args = p.parse_args(argv)
    if args.config:
        EchoHandler.config.update(json.loads(args.config))
    ThreadingHTTPServer((args.host, args.port), EchoHandler).serve_forever()


if __name__ == "__main__":
    serve()


# --- the test -----------------------------------------------------------------------------------------------------

def test_a_part_declared_in_a_test_appears_everywhere(stack_factory: Any, monkeypatch: Any) -> None:
    import httpx

    monkeypatch.setenv("FAULTLINE_PARTS", MODULE)
    lab = stack_factory(replicas=1, name="echo")
    http = lab.client

    # faultline status: the echo service runs, ready, with its hop
    status = lab.status()
    echo = next(s for s in status["services"] if s["name"] == NAME)
    assert echo["ready"] and echo["state"] == "running", echo
    assert echo["argv"][1:3] == ["-m", MODULE] and echo["memory_limit_bytes"] == 128 * MiB
    assert echo["port"] == lab.topology.ports.base + 71
    assert echo["proxy"]["listen"].endswith(f":{lab.topology.ports.base + 70}")
    assert NAME in [p["name"] for p in status["proxies"]]
    text = lab.cli("status")
    assert text.returncode == 0, text.stderr
    assert any(line.split()[:1] == [NAME] for line in text.stdout.splitlines()), text.stdout

    # its hop carries traffic to it
    r = httpx.get(f"http://127.0.0.1:{lab.topology.ports.base + 70}/hi", timeout=10, trust_env=False)
    assert r.status_code == 200 and r.json()["echo"] == "/hi"

    # the monitor scrapes it directly (not through its hop), under its metrics prefix
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        figures = http.get(lab.lab_url + "/api/metrics").json()["services"].get(NAME) or {}
        if figures.get("up") and figures.get("rss_bytes"):
            break
        time.sleep(0.5)
    assert figures.get("up") and figures.get("rss_bytes"), figures

    # the console: a target (config_show lists its settable key, config_set changes it, logs and restart work)
    shown = http.post(lab.lab_url + "/api/console/config_show", json={"service": NAME})
    assert shown.status_code == 200, shown.text
    assert shown.json()["data"]["settable"] == ["greeting"]
    changed = http.post(lab.lab_url + "/api/console/config_set",
                        json={"service": NAME, "key": "greeting", "value": "hi"})
    assert changed.status_code == 200, changed.text
    assert http.get(f"{lab.lab_url}/api/services/{NAME}/logs").status_code == 200
    refused = http.post(lab.lab_url + "/api/console/config_set",
                        json={"service": NAME, "key": "port", "value": 1})
    assert refused.status_code in (403, 422), refused.text

    # the sandbox's fault forms offer it as a service and as a hop
    kinds = http.get(lab.lab_url + "/api/faults/kinds").json()
    choices = [c for k in kinds for c in (k.get("target") or {}).get("choices") or []]
    assert NAME in choices, kinds
    for kind in ("process.kill", "network.down"):
        form = http.get(lab.lab_url + "/sandbox/forms", params={"name": kind})
        assert form.status_code == 200 and f'<option value="{NAME}"' in form.text, (kind, form.text[:2000])

    # the stack map (on the sandbox page) draws it
    page = http.get(lab.lab_url + "/sandbox")
    assert page.status_code == 200 and f'data-service="{NAME}"' in page.text

    # the generated compose file holds it (in a process that sees the declaration, as the lab does)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from lab import composegen; print(composegen.compose_text()); print(composegen.toxiproxy_text())"
    gen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                         timeout=60)
    assert gen.returncode == 0, gen.stderr
    assert f"\n  {NAME}:\n" in gen.stdout and f'"-m", "{MODULE}", "--host", "127.0.0.1", "--port", "8171"' in gen.stdout
    assert '{"name": "echo", "listen": "127.0.0.1:8170", "upstream": "127.0.0.1:8171", "enabled": true}' in gen.stdout


def test_a_part_module_that_cannot_be_imported_is_a_clear_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULTLINE_PARTS": f"{MODULE}, no_such.part_module"}
    proc = subprocess.run([sys.executable, "-c", "from lab import parts; print([p.name for p in parts.parts()])"],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=60)
    assert proc.returncode != 0
    assert "FAULTLINE_PARTS: cannot import part module 'no_such.part_module'" in proc.stderr
    env["FAULTLINE_PARTS"] = MODULE
    code = "import json; from lab import parts; print(json.dumps([p.name for p in parts.parts()]))"
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["gateway", "feature-store", "model", "llm", NAME, "registry", "netproxy",
                                       "loadgen"]
