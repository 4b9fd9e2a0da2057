"""Steady-state probes: a measured value, where it is measured, and the tolerance it must stay within.

Chaos Toolkit's steady-state hypothesis, made typed: one model per probe kind, chosen by `kind`, so a probe
that asks for a latency `equals` a version, or a drift probe without a feature, is rejected with its own message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from lab import parts
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.loadgen import NAME as LOADGEN
from lab.scenario import vocab
from lab.scenario.fields import FeatureName, Ident, Seconds, ServiceName, Strict, VersionRef

ConfigPath = Annotated[str, StringConstraints(pattern=vocab.CONFIG_PATH_PATTERN, max_length=128)]


class Tolerance(Strict):
    """Bounds (`min`, `max`, both inclusive, either or both) or exactly one of `equals`, `in`, `contains`."""

    min: float | None = None
    max: float | None = None
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in", min_length=1)
    contains: Any = None

    @model_validator(mode="after")
    def _shape(self) -> Tolerance:
        exact = [name for name in ("equals", "in", "contains") if self.given(name)]
        bounds = [name for name in ("min", "max") if self.given(name)]
        if not exact and not bounds:
            raise ValueError("give min and/or max, or one of equals, in, contains")
        if exact and (bounds or len(exact) > 1):
            raise ValueError(f"{' and '.join(exact + bounds)} cannot be combined")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self

    def given(self, name: str) -> bool:
        value = self.in_ if name == "in" else getattr(self, name)
        return value is not None

    def forms(self) -> set[str]:
        return {name for name in ("min", "max", "equals", "in", "contains") if self.given(name)}


def _allow(tol: Tolerance, kind: str, allowed: set[str]) -> Tolerance:
    extra = tol.forms() - allowed
    if extra:
        raise ValueError(f"a {kind} probe takes {' / '.join(sorted(allowed))}, not {', '.join(sorted(extra))}")
    return tol


def _within(tol: Tolerance, lo: float, hi: float) -> Tolerance:
    for name in ("min", "max"):
        value = getattr(tol, name)
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return tol


def _values(tol: Tolerance) -> list[Any]:
    if tol.equals is not None:
        return [tol.equals]
    return list(tol.in_ or [])


class _Probe(Strict):
    id: Ident
    description: str | None = None
    tolerance: Tolerance


class _Windowed(_Probe):
    window_s: Seconds = 30.0


class LatencyProbe(_Windowed):
    """p99 latency in milliseconds of a service's requests (at the gateway: what clients see)."""

    kind: Literal["latency_p99_ms"]
    target: ServiceName = GATEWAY

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "latency_p99_ms", {"min", "max"}), 0, 600_000)


class ErrorRateProbe(_Windowed):
    """Fraction of a service's requests that failed (5xx or no answer)."""

    kind: Literal["error_rate"]
    target: ServiceName = GATEWAY

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "error_rate", {"min", "max"}), 0, 1)


class _QualityProbe(_Windowed):
    """Live model quality from labelled feedback; `target` narrows it to one version (default: all traffic)."""

    target: VersionRef | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "model quality", {"min", "max"}), 0, 1)


class AccuracyProbe(_QualityProbe):
    kind: Literal["accuracy"]


class RecallProbe(_QualityProbe):
    kind: Literal["recall"]


class PrecisionProbe(_QualityProbe):
    kind: Literal["precision"]


class DriftProbe(_Windowed):
    """Population stability index of one feature: live window against the production version's reference."""

    kind: Literal["drift_psi"]
    target: FeatureName

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "drift_psi", {"min", "max"}), 0, 100)


class DeployedVersionProbe(_Probe):
    """Which version serves: the `production` or `canary` slot, or a replica's default version."""

    kind: Literal["deployed_version"]
    target: str = "production"

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        if target in ("production", "canary"):
            return target
        if vocab.replica_number(target) is None:
            raise ValueError(f"'{target}' is not production, canary or a model replica (model-N)")
        return vocab.check_replica(target)

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        _allow(tol, "deployed_version", {"equals", "in"})
        for value in _values(tol):
            if not isinstance(value, str):
                raise ValueError(f"versions are strings, got {value!r}")
            vocab.check_version_ref(value)
        return tol


class ConfigValueProbe(_Probe):
    """A value in a service's live config (GET /admin/config); `key` may be dotted into objects."""

    kind: Literal["config_value"]
    target: ServiceName
    key: ConfigPath


class ServiceStateProbe(_Probe):
    """A service's supervisor state (running, crashloop, ...)."""

    kind: Literal["service_state"]
    target: ServiceName

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        _allow(tol, "service_state", {"equals", "in"})
        for value in _values(tol):
            if value not in vocab.SERVICE_STATES:
                raise ValueError(f"unknown state {value!r}; expected one of: {', '.join(vocab.SERVICE_STATES)}")
        return tol


class ReplicasReadyProbe(_Probe):
    """How many of the scenario's track's model replicas (model-N, or llm-N) are ready and not drained."""

    kind: Literal["replicas_ready"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        _allow(tol, "replicas_ready", {"min", "max", "equals"})
        if tol.equals is not None and (isinstance(tol.equals, bool) or not isinstance(tol.equals, int)):
            raise ValueError(f"equals must be a whole number of replicas, got {tol.equals!r}")
        return _within(tol, 0, vocab.MAX_REPLICAS)


class RestartsProbe(_Probe):
    """How many times a service's process started since the attempt's clock began (a restart, a crash, a
    scale-up's new replica); without `target`, summed over every service. Restart-then-claim shows here even once
    the service is back and healthy."""

    kind: Literal["restarts"]
    target: ServiceName | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        _allow(tol, "restarts", {"min", "max", "equals"})
        if tol.equals is not None and (isinstance(tol.equals, bool) or not isinstance(tol.equals, int)):
            raise ValueError(f"equals must be a whole number of restarts, got {tol.equals!r}")
        return _within(tol, 0, 10_000)


class UptimeProbe(_Probe):
    """Seconds the service's current process has been running, capped at the time since the attempt's clock
    began (so a service untouched during the attempt reads the attempt's age); no value while it is down."""

    kind: Literal["uptime_s"]
    target: ServiceName

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "uptime_s", {"min", "max"}), 0, 86_400)


class DeclineRateProbe(_Windowed):
    """Share of scored requests the gateway declined (score at or above its decision threshold), over the
    window; `target` narrows it to one model version (default: all traffic)."""

    kind: Literal["decline_rate"]
    target: VersionRef | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "decline_rate", {"min", "max"}), 0, 1)


class ScoreQuantileProbe(_Windowed):
    """The q-quantile (0 < q < 1) of the scores the gateway returned over the window, from its score histogram;
    `target` narrows it to one model version. Calibrate with the console's `reference` operation."""

    kind: Literal["score_quantile"]
    q: float = Field(gt=0, lt=1)
    target: VersionRef | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "score_quantile", {"min", "max"}), 0, 1)


class StatusShareProbe(_Windowed):
    """Share of a service's requests (at the gateway: its scoring routes) answered with `status`: a class
    (`2xx`, `4xx`, `5xx`) or one code (`429`, `503`)."""

    kind: Literal["status_share"]
    target: ServiceName = GATEWAY
    status: Annotated[str, StringConstraints(pattern=r"^[1-5]([0-9]{2}|xx)$")]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "status_share", {"min", "max"}), 0, 1)


# ---- the LLM track (measured by lab/monitor/llm.py over the probe's window) ----------------------------------------


def _llm_replica(name: str) -> str:
    part = parts.replica_part(track="llm")
    n = part.replica_number(name)
    if n is None or not 1 <= n <= part.max_replicas:
        raise ValueError(f"'{name}' is not an LLM replica; expected {part.name}-1 .. {part.name}-{part.max_replicas}")
    return name


def _llm_where(*allowed: str) -> Any:
    """A target check: an LLM replica, or one of `allowed` (the gateway, the load generator: the clients)."""
    def check(name: str) -> str:
        if name in allowed:
            return name
        try:
            return _llm_replica(name)
        except ValueError:
            part = parts.replica_part(track="llm")
            where = f"{', '.join(allowed)} or an" if allowed else "an"
            raise ValueError(f"unknown target '{name}'; expected {where} LLM replica ({part.name}-N); leave it out "
                             "for every replica") from None
    return AfterValidator(check)


LLMReplica = Annotated[str, _llm_where()]


class _LLMProbe(_Windowed):
    """An LLM figure over the window; without `target`, every LLM replica together."""

    target: LLMReplica | None = None


class TTFTProbe(_LLMProbe):
    """p99 time to first token (ms): the replicas' (`vllm:time_to_first_token_seconds`, default or `llm-N`), the
    gateway's (`gateway`) or the clients' (`loadgen`, the load generator's `faultline_llm_client_ttft_seconds`)."""

    kind: Literal["ttft_p99_ms"]
    target: Annotated[str, _llm_where(GATEWAY, LOADGEN)] | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "ttft_p99_ms", {"min", "max"}), 0, 600_000)


class ITLProbe(_LLMProbe):
    """p99 inter-token latency (ms): the replicas' (default or `llm-N`) or the clients' (`loadgen`)."""

    kind: Literal["itl_p99_ms"]
    target: Annotated[str, _llm_where(LOADGEN)] | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "itl_p99_ms", {"min", "max"}), 0, 600_000)


class TTFTGapProbe(_LLMProbe):
    """Client-side against server-side TTFT: the clients' q-quantile TTFT minus the replicas' (ms). Near zero on a
    healthy path; a buffering or slow hop between them shows here while the servers' TTFT stays flat."""

    kind: Literal["ttft_gap_ms"]
    q: float = Field(default=0.5, gt=0, lt=1)

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "ttft_gap_ms", {"min", "max"}), -600_000, 600_000)


class GoodputProbe(_Windowed):
    """Share of LLM requests answered with TTFT <= 1 s and ITL <= 200 ms (docs/monitoring.md: an estimate from
    the clients' histograms, else the replicas')."""

    kind: Literal["goodput_ratio"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "goodput_ratio", {"min", "max"}), 0, 1)


class FinishReasonProbe(_LLMProbe):
    """Share of the requests finished in the window with `reason` (`stop`, `length`, `abort`). Without `target`,
    pooled over every replica; with `each_replica`, every replica is judged and the value is the worst one's (the
    lowest share under a `min`, the highest under a `max`), so a probe can hold each replica to the rule without
    naming, on screen, the one that breaks it."""

    kind: Literal["finish_reason_share"]
    reason: Literal["stop", "length", "abort"]
    each_replica: bool = False

    @model_validator(mode="after")
    def _each(self) -> FinishReasonProbe:
        if self.each_replica and self.target is not None:
            raise ValueError("each_replica judges every replica: leave `target` out")
        return self

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "finish_reason_share", {"min", "max"}), 0, 1)


class KVCacheUsageProbe(_LLMProbe):
    """The highest KV-cache usage (0..1, `vllm:kv_cache_usage_perc`) scraped in the window (of every replica)."""

    kind: Literal["kv_cache_usage"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "kv_cache_usage", {"min", "max"}), 0, 1)


class PreemptionRateProbe(_LLMProbe):
    """Preemptions per second over the window (summed over the replicas)."""

    kind: Literal["preemption_rate"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "preemption_rate", {"min", "max"}), 0, 100_000)


class PrefixCacheHitRateProbe(_LLMProbe):
    """Prompt tokens found in the prefix cache / prompt tokens looked up, over the window."""

    kind: Literal["prefix_cache_hit_rate"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "prefix_cache_hit_rate", {"min", "max"}), 0, 1)


class SpecAcceptanceRateProbe(_LLMProbe):
    """Speculative decoding's acceptance rate over the window: draft tokens the target accepted / draft tokens
    proposed (`vllm:spec_decode_num_accepted_tokens_total` / `..._num_draft_tokens_total`), of a replica, or the
    lowest of the replicas that speculated (one stale draft is not averaged away by healthy replicas)."""

    kind: Literal["spec_acceptance_rate"]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "spec_acceptance_rate", {"min", "max"}), 0, 1)


class CanaryPerplexityProbe(_Probe):
    """The latest canary perplexity (the monitor's echo + logprobs completion of a fixed held-out text) of a
    replica, or the highest of every replica."""

    kind: Literal["canary_perplexity"]
    target: LLMReplica | None = None

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "canary_perplexity", {"min", "max"}), 0, 1_000_000)


class RateLimitedRateProbe(_Windowed):
    """Share of LLM requests refused with 429: at the gateway (default), or as the clients saw it (`loadgen`)."""

    kind: Literal["rate_limited_rate"]
    target: Annotated[str, _llm_where(GATEWAY, LOADGEN)] = GATEWAY

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        if target not in (GATEWAY, LOADGEN):
            raise ValueError(f"a rate_limited_rate probe is measured at {GATEWAY} or {LOADGEN}, not '{target}'")
        return target

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "rate_limited_rate", {"min", "max"}), 0, 1)


class LLMStatusShareProbe(_Windowed):
    """Share of the LLM requests the gateway answered with `status`: a class (`2xx`, `4xx`, `5xx`) or one code
    (`400`: refused as invalid, e.g. over the context; `503`). The fraud track's `status_share` counts the scoring
    routes only."""

    kind: Literal["llm_status_share"]
    status: Annotated[str, StringConstraints(pattern=r"^[1-5]([0-9]{2}|xx)$")]

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, tol: Tolerance) -> Tolerance:
        return _within(_allow(tol, "llm_status_share", {"min", "max"}), 0, 1)


LLM_PROBE_MODELS = (TTFTProbe, ITLProbe, TTFTGapProbe, GoodputProbe, FinishReasonProbe, KVCacheUsageProbe,
                    PreemptionRateProbe, PrefixCacheHitRateProbe, SpecAcceptanceRateProbe, CanaryPerplexityProbe,
                    RateLimitedRateProbe, LLMStatusShareProbe)

PROBE_MODELS = (
    LatencyProbe,
    ErrorRateProbe,
    AccuracyProbe,
    RecallProbe,
    PrecisionProbe,
    DriftProbe,
    DeployedVersionProbe,
    ConfigValueProbe,
    ServiceStateProbe,
    ReplicasReadyProbe,
    RestartsProbe,
    UptimeProbe,
    DeclineRateProbe,
    ScoreQuantileProbe,
    StatusShareProbe,
    *LLM_PROBE_MODELS,
)
LLM_PROBE_KINDS: tuple[str, ...] = tuple(m.model_fields["kind"].annotation.__args__[0] for m in LLM_PROBE_MODELS)
PROBE_KINDS: tuple[str, ...] = tuple(m.model_fields["kind"].annotation.__args__[0] for m in PROBE_MODELS)

Probe = Annotated[Union[PROBE_MODELS], Field(discriminator="kind")]  # noqa: UP007  (a runtime tuple of members)
