"""Matching what the learner ran against a scenario's operation patterns (diagnosis evidence, collateral).

A pattern matches a journaled console operation when the names agree and every argument the pattern gives is
equal to the argument the learner gave (`{op: rollback}` matches any rollback; `{op: metrics, args: {service:
gateway}}` does not match a bare `metrics`). Version labels (`flipped_labels`, `retrained`, ...) in a pattern
stand for the vN the run gave them; the journal records that mapping (`labels` in fault_applied and
console_op events), and operations are journaled with their versions already resolved.
"""

from __future__ import annotations

from typing import Any

from lab.scenario.ops import op_args


def labels_from(events: list[dict[str, Any]]) -> dict[str, str]:
    """Version label -> vN, from every event that recorded one."""
    out: dict[str, str] = {}
    for e in events:
        for label, version in (e["data"].get("labels") or {}).items():
            if isinstance(label, str) and isinstance(version, str):
                out[label] = version
    return out


def resolve(value: Any, labels: dict[str, str]) -> Any:
    return labels.get(value, value) if isinstance(value, str) else value


def matches(pattern: Any, op: str, args: dict[str, Any], labels: dict[str, str]) -> bool:
    """True when the journaled operation (name, resolved args) agrees with the pattern on every arg it gives."""
    if pattern.op != op:
        return False
    for key, wanted in op_args(pattern).items():
        if key not in args or resolve(wanted, labels) != args[key]:
            return False
    return True


def pattern_text(pattern: Any) -> str:
    """`metrics service=gateway` — how a pattern reads in the debrief."""
    args = op_args(pattern)
    return " ".join([pattern.op, *(f"{k}={v}" for k, v in args.items())])


def op_text(op: str, args: dict[str, Any]) -> str:
    return " ".join([op, *(f"{k}={v}" for k, v in args.items() if v is not None)])
