"""The gateway's live config (PATCH /admin/config): replicas, routing, timeouts, resilience knobs, fallbacks.

Every key is documented in docs/gateway.md. Validation is strict: a wrong type, an out-of-range value, an
unknown key, a non-loopback replica URL or a drained/routed name that makes no sense is a 422.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.service import ConfigHolder

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_loopback_url(url: str) -> tuple[str, int]:
    """(host, port) of an `http://127.0.0.1:PORT` URL; ValueError with a clear message otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r}: only http:// URLs are supported")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{url!r}: host must be a loopback address (127.0.0.1, localhost, ::1)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not 0 < port < 65536:
        raise ValueError(f"{url!r}: an explicit port 1-65535 is required")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no path, query or fragment allowed")
    return parts.hostname, port


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: dict[str, str] = Field(default_factory=dict, description="replica name -> base URL (its proxy)")
    drained: list[str] = Field(default_factory=list, description="replicas that get no new requests")
    routing: dict[str, float] = Field(default_factory=dict, description="model version -> weight (canary split)")
    feature_timeout_ms: float = Field(default=250.0, gt=0, le=60_000)
    model_timeout_ms: float = Field(default=1000.0, gt=0, le=60_000)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_ms: float = Field(default=10.0, ge=0, le=10_000)
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    breaker_failures: int = Field(default=5, ge=1, le=100_000)
    breaker_reset_ms: float = Field(default=2000.0, gt=0, le=600_000)
    outlier_errors: int = Field(default=5, ge=1, le=100_000)
    outlier_ejection_ms: float = Field(default=5000.0, gt=0, le=600_000)
    health_check_ms: float = Field(default=1000.0, ge=0, le=600_000, description="0 turns active checks off")
    feature_fallback: Literal["fail", "default_features"] = "default_features"
    model_fallback: Literal["fail", "rule_based"] = "fail"
    decision_threshold: float = Field(default=0.5, ge=0, le=1)
    amount_scale: float = Field(default=1.0, gt=0, le=1_000_000)
    amount_max: float = Field(default=50_000.0, gt=0, le=1e12)
    # The LLM track's routes (/v1/chat/completions, /v1/completions, /v1/models; services/gateway/llm.py).
    llm_replicas: dict[str, str] = Field(default_factory=dict, description="LLM replica name -> base URL (its proxy)")
    llm_rate_limit_rps: float = Field(default=0.0, ge=0, le=1_000_000,
                                      description="requests/s each client may send to the LLM routes; 0: no limit")
    llm_rate_limit_burst: int = Field(default=20, ge=1, le=1_000_000, description="requests a client may burst")
    llm_stream_timeout_ms: float = Field(default=30_000.0, gt=0, le=3_600_000,
                                         description="longest wait for the upstream's next bytes (a stalled stream "
                                                     "ends with an error event)")
    llm_connect_timeout_ms: float = Field(default=2_000.0, gt=0, le=60_000)
    llm_stream_buffer_bytes: int = Field(default=0, ge=0, le=16 * 1024 * 1024,
                                         description="hold a stream's bytes until this many are in hand (or it "
                                                     "ends), like nginx proxy_buffering; 0: unbuffered")
    llm_clamp_max_tokens: bool = Field(default=False, description="lower a request's max_tokens to the context "
                                                                  "left after its prompt (the replica counts it)")
    llm_trim_history: bool = Field(default=False, description="drop a chat's oldest turns (never the system "
                                                              "messages or the last message) until it fits")
    llm_system_timestamp: Literal["keep", "strip", "move_to_end"] = Field(
        default="keep", description="a timestamp at the start of a system message: kept, removed, or moved to "
                                    "its end (so the prompts share a cacheable prefix)")

    @field_validator("replicas", "llm_replicas")
    @classmethod
    def _check_replicas(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"replica name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
            parse_loopback_url(url)
        return value

    @field_validator("routing")
    @classmethod
    def _check_routing(cls, value: dict[str, float]) -> dict[str, float]:
        for version, weight in value.items():
            if not _NAME.fullmatch(version):
                raise ValueError(f"version {version!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {version!r} must be a finite number >= 0")
        if value and sum(value.values()) <= 0:
            raise ValueError("at least one routing weight must be > 0 (use {} to route to the replicas' default)")
        return value

    @model_validator(mode="after")
    def _check_drained(self) -> GatewayConfig:
        known = set(self.replicas) | set(self.llm_replicas)  # one list drains both tracks' replicas
        unknown = sorted(set(self.drained) - known)
        if unknown:
            raise ValueError(f"drained: unknown replica(s) {', '.join(unknown)}; replicas are: "
                             f"{', '.join(sorted(known)) or 'none'}")
        return self


class GatewayConfigHolder(ConfigHolder):
    """Like ConfigHolder, but a new `replicas` map prunes `drained` of replicas that no longer exist.

    The supervisor pushes only `replicas` when it scales down; that must not fail because a removed replica
    was still listed as drained.
    """

    def patch(self, changes: dict[str, Any]) -> BaseModel:
        replicas, llm = changes.get("replicas"), changes.get("llm_replicas")
        if (isinstance(replicas, dict) or isinstance(llm, dict)) and "drained" not in changes:
            current: GatewayConfig = self.value  # type: ignore[assignment]
            known = set(replicas if isinstance(replicas, dict) else current.replicas) | set(
                llm if isinstance(llm, dict) else current.llm_replicas)
            changes = {**changes, "drained": [n for n in current.drained if n in known]}
        return super().patch(changes)
