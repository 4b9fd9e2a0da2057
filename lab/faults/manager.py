"""FaultManager: applies faults through their injectors, keeps what is active, and undoes it — one, or all.

Thread-safe (the lab API, the scenario runner and timers call it from different threads; one lock serialises
every change to the stack). Reverts never raise: what could not be undone is written into the record's notes.
`revert_all` goes in reverse order of application, so faults stacked on one service unwind cleanly. A fault
with a duration is reverted by a timer. Active records are also written to a JSON file (when a path is given),
so a lab restarted after a crash can undo what the previous one left behind (`recover`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from lab.faults.base import Applied, FaultError, get
from lab.faults.context import FaultContext
from lab.faults.parse import parse_fault

log = logging.getLogger("faultline.faults")
HISTORY = 200


class FaultManager:
    def __init__(self, ctx: FaultContext, state_path: Path | None = None) -> None:
        self.ctx = ctx
        self.state_path = state_path
        self._active: dict[str, Applied] = {}
        self._history: list[Applied] = []
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.RLock()  # serialises changes to the stack (applies and reverts)
        self._data = threading.Lock()  # guards the records only: reads never wait for a slow apply
        self._closed = False

    # --- applying ----------------------------------------------------------------------------------------------

    def apply(self, fault: Any, duration_s: float | None = None) -> Applied:
        """Apply a fault (its pydantic model, or the scenario's dict form). `duration_s` (or the fault's own
        `until.duration_s`) schedules its revert. FaultError when it cannot be applied; nothing is left half-done."""
        if isinstance(fault, dict):
            fault = parse_fault(fault)
        injector = get(f"{fault.kind}.{fault.action}")
        if duration_s is None and not isinstance(fault.until, str):
            duration_s = fault.until.duration_s
        with self._lock:
            if self._closed:
                raise FaultError("the lab is shutting down", 409)
            if fault.id in self._active:
                raise FaultError(f"a fault with id {fault.id!r} is already active; revert it first or pick another id",
                                 409)
            self.ctx.check_running()
            applied = injector.apply(self.ctx, fault)
            with self._data:
                self._active[fault.id] = applied
                self._history = [a for a in self._history if a.fault_id != fault.id]
                self._save()
            log.info("fault applied id=%s name=%s: %s", fault.id, applied.name, applied.description)
            if duration_s is not None:
                timer = threading.Timer(duration_s, self._expire, args=(fault.id, applied.applied_at))
                timer.daemon = True
                timer.name = f"fault-{fault.id}"
                self._timers[fault.id] = timer
                timer.start()
            return applied

    def _expire(self, fault_id: str, applied_at: float) -> None:
        with self._lock:
            current = self._active.get(fault_id)
            if current is None or current.applied_at != applied_at:  # reverted (and maybe re-applied) meanwhile
                return
            self._timers.pop(fault_id, None)
            self._revert(current)

    # --- reverting ----------------------------------------------------------------------------------------------

    def revert(self, fault_id: str) -> Applied:
        """Undo an active fault. A fault reverted before is reverted again (harmless by contract) and returned;
        KeyError for an id never applied."""
        with self._lock:
            applied = self._active.get(fault_id) or self.reverted(fault_id)
            if applied is None:
                raise KeyError(fault_id)
            timer = self._timers.pop(fault_id, None)
            if timer is not None:
                timer.cancel()
            return self._revert(applied)

    def revert_all(self) -> list[Applied]:
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            return [self._revert(a) for a in reversed(list(self._active.values()))]

    def _revert(self, applied: Applied) -> Applied:
        again = not applied.active
        try:
            notes = get(applied.name).revert(self.ctx, applied)
        except Exception as exc:  # noqa: BLE001 - a revert must never raise: record why and carry on
            notes = [f"revert failed: {exc}"]
            log.error("revert of %s (%s) failed: %r", applied.fault_id, applied.name, exc)
        applied.notes.extend(("again: " if again else "") + n for n in notes)
        if not again:
            applied.reverted_at = time.time()
            with self._data:
                self._active.pop(applied.fault_id, None)
                self._history.append(applied)
                del self._history[:-HISTORY]
                self._save()
            log.info("fault reverted id=%s name=%s%s", applied.fault_id, applied.name,
                     f" notes={notes}" if notes else "")
        return applied

    # --- reading ------------------------------------------------------------------------------------------------

    def active(self) -> list[Applied]:
        with self._data:
            return list(self._active.values())

    def history(self) -> list[Applied]:
        with self._data:
            return list(self._history)

    def reverted(self, fault_id: str) -> Applied | None:
        with self._data:
            return next((a for a in reversed(self._history) if a.fault_id == fault_id), None)

    def find(self, fault_id: str) -> Applied | None:
        with self._data:
            found = self._active.get(fault_id)
        return found or self.reverted(fault_id)

    # --- crash safety -------------------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_path is None:
            return
        data = json.dumps([a.to_dict() for a in self._active.values()], indent=1)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(data)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("could not save active faults to %s: %s", self.state_path, exc)

    def leftovers(self) -> list[Applied]:
        """Faults a previous lab applied and never reverted (it crashed), from the state file."""
        if self.state_path is None or not self.state_path.is_file():
            return []
        try:
            return [Applied.from_dict(d) for d in json.loads(self.state_path.read_text())]
        except (ValueError, TypeError, OSError) as exc:
            log.warning("unreadable fault state %s: %s", self.state_path, exc)
            return []

    def recover(self) -> list[Applied]:
        """Undo what a crashed lab's faults left behind (registry stages of a rollout; its processes, proxies and
        configs died with it) and clear the state file."""
        found = [a for a in self.leftovers() if a.fault_id not in self._active]
        with self._lock:
            for applied in reversed(found):
                try:
                    notes = get(applied.name).recover(self.ctx, applied)
                except Exception as exc:  # noqa: BLE001 - recovery is best effort, like any revert
                    notes = [f"recovery failed: {exc}"]
                applied.notes.extend("recovered: " + n for n in notes)
                applied.reverted_at = time.time()
                with self._data:
                    self._history.append(applied)
            with self._data:
                self._save()
        return found

    def close(self) -> None:
        """Revert everything (the lab is stopping, a scenario was aborted or given up)."""
        with self._lock:
            if self._closed:
                return
            self.revert_all()
            self._closed = True
        self.ctx.close()
