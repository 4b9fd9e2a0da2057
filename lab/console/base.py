"""What every console operation shares: its result, its errors, the context it runs in, and the registry.

An operation is a small function `run(ctx, args) -> OpResult` registered under its name with `@operation(name)`;
its arguments are the typed model of lab/scenario/ops.py (the single source of truth for names and args).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.scenario.ops import OP_ARGS


class ConsoleError(Exception):
    """An operation refused or failed; `status` is the HTTP status the lab answers with, the message is for
    the learner."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OpResult:
    """Structured data for the UI and a text rendering for the CLI. `summary` (one line) goes into the journal;
    `labels` maps version labels this operation produced (e.g. {"retrained": "v3"})."""

    data: dict[str, Any]
    text: str
    summary: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, Any] | None = None  # the args as carried out (labels -> vN), when they differ
    seq: int | None = None  # the journal event of this output in an attempt: what the learner pins as evidence

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "text": self.text, "summary": self.summary or first_line(self.text),
                "seq": self.seq}


def first_line(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class ConsoleContext:
    """What an operation may use: the Lab (stack, supervisor, monitor, faults) and the active attempt, if any."""

    lab: Any
    attempt: Any | None = None

    @property
    def stack(self) -> Any:
        return self.lab.stack

    @property
    def faults(self) -> Any:
        from lab.faults import lab_faults

        return lab_faults(self.lab)

    @property
    def http(self) -> Any:
        """The lab's clients of the stack (lab/stackclients.py): each service's own port, the registry, replicas'
        reload, the supervisor."""
        from lab.stackclients import lab_clients

        return lab_clients(self.lab)

    @property
    def monitor(self) -> Any:
        runner = self.lab.components.get("monitor")
        if runner is None:
            raise ConsoleError("the monitor is not running in this lab (see `faultline status` components)", 503)
        return runner.monitor

    def resolve_version(self, version: str) -> str:
        """A version label (`retrained`, `flipped_labels`, ...) as the vN this attempt gave it; vN unchanged."""
        labels = getattr(self.attempt, "labels", None) or {}
        return labels.get(version, version)

    def services(self) -> list[str]:
        """Services a learner may name: the stack's, without the netproxy and the load generator."""
        return self.stack.targets()

    def check_service(self, name: str) -> str:
        if name not in self.services():
            raise ConsoleError(f"no service {name!r} in this stack; services are: {', '.join(self.services())}", 404)
        return name

    def check_replica(self, name: str) -> str:
        replicas = self.stack.topology.model_names()
        if name not in replicas:
            raise ConsoleError(f"no replica {name!r} in this stack; replicas are: {', '.join(replicas)}", 404)
        return name


Operation = Callable[[ConsoleContext, Any], OpResult]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    """Register `fn` as the console operation `name` (which must be one of lab/scenario/ops.py's)."""
    if name not in OP_ARGS:
        raise RuntimeError(f"{name!r} is not a console operation of lab/scenario/ops.py")

    def register(fn: Operation) -> Operation:
        if name in OPERATIONS:
            raise RuntimeError(f"two implementations of console operation {name!r}")
        OPERATIONS[name] = fn
        return fn

    return register


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns; the first row is the header."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def num(value: Any, fmt: str = "{:.1f}") -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)
