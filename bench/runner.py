"""Runs the benchmarks by name, prints their tables (or JSON) and, on request, writes docs/benchmarks.md.

    python -m bench [serving|fullpath|proxy|startup|retrain|memory|llm|all] [--quick] [--json] [--update-docs]
    faultline bench ...   (the same, through lab/benchcmd.py)

With one benchmark `--json` prints its result object as is (e.g. `{"rps", "litserve_rps", "ratio_vs_litserve",
...}` for serving); with several, an object keyed by benchmark name. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from typing import Any

from bench import docs
from bench.common import machine

# name -> (module, section title); the order `all` runs them in (cheapest stack work last)
BENCHES: dict[str, tuple[str, str]] = {
    "serving": ("bench.serving", "Serving: model server vs tuned peers, beside the raw-ASGI ceiling"),
    "fullpath": ("bench.fullpath", "Full path through every proxy"),
    "proxy": ("bench.proxy", "Network proxy"),
    "startup": ("bench.startup", "Start-up and scenario reset"),
    "retrain": ("bench.retrain", "Retrain → canary → promote"),
    "memory": ("bench.memory", "Memory"),
    "llm": ("bench.llm", "LLM serving: ours vs transformers vs LitServe, and the raw decode ceiling"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", nargs="?", default="all", choices=[*BENCHES, "all"],
                        help="which benchmark (default all)")
    parser.add_argument("--quick", action="store_true", help="shorter runs (serving: about two minutes)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--update-docs", action="store_true", help="rewrite measured sections of docs/benchmarks.md")
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)  # shrink durations (smoke tests)


def _run_one(name: str, quick: bool, scale: float) -> dict[str, Any]:
    module = importlib.import_module(BENCHES[name][0])
    if name == "proxy":  # bench/proxy.py is the proxy owner's: called as it is, its goal restated here
        r = module.run(quick)
        hop = r["round_trip"]["added_per_hop_median_us"]
        r.update({"bench": "proxy", "added_per_hop_median_ms": round(hop / 1000, 4),
                  "goal": {"added_per_hop_median_ms": 0.3, "met": hop <= 300}})
        return r
    kwargs = {"scale": scale} if scale != 1.0 else {}
    return module.run(quick=quick, **kwargs)


def section_body(name: str, r: dict[str, Any], command: str) -> str:
    module = importlib.import_module(BENCHES[name][0])
    m = r.get("machine") or {}
    load = m.get("load_average", m.get("load"))
    head = [f"## {BENCHES[name][1]}", "",
            f"`{command}` on {time.strftime('%Y-%m-%d')}, load average {load} at the start"
            + (f", {r['load_average_end']} at the end" if "load_average_end" in r else "") + "."]
    summary = getattr(module, "summary", None)
    if summary is not None:
        head += ["", summary(r)]
    return "\n".join([*head, "", module.table(r), *getattr(module, "notes", lambda _r: [])(r)])


def run(which: str, quick: bool, as_json: bool, update_docs: bool, scale: float = 1.0) -> int:
    names = list(BENCHES) if which == "all" else [which]
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name in names:
        print(f"bench {name}{' --quick' if quick else ''}: running ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            results[name] = _run_one(name, quick, scale)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the others' figures
            traceback.print_exc(file=sys.stderr)
            failed[name] = f"{type(exc).__name__}: {exc}"
            print(f"bench {name}: FAILED: {failed[name]}", file=sys.stderr, flush=True)
            continue
        print(f"bench {name}: done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
        if not as_json:
            print(section_body(name, results[name], _command(name, quick)) + "\n", flush=True)
    if as_json:
        out: Any = results[names[0]] if len(names) == 1 and not failed else {**results, "failed": failed}
        print(json.dumps(out, indent=2))
    if update_docs and results:
        sections = {}
        for name, r in results.items():
            if name == "proxy":  # its own section writer and format
                importlib.import_module("bench.proxy").update_docs(r, _command(name, quick))
            else:
                sections[name] = section_body(name, r, _command(name, quick))
        docs.update(sections, machine())
    return 1 if failed else 0


def _command(name: str, quick: bool) -> str:
    return f"faultline bench {name}" + (" --quick" if quick else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Faultline benchmarks (issue #7).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    return run(args.which, args.quick, args.json, args.update_docs, args.scale)
