"""The gateway: the scoring API clients call (through its proxy, the stack's public URL), which dials the other
parts through their hops. Its declaration and its typed client."""

from __future__ import annotations

import json
from typing import Any

from lab.parts import register
from lab.parts.base import TRACKS, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient

NAME = "gateway"


def _args(_name: str, launch: Launch) -> list[str]:
    # Every part that declares a Dial with this caller: its flag and the hop(s) to reach it.
    from lab.parts import parts

    argv: list[str] = []
    for part in parts():
        if not launch.topology.instances(part):
            continue  # not in the stack's track(s): the gateway runs without it
        for dial in part.dials:
            if dial.caller == NAME:
                argv += [dial.flag, launch.topology.dial_value(part)]
    return argv


def calibrated_threshold(registry_dir: Any, version: str) -> float | None:
    """The decision threshold `version` was calibrated at (its registry meta's `metrics.threshold`, F1-best on
    validation, where its precision and recall were measured); None when the registry does not hold it here."""
    try:
        meta = json.loads((registry_dir / "versions" / version / "meta.json").read_text())
        value = float(meta["metrics"]["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def _start_config(launch: Launch) -> dict[str, Any]:
    # The threshold ships with the model: the gateway starts deciding at the calibrated threshold of the version the
    # replicas serve by default (read from the lab's own registry directory; the registry service may not be up yet).
    s = launch.settings
    threshold = calibrated_threshold(s.registry_dir, s.model_versions[0]) if s.model_versions else None
    return {"decision_threshold": threshold} if threshold is not None else {}


def canary_routing(before: dict[str, float], default: str, new: str, weight: float) -> dict[str, float]:
    """The gateway's `routing` sending `weight` of the traffic to `new`; the rest keeps its previous split (all
    to `default` if there was none)."""
    old = {k: v for k, v in before.items() if v > 0 and k != new} or {default: 1.0}
    total = sum(old.values())
    return {**{k: round(v / total * (1 - weight), 6) for k, v in old.items()}, new: weight}


class GatewayClient(PartClient):
    what = NAME

    def recent(self, limit: int = 500, labelled: bool = False) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if labelled:
            params["labelled"] = 1
        return self.call("GET", "/v1/recent", params=params)

    def set_replicas(self, replicas: dict[str, str]) -> dict[str, Any]:
        return self.patch_config({"replicas": replicas})


PART = register(Part(
    name=NAME,
    module="services.gateway",
    doc="the scoring API; dials the feature store and the model replicas through their hops",
    port_offset=1,
    proxy_offset=0,
    args=_args,
    start_config=_start_config,
    tier=2,
    after_proxies=True,
    public=True,
    tracks=frozenset(TRACKS),
    memory_limit=384 * MiB,
    status_rank=0,
    metrics_prefix="gateway",
    settable=frozenset({
        "drained", "routing", "feature_timeout_ms", "model_timeout_ms", "max_retries", "retry_backoff_ms",
        "retry_budget_ratio", "breaker_failures", "breaker_reset_ms", "outlier_errors", "outlier_ejection_ms",
        "health_check_ms", "feature_fallback", "model_fallback", "decision_threshold", "amount_scale", "amount_max",
        "llm_rate_limit_rps", "llm_rate_limit_burst", "llm_stream_timeout_ms", "llm_connect_timeout_ms",
        "llm_stream_buffer_bytes", "llm_clamp_max_tokens", "llm_trim_history", "llm_system_timestamp",
    }),
    map=MapPlace("entry"),
    client=GatewayClient,
    config_model="services.gateway.config:GatewayConfig",
    lab_managed_keys=frozenset({"replicas", "llm_replicas"}),
))
