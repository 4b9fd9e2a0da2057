"""docs/benchmarks.md: each benchmark owns one section between `<!-- bench:NAME start -->` and `... end -->`.

A run rewrites only the sections it measured (and the header with the commands and the machine); sections of
other benchmarks (the proxy's, the monitor's) are left exactly as found.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import REPO

DOCS = REPO / "docs" / "benchmarks.md"

HEADER_COMMANDS = """\
| command | what it measures |
|---|---|
| `faultline bench serving [--quick] [--json]` | ours vs tuned LitServe, plain FastAPI, same artifact; ASGI ceiling |
| `faultline bench fullpath [--quick] [--json]` | client → every proxy → gateway, feature store, model; fixed rates |
| `faultline bench proxy [--quick] [--json]` | netproxy overhead per hop, fault fidelity (`python -m bench.proxy`) |
| `faultline bench startup [--quick] [--json]` | `faultline up -d` to all-ready; scenario reset between attempts |
| `faultline bench retrain [--quick] [--json]` | retrain on recent traffic → canary → promote, on a running stack |
| `faultline bench memory [--quick] [--json]` | RSS of the whole stack with two replicas under light traffic |
| `faultline bench llm [--quick] [--json]` | LLM server vs `transformers` vs LitServe, same weights; decode ceiling |
| `faultline bench all [--quick]` | all of the above; `make bench` = `python -m bench all --update-docs` |
| `python -m bench.drift --update-docs` | monitor: drift report latency, scrape-loop CPU (the monitor section) |
"""


def section(name: str, body: str) -> str:
    return f"<!-- bench:{name} start -->\n{body.rstrip()}\n\n<!-- bench:{name} end -->"


def replace_section(text: str, name: str, body: str, after: str | None = None) -> str:
    """Replace section `name` in `text`, or add it (after section `after` if given and present, else at the end)."""
    start, end = f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"
    new = section(name, body)
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + new + rest.split(end, 1)[1]
    if after is not None:
        anchor = f"<!-- bench:{after} end -->"
        if anchor in text:
            head, tail = text.split(anchor, 1)
            return head + anchor + "\n\n" + new + tail
    return text.rstrip("\n") + "\n\n" + new + "\n"


def header(machine: dict[str, Any]) -> str:
    return "\n".join([
        "Figures below are measured, never asserted: each section says the command that produced it, when, and "
        "the load average at the time. The machine is shared by several engineers' test runs, so absolute "
        "figures move with the load; ratios against a peer measured in the same run move much less.",
        "",
        f"Machine of the last `faultline bench` run ({time.strftime('%Y-%m-%d')}): {machine['cpu']}, "
        f"{machine['nproc']} cores, {machine.get('memory_gib')} GiB RAM, {machine['system']}, "
        f"Python {machine['python']}; load average {machine['load_average']} at the start.",
        "",
        HEADER_COMMANDS,
    ])


def update(sections: dict[str, str], machine: dict[str, Any], path: Path = DOCS) -> None:
    """Write the header and the given sections (name -> markdown body)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if "<!-- bench:header start -->" not in text and text.startswith("# Benchmarks"):
        title, rest = text.split("\n", 1)
        text = title + "\n\n" + section("header", header(machine)) + "\n" + rest
    else:
        text = replace_section(text, "header", header(machine))
    previous = "header"
    for name, body in sections.items():
        text = replace_section(text, name, body, after=previous)
        previous = name
    path.write_text(text)
