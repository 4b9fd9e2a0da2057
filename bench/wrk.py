"""Closed-loop saturation with wrk (Debian's `wrk`): fixed connections, as many requests as the server takes.

A generated Lua script posts JSON bodies (cycling through the given list, each thread starting at its own
offset) and, when wrk finishes, prints one machine-readable line with requests, duration, errors and latency
percentiles taken from wrk's own histogram. wrk runs in its own process, so the client never shares an
interpreter with a server under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

MARK = "BENCH_JSON "

_LUA = r"""
local bodies = {
%(bodies)s
}
local path = %(path)s
local reqs = {}
local idx = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("start_at", #threads * 7)
end

function init(args)
  for i, b in ipairs(bodies) do
    reqs[i] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, b)
  end
  idx = start_at or 0
end

function request()
  idx = idx %% #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%(mark)s{\"requests\":%%d,\"duration_us\":%%d,\"connect\":%%d,\"read\":%%d,\"write\":%%d,\"status\":%%d," ..
    "\"timeout\":%%d,\"p50_us\":%%d,\"p90_us\":%%d,\"p99_us\":%%d,\"max_us\":%%d,\"mean_us\":%%.1f}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


class WrkMissing(RuntimeError):
    pass


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("wrk is not installed: `sudo apt-get install wrk` (Debian package), or run `make bench`")
    return found


def _lua_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_script(dest: Path, path: str, bodies: list[bytes]) -> Path:
    listing = ",\n".join(_lua_string(b.decode()) for b in bodies)
    dest.write_text(_LUA % {"bodies": listing, "path": _lua_string(path), "mark": MARK})
    return dest


def _ms(us: float) -> float | None:
    # wrk's histogram has printed negative percentiles for runs whose latencies overflowed it: no figure, not one
    return round(us / 1000, 2) if us >= 0 else None


def run(url: str, script: Path, seconds: float, connections: int = 32, threads: int = 1,
        timeout_s: float = 10.0) -> dict[str, Any]:
    """One wrk run; returns rps, latency percentiles (ms) and error counts."""
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-800:]} {proc.stderr[-800:]}")
    raw = json.loads(line[len(MARK):])
    duration_s = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    ok = max(0, raw["requests"] - raw["status"])
    return {
        "connections": connections,
        "seconds": round(duration_s, 2),
        "requests": raw["requests"],
        "rps": round(ok / duration_s, 1) if duration_s > 0 else 0.0,
        "errors": errors,
        "non_2xx": raw["status"],
        "p50_ms": _ms(raw["p50_us"]),
        "p90_ms": _ms(raw["p90_us"]),
        "p99_ms": _ms(raw["p99_us"]),
        "max_ms": _ms(raw["max_us"]),
    }
