"""Model rollouts through the services' HTTP APIs: deploy (full or canary), promote, roll back.

A full rollout loads the version on every replica as its default (`POST /admin/reload`, the replicas' start-up
`--versions` too, so a restart keeps it), empties the gateway's `routing` (every request goes to the replicas'
default; its start-up config too, so a gateway restart keeps the split) and makes it `production` in the
registry. A canary loads it next to the current default and routes
`weight` of the traffic to it (stage `canary`). A rollback is a full rollout of the version named that also
archives whoever held `canary`: the canary split is gone. The attempt runner uses the same functions to set up a
scenario's versions.
"""

from __future__ import annotations

from typing import Any

from lab.console.base import ConsoleError
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.gateway import canary_routing
from lab.parts.model import argv_with_versions, with_version
from lab.stackclients import ServiceCallError

TRAIN_TIMEOUT_S = 600.0
READY_WAIT_S = 60.0


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ServiceCallError as exc:
        raise ConsoleError(str(exc), exc.status) from exc


def registry_meta(http: Any, version: str) -> dict[str, Any]:
    try:
        return http.registry("GET", f"/v1/models/{version}")
    except ServiceCallError as exc:
        if exc.status == 422:  # the registry's 404, as the fault context maps it
            raise ConsoleError(f"no version {version!r} in the registry; versions are: {_versions(http)}",
                               404) from exc
        raise ConsoleError(str(exc), exc.status) from exc


def _versions(http: Any) -> str:
    """The registry's versions for a refusal, or a pointer to `deploys` when it does not answer."""
    try:
        listed = http.registry("GET", "/v1/models")
        return ", ".join(m["version"] for m in listed if isinstance(m, dict) and "version" in m) or "none"
    except ServiceCallError:
        return "(see `deploys`)"


def holder(http: Any, stage: str) -> str | None:
    got = _call(http.registry, "GET", f"/v1/models?stage={stage}")
    return got[0]["version"] if got else None


def _argv_versions(argv: list[str]) -> list[str]:
    return argv[argv.index("--versions") + 1].split(",") if "--versions" in argv[:-1] else []


def _redeploy(http: Any, replica: str, version: str) -> list[str]:
    """A replica that is not serving (stuck on a bad version, crashing) gets a fresh start on `version` alone,
    as a rolling redeploy would; returns the versions its start-up argv held."""
    argv = http.spec_argv(replica)
    before = _argv_versions(argv)
    http.set_argv(replica, argv_with_versions(argv, [version]))
    http.restart(replica)
    if http.wait_ready([replica], READY_WAIT_S):
        state = http.status(replica)["state"]
        raise ConsoleError(f"{replica} was restarted on {version} but is not ready after {READY_WAIT_S:.0f}s "
                           f"(state {state}); see `logs {replica}`", 409)
    return before


def load_everywhere(http: Any, replicas: list[str], version: str, default: bool) -> dict[str, list[str]]:
    """Every replica holds `version` (as its default when `default`); returns what each held before.

    A full rollout restarts a replica that is not serving on `version`; a canary needs every replica serving."""
    before: dict[str, list[str]] = {}
    for r in replicas:
        if not http.status(r).get("ready"):
            if not default:
                raise ConsoleError(f"{r} is not serving (state {http.status(r)['state']}): a canary needs every "
                                   "replica up; roll back or restart it first", 409)
            before[r] = _redeploy(http, r, version)
            continue
        versions = _call(http.loaded_versions, r)
        before[r] = versions
        wanted = with_version(versions, version, first=default)
        if wanted != versions:
            _call(http.reload, r, wanted)
        argv = http.spec_argv(r)
        new_argv = argv_with_versions(argv, wanted)
        if new_argv != argv:
            http.set_argv(r, new_argv)
    return before


def _route(http: Any, routing: dict[str, float]) -> None:
    """The gateway's split, live and in its start-up config: a gateway restart keeps the rollout's routing (it
    would otherwise send every request to the replicas' default, silently ending a canary)."""
    _call(http.rollout_config, GATEWAY, {"routing": routing})


def _stage(http: Any, version: str, stage: str) -> None:
    _call(http.registry, "POST", f"/v1/models/{version}/stage", {"stage": stage})


def full_rollout(http: Any, replicas: list[str], version: str, archive_canary: bool = False) -> dict[str, Any]:
    registry_meta(http, version)
    canary = holder(http, "canary")
    before = load_everywhere(http, replicas, version, default=True)
    routing_before = _call(http.get_config, GATEWAY).get("routing") or {}
    _route(http, {})
    if archive_canary and canary is not None and canary != version:
        _stage(http, canary, "archived")
    _stage(http, version, "production")
    return {"version": version, "mode": "full", "replicas_before": before, "routing_before": routing_before,
            "canary_archived": canary if archive_canary and canary not in (None, version) else None}


def canary_rollout(http: Any, replicas: list[str], version: str, weight: float) -> dict[str, Any]:
    registry_meta(http, version)
    before = load_everywhere(http, replicas, version, default=False)
    default = next(iter(before.values()))[0] if before else None
    if default is None:
        raise ConsoleError("no replica is serving: a canary needs a current version to split traffic with", 409)
    if default == version:
        raise ConsoleError(f"{version} is already the serving default; a canary is a different version", 409)
    routing_before = _call(http.get_config, GATEWAY).get("routing") or {}
    routing = canary_routing(routing_before, default, version, weight)
    _route(http, routing)
    _stage(http, version, "canary")
    return {"version": version, "mode": "canary", "weight": weight, "routing": routing,
            "routing_before": routing_before, "replicas_before": before}
