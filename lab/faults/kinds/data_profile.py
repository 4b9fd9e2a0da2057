"""data.profile: the load generator's traffic changes profile and/or rate, on either track: the fraud track's
drift, nulls, unit change or surge, or the LLM track's clients (longer chat histories, a timestamped system
prompt, abandoned streams, bursts: services/loadgen/llmprofiles.py).

`strength` (0..1) weakens a built-in profile: its shift fractions (null_rate, new_category_rate, covariate,
concept) and the surge's extra rate are multiplied by it; 1 is the profile as built in. A unit change is all or
nothing and baseline has nothing to weaken, so `strength` is refused for those. The weakened profile is
registered on the load generator under `<profile>-at-<percent>`; an LLM profile has no shift to weaken, so
`strength` is refused for those too. The profile must be of the track the load generator drives (a 422 naming
that track's profiles otherwise). Revert goes back to the profile and base rate the load generator had before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.registry import Catalog
from lab.parts.loadgen import LoadgenClient, LoadgenError
from lab.rules import MAX_TRAFFIC_RPS
from lab.scenario import vocab
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import Fraction, Strict

SCALABLE_SHIFT = ("null_rate", "new_category_rate", "covariate", "concept")


class ProfileParams(Strict):
    profile: Literal[vocab.TRAFFIC_PROFILES + vocab.LLM_TRAFFIC_PROFILES]  # type: ignore[valid-type]
    rps: float | None = Field(default=None, gt=0, le=MAX_TRAFFIC_RPS)
    strength: Fraction | None = None


class DataProfile(FaultModel):
    kind: Literal["data"]
    action: Literal["profile"]
    params: ProfileParams


def weakened(name: str, profile: dict[str, Any], strength: float) -> dict[str, Any]:
    """The profile with its departure from baseline multiplied by `strength`."""
    shift = dict(profile.get("shift") or {})
    scaled = [k for k in SCALABLE_SHIFT if shift.get(k)]
    for k in scaled:
        shift[k] = round(float(shift[k]) * strength, 6)
    multiplier = float(profile.get("rate_multiplier", 1.0))
    if float(shift.get("unit_scale", 1.0)) != 1.0 or (not scaled and multiplier == 1.0):
        raise FaultError(f"strength does not apply to the {name} profile (nothing to weaken gradually)", 422)
    return {
        "shift": shift,
        "rate_multiplier": round(1.0 + (multiplier - 1.0) * strength, 6),
        "description": f"{profile.get('description', name)} (at {strength:.0%} strength)",
    }


@contextmanager
def loadgen(ctx: FaultContext) -> Iterator[LoadgenClient]:
    """The load generator's client; its refusals become 422s, its silence a 503."""
    client = ctx.loadgen()
    try:
        yield client
    except LoadgenError as exc:
        status = 422 if exc.status is not None and 400 <= exc.status < 500 else 503
        raise FaultError(f"the load generator refused: {exc}", status) from exc
    finally:
        client.close()


@register
class DataProfileInjector(Injector):
    model = DataProfile
    position = 50
    catalog = Catalog(
        label="Traffic profile",
        help="Switch the load generator's traffic profile (fraud: drift, nulls, unit change, surge; LLM: growing "
             "history, timestamped system prompt, abandoned streams, ...) and/or its rate.",
        example={"profile": "covariate-shift"},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        text = f"traffic switches to the {p.profile} profile"
        if p.strength is not None:
            text += f" at {p.strength:.0%} strength"
        if p.rps is not None:
            text += f", {p.rps:g} requests/s"
        return text

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        p = fault.params
        with loadgen(ctx) as lg:
            before = lg.state()
            track = before.get("track", vocab.DEFAULT_TRACK)
            profiles_of_track = vocab.TRACK_PROFILES.get(track, ())
            if p.profile not in profiles_of_track:
                raise FaultError(f"{p.profile!r} is not a {track}-track profile (the load generator drives the "
                                 f"{track} track); expected one of: {', '.join(profiles_of_track)}", 422)
            if p.strength is not None and p.profile in vocab.LLM_TRAFFIC_PROFILES:
                raise FaultError(f"strength does not apply to the {p.profile} profile (an LLM profile has no shift "
                                 "to weaken)", 422)
            name = p.profile
            if p.strength is not None and p.strength < 1:
                profiles = lg.profiles()
                if p.profile not in profiles:
                    raise FaultError(f"the load generator has no profile {p.profile!r}", 422)
                name = f"{p.profile}-at-{round(p.strength * 100)}"
                lg.add_profiles({name: weakened(p.profile, profiles[p.profile], p.strength)})
            lg.configure(rps=p.rps, profile=name)
        return self.record(fault, {"traffic_url": ctx.loadgen_url(), "profile": name,
                                   "profile_before": before["profile"], "rps_before": before["base_rps"]})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        with loadgen(ctx) as lg:
            lg.configure(rps=c["rps_before"], profile=c["profile_before"])
        return []
