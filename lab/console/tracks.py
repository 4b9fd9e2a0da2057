"""Which track a console operation acts on, when the lab runs both (`scale`, `deploys`, `deploy`, `rollback`,
`promote`): never a silent pick.

In order: the `track` the learner named (`--track llm`, API `"track": "llm"`); the only track the stack runs; for a
version operation, the track whose registry holds the version when only one does (v1-int4 is an LLM version, v3
a fraud one); during an attempt, the scenario's track. Anything else — `v1` (both registries hold a v1) or
`scale 3` in the sandbox of a two-track lab — is refused with a 422 that says how to choose.
"""

from __future__ import annotations

from lab.console.base import ConsoleContext, ConsoleError
from lab.parts import DEFAULT_TRACK as FRAUD
from lab.parts.llm import TRACK as LLM
from lab.stackclients import ServiceCallError


def _running(ctx: ConsoleContext) -> tuple[str, ...]:
    return tuple(ctx.stack.topology.tracks)


def _named(ctx: ConsoleContext, track: str | None) -> str | None:
    if track is None:
        return None
    running = _running(ctx)
    if track not in running:
        raise ConsoleError(f"this stack does not run the {track} track (it runs: {', '.join(running)}); "
                           f"start it with `faultline up -d --track all`", 409)
    return track


def _attempt_track(ctx: ConsoleContext) -> str | None:
    scenario = getattr(ctx.attempt, "scenario", None)
    stack = getattr(scenario, "stack", None)
    return getattr(stack, "track", None) if stack is not None else None


def _how(op: str, example: str) -> str:
    command = " ".join(w for w in ("faultline", op.replace("_", "-"), example, "--track llm") if w)
    return (f"this lab runs the fraud and LLM tracks: say which one with `{command}` (or `--track fraud`; "
            "API and scenarios: \"track\": \"llm\")")


def _named_or_only(ctx: ConsoleContext, track: str | None) -> str | None:
    """The track the learner named, else the only one the stack runs; None when that does not decide it."""
    named = _named(ctx, track)
    if named is not None:
        return named
    running = _running(ctx)
    return running[0] if len(running) == 1 else None


def op_track(ctx: ConsoleContext, op: str, track: str | None, example: str = "") -> str:
    """The track a version-less operation (`scale`, `deploys`) acts on."""
    plain = _named_or_only(ctx, track)
    if plain is not None:
        return plain
    during = _attempt_track(ctx)
    if during is not None:
        return during
    raise ConsoleError(f"{op}: " + _how(op, example), 422)


def _names(ctx: ConsoleContext, path: str) -> set[str]:
    try:
        return {m["version"] for m in ctx.http.registry("GET", path)}
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


def version_track(ctx: ConsoleContext, op: str, version: str, track: str | None) -> str:
    """The track a version operation (`deploy`, `rollback`, `promote`) of `version` acts on."""
    plain = _named_or_only(ctx, track)
    if plain is not None:
        return plain
    llm, fraud = _names(ctx, "/v1/llm/models"), _names(ctx, "/v1/models")
    if (version in llm) != (version in fraud):
        return LLM if version in llm else FRAUD
    during = _attempt_track(ctx)
    if during is not None:
        return during
    if version in llm:
        raise ConsoleError(f"{op} {version}: both the fraud and the LLM registries hold a {version}; "
                           + _how(op, version), 422)
    raise ConsoleError(f"{op}: no version {version!r} in either registry; fraud versions: "
                       f"{', '.join(sorted(fraud)) or 'none'}; LLM versions: {', '.join(sorted(llm)) or 'none'}", 404)
