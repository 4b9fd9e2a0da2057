"""The stack's baseline, and putting it back between attempts.

Captured when the lab's stack first runs (and again when an attempt starts another track's parts beside it):
replica counts of every track, every service's live config and start-up argv, the versions each replica holds (a
model replica's loaded versions, an LLM replica's weights, tokenizer and generation config), the registry stages,
the traffic (its track, profile, rate and, on the LLM track, the clients' retry policy and concurrency).
`reset()` compares the stack with it and changes only what differs — scale, replicas' versions, registry stages,
configs and argv, stopped services,
the traffic (a stack that had none keeps its load generator, idle at 0 rps, so the next attempt starts it at
once) — so a reset after a typical attempt takes well under the 2 s goal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lab import parts
from lab.stackclients import lab_clients

log = logging.getLogger("faultline.attempt")
READY_WAIT_S = 60.0


class Baseline:
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.snapshot: dict[str, Any] | None = None

    @property
    def http(self) -> Any:
        return lab_clients(self.lab)

    def services(self) -> list[str]:
        return self.lab.stack.targets()

    def capture(self) -> dict[str, Any]:
        http, stack = self.http, self.lab.stack
        replicas = stack.topology.model_names()
        snap = {
            "at": time.time(),
            # the fraud replicas' count (the topology's own figure on a lab that does not run the fraud track)
            "replicas": len(replicas) if replicas else stack.topology.replicas,
            # other tracks' replica counts ({part: n}): the LLM track's llm-N
            "counts": {p.name: stack.topology.replica_count(p) for p in _other_replica_parts(stack)},
            "served": {n: _served(http.spec_argv(n)) for p in _other_replica_parts(stack)
                       for n in stack.topology.instances(p)},
            "configs": {n: http.get_config(n) for n in self.services()},
            "argv": {n: list(stack.supervisor.spec(n).argv) for n in self.services()},
            "versions": {r: http.loaded_versions(r) for r in replicas},
            "stages": http.stages(),
            "traffic": _traffic(stack.traffic_state()),
        }
        self.snapshot = snap
        return snap

    def reset(self) -> dict[str, Any]:
        """Put the stack back to the snapshot; returns what was changed and how long it took."""
        if self.snapshot is None:
            return {"changed": [], "seconds": 0.0, "note": "no baseline captured"}
        t0 = time.monotonic()
        snap = self.snapshot
        changed: list[str] = []
        failed: list[tuple[str, Any, Exception]] = []

        def step(name: str, fn: Any) -> None:
            try:
                if fn():
                    changed.append(name)
            except Exception as exc:  # noqa: BLE001 - a reset must go as far as it can and say what failed
                failed.append((name, fn, exc))
                log.warning("baseline reset step %s failed (retried once the services are ready): %r", name, exc)

        step("faults", self._revert_faults)  # sandbox faults must not leak into an attempt
        step("replicas", lambda: self._scale(snap["replicas"]))
        for part_name, count in snap.get("counts", {}).items():
            step(f"{part_name} replicas", lambda p=part_name, c=count: self._scale_other(p, c))
        # Before the argv step puts the start-up flags back: an LLM replica deployed elsewhere restarts on its own.
        for replica, served in snap.get("served", {}).items():
            step(f"{replica} served", lambda r=replica, v=served: self._served(r, v))
        # Start-up configs before (re)starting anything: a service in a crash loop or backoff comes back on them.
        for name, argv in snap["argv"].items():
            step(f"{name} argv", lambda n=name, a=argv: self._argv(n, a))
        step("services", self._start_stopped)
        for replica, versions in snap["versions"].items():
            step(f"{replica} versions", lambda r=replica, v=versions: self._versions(r, v))
        step("stages", lambda: self._stages(snap["stages"]))
        for name, config in snap["configs"].items():
            step(f"{name} config", lambda n=name, c=config: self._config(n, c))
        step("traffic", lambda: self._traffic(snap["traffic"]))
        errors: list[str] = []
        if failed:
            # A service that was restarting (after an OOM kill, say) did not answer: once it is up, on the start-up
            # config restored above, the steps it missed run again.
            self._start_stopped()
            self.lab.stack.supervisor.wait_ready(self.services(), READY_WAIT_S)
            for name, fn, _ in failed:
                try:
                    if fn():
                        changed.append(name)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{name}: {exc}")
                    log.error("baseline reset step %s failed: %r", name, exc)
        took = time.monotonic() - t0
        log.info("baseline reset in %.2fs changed=%s errors=%s", took, ",".join(changed) or "-", len(errors))
        return {"changed": changed, "errors": errors, "seconds": round(took, 3)}

    # --- steps: each returns True when it changed something -----------------------------------------------------

    def _revert_faults(self) -> bool:
        from lab.faults import lab_faults

        return bool(lab_faults(self.lab).revert_all())

    def _scale(self, replicas: int) -> bool:
        topology = self.lab.stack.topology
        # An LLM-only lab runs no fraud replica: its snapshot counts 0 of them, which is not a scale to ask for.
        if not topology.runs(parts.replica_part()) or topology.replicas == replicas:
            return False
        self.lab.stack.scale(replicas)
        return True

    def _scale_other(self, part_name: str, count: int) -> bool:
        part = parts.get(part_name)
        topology = self.lab.stack.topology
        if not topology.runs(part) or topology.replica_count(part) == count:
            return False
        track = sorted(part.tracks)[0]
        self.lab.stack.scale(count, track=track)
        return True

    def _served(self, replica: str, served: dict[str, str]) -> bool:
        """An LLM replica serves what its start-up flags name (weights, tokenizer, generation config): one deployed
        on something else during the attempt restarts on the baseline's flags."""
        stack = self.lab.stack
        if replica not in stack.supervisor.names():
            return False
        argv = self.http.spec_argv(replica)
        if _served(argv) == served:
            return False
        self.http.set_argv(replica, self.snapshot["argv"].get(replica, argv))  # type: ignore[index]
        stack.restart(replica)
        stack.supervisor.wait_ready([replica], READY_WAIT_S)
        return True

    def _start_stopped(self) -> bool:
        started = [n for n in self.services() if self.http.ensure_running(n)]
        if started:
            self.lab.stack.supervisor.wait_ready(started, READY_WAIT_S)
        return bool(started)

    def _versions(self, replica: str, versions: list[str]) -> bool:
        if replica not in self.lab.stack.topology.model_names():
            return False
        if self.http.loaded_versions(replica) == versions:
            return False
        self.http.reload(replica, versions)
        return True

    def _stages(self, wanted: dict[str, str]) -> bool:
        current = self.http.stages()
        changed = False
        for version, stage in current.items():
            # versions made during the attempt (variants, retrained) may not keep an exclusive stage
            if version not in wanted and stage in ("production", "canary"):
                self.http.registry("POST", f"/v1/models/{version}/stage", {"stage": "archived"})
                changed = True
        if any(current.get(v) != s for v, s in wanted.items() if v in current):
            self.http.restore_stages(wanted)
            changed = True
        return changed

    def _config(self, name: str, config: dict[str, Any]) -> bool:
        if name not in self.services():
            return False
        current = self.http.get_config(name)
        dials = [d for d in parts.replica_dials() if d.caller == name]
        # the replica set is the stack's (pushed on scale): never restored from a snapshot
        skip = {d.config_key for d in dials if d.config_key}
        diff = {k: v for k, v in config.items() if k not in skip and current.get(k) != v}
        for d in dials:
            live = (current.get(d.config_key) or {}) if d.config_key else {}
            for key in d.subset_keys:
                if key in diff:
                    diff[key] = [r for r in diff[key] if r in live]
        if not diff:
            return False
        self.http.patch_config(name, diff)
        return True

    def _argv(self, name: str, argv: list[str]) -> bool:
        if name not in self.lab.stack.supervisor.names() or self.http.spec_argv(name) == argv:
            return False
        dials_replicas = any(d.caller == name for d in parts.replica_dials())
        if dials_replicas and self.lab.stack.topology.replicas != self.snapshot["replicas"]:  # type: ignore[index]
            return False  # its replica flag follows the replica count: the stack owns it
        self.http.set_argv(name, argv)
        return True

    def _traffic(self, wanted: dict[str, Any]) -> bool:
        from lab.parts.loadgen import DEFAULT_PROFILES, default_track

        stack = self.lab.stack
        current = _traffic(stack.traffic_state())
        if wanted["running"]:
            if current == wanted:
                return False
            stack.traffic(wanted["rps"], wanted["profile"], **_track_args(wanted))
            return True
        # No traffic at the baseline: an idle load generator (0 rps) on the stack's default track and profile.
        track = default_track(stack.topology)
        idle = DEFAULT_PROFILES[track]
        if not current["running"] or (current["rps"] == 0 and current["profile"] == idle
                                      and current.get("track", parts.DEFAULT_TRACK) == track):
            return False
        stack.traffic(0.0, idle, track=track)
        return True


def _traffic(state: dict[str, Any]) -> dict[str, Any]:
    if not state.get("running"):
        return {"running": False, "rps": 0.0, "profile": "baseline"}
    out = {"running": True, "rps": float(state.get("base_rps", state.get("target_rps", 0.0)) or 0.0),
           "profile": state.get("profile", "baseline")}
    # the LLM clients' settings (a fraud load generator has none)
    if state.get("track", parts.DEFAULT_TRACK) != parts.DEFAULT_TRACK:
        out.update({k: state.get(k) for k in ("track", "retry_policy", "retries", "max_users")})
    return out


def _track_args(wanted: dict[str, Any]) -> dict[str, Any]:
    return {k: wanted[k] for k in ("track", "retry_policy", "retries", "max_users") if wanted.get(k) is not None}


def _other_replica_parts(stack: Any) -> list[Any]:
    return [p for p in parts.replica_parts() if p.name != parts.replica_part().name and stack.topology.runs(p)]


def _served(argv: list[str]) -> dict[str, str]:
    from lab.console.llm import served_parts

    return served_parts(argv)

