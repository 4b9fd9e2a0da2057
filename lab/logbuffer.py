"""Captured service output: timestamped lines kept in a ring buffer for the lab and appended to a log file.

The supervisor feeds raw bytes from a child's stdout/stderr pipe; the lab (CLI `faultline logs`, the console,
the monitor) reads lines back filtered by a search (lab/logsearch.py), tail length or time. Reads come from API
threads while the supervisor thread appends, hence the lock.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from lab.logsearch import MAX_SCAN_CHARS, MAX_SEARCH_S, LineMatch

MAX_LINE = 8192
# A service's own leading timestamp (services/common/service.py's UTCFormatter): the line keeps one timestamp, the
# service's, instead of the supervisor's capture time run together with it.
OWN_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?Z ")


def iso_utc(t: float) -> str:
    seconds, ms = divmod(int(round(t * 1000)), 1000)  # rounded: a parsed .057 must print as .057, not .056
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def split_timestamp(line: str) -> tuple[float, str]:
    """(when, text): the line's own leading UTC timestamp if it has one (removed from the text), else now."""
    m = OWN_TIMESTAMP.match(line)
    if m is None:
        return time.time(), line
    try:
        t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float(m.group(2) or 0.0)
    except ValueError:
        return time.time(), line
    return t, line[m.end():]


class LogBuffer:
    """The last `capacity` lines of one service, plus an append-only file with every line."""

    def __init__(self, name: str, path: Path | None, capacity: int = 5000) -> None:
        self.name = name
        self.path = path
        self._lines: deque[tuple[float, str]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._partial = b""
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the buffer

    def feed(self, data: bytes) -> None:
        """Raw bytes from the pipe; complete lines are stored, a trailing partial line waits for the rest."""
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            self.add(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def flush_partial(self) -> None:
        if self._partial:
            raw, self._partial = self._partial, b""
            self.add(raw.decode("utf-8", errors="replace"))

    def add(self, line: str, t: float | None = None) -> None:
        if t is None:
            t, line = split_timestamp(line)
        line = line[:MAX_LINE]
        with self._lock:
            self._lines.append((t, line))
            if self._file is not None:
                try:
                    self._file.write(f"{iso_utc(t)} {line}\n")
                except (OSError, ValueError):
                    pass  # a full disk or a closed file must not take the supervisor down

    def query(
        self, match: LineMatch | None = None, tail: int | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Lines oldest first; `match` keeps the lines it accepts (newest first, scanning at most MAX_SCAN_CHARS
        of text and for at most MAX_SEARCH_S: no search costs more), `since` keeps lines after that epoch time,
        `tail` keeps the last N of what is left."""
        with self._lock:
            items = list(self._lines)
        if since is not None:
            items = [(t, s) for t, s in items if t > since]
        if match is not None:
            kept: list[tuple[float, str]] = []
            budget, deadline = MAX_SCAN_CHARS, time.monotonic() + MAX_SEARCH_S
            for t, s in reversed(items):
                budget -= len(s)
                if budget < 0 or time.monotonic() > deadline:
                    break
                if match(s):
                    kept.append((t, s))
                    if tail is not None and len(kept) >= tail:
                        break  # newest first: the last N matches are found
            items = kept[::-1]
        if tail is not None:
            items = items[-tail:] if tail > 0 else []
        return [{"t": t, "ts": iso_utc(t), "line": s} for t, s in items]

    def close(self) -> None:
        self.flush_partial()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
