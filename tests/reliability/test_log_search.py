"""Finding 2 of issue 12: a log search could freeze the lab. `grep=^(?:[^\\x00]|[^\\x01]){0,24}\\x00` took 5 s on
the registry's log (Python's backtracking `re`, holding the GIL), /api/health waited meanwhile, and with `*` it
never returned. Now grep is a plain substring unless `regex` is asked for, and then RE2: linear time, GIL
released, pattern, program, text and time bounded (lab/logsearch.py)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from lab.logbuffer import MAX_LINE, LogBuffer
from lab.logsearch import MAX_PATTERN_CHARS, MAX_SCAN_CHARS, MAX_SEARCH_S, BadSearch, line_matcher
from lab.process import RestartPolicy, ServiceSpec
from lab.supervisor import Supervisor

# The pattern, one repetition more (each doubles Python's time), and the one that never returned.
WORST = ("^(?:[^\x00]|[^\x01]){0,25}\x00", "^(?:[^\x00]|[^\x01])*\x00", "(?:[^\x00]|[^\x01]){0,24}\x00$")
# RE2's slowest kind within the bounds: a program near MAX_PROGRAM_SIZE falls back to the NFA on long lines.
BIG_PROGRAM = r"\w{1000}\w{600}"


@contextmanager
def health_poller(lab_url: str) -> Iterator[list[float]]:
    """GET /api/health every 50 ms on another connection while the block runs; yields the latencies seen."""
    seen: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=lab_url, timeout=30, trust_env=False) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                assert http.get("/api/health").status_code == 200
                seen.append(time.monotonic() - t0)
                stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(35)


def test_a_worst_case_grep_cannot_freeze_the_lab(stack: Any) -> None:
    logs = stack.lab_url + "/api/services/registry/logs"
    with health_poller(stack.lab_url) as health:
        time.sleep(0.3)
        for pattern in WORST:
            for regex in (False, True):
                t0 = time.monotonic()
                r = stack.client.get(logs, params={"grep": pattern, **({"regex": 1} if regex else {})}, timeout=30)
                took = time.monotonic() - t0
                assert r.status_code == 200, r.text
                assert r.json()["lines"] == []  # no log line holds a NUL
                assert took < 1.5, (pattern, regex, took)
        time.sleep(0.3)
    assert len(health) >= 5 and max(health) < 1.0, health
    # a regex does match what it should, plain text is taken literally (and case-sensitively)
    started = stack.client.get(logs, params={"grep": r"^\[faultline\] start(ed|ing) ", "regex": "true"}).json()
    assert started["lines"] and all(x["line"].startswith("[faultline] start") for x in started["lines"])
    assert stack.client.get(logs, params={"grep": "[faultline] started"}).json()["lines"]
    assert not stack.client.get(logs, params={"grep": "[FAULTLINE] STARTED"}).json()["lines"]


@pytest.mark.parametrize(("pattern", "says"), [
    (r"(a)\1", "invalid escape sequence"),
    (r"(?=a)b", "invalid perl operator"),
    ("x{1001}", "invalid repetition size"),
    ("(", "missing )"),
    (r"\w{1000}\w{1000}\w{1000}", "too large"),
])
def test_an_invalid_or_unsupported_regex_is_a_400_naming_the_problem(stack: Any, pattern: str, says: str) -> None:
    t0 = time.monotonic()
    r = stack.client.get(stack.lab_url + "/api/services/registry/logs", params={"grep": pattern, "regex": 1})
    assert r.status_code == 400 and says in r.json()["detail"], r.text
    assert time.monotonic() - t0 < 1.0
    # the same through the console and the CLI
    r = stack.client.post(stack.lab_url + "/api/console/logs", json={"service": "registry", "grep": pattern,
                                                                     "regex": True})
    assert r.status_code == 400 and says in r.json()["detail"], r.text


def test_a_lone_surrogate_is_a_4xx_not_a_500(stack: Any) -> None:
    # valid JSON ("\ud800"), not valid UTF-8, which RE2 needs (a URL cannot even carry it)
    url, headers = stack.lab_url + "/api/console/logs", {"Content-Type": "application/json"}
    body = b'{"service": "registry", "grep": "\\ud800", "regex": true}'
    for sent in (body, body.replace(b', "regex": true', b"")):
        r = stack.client.post(url, content=sent, headers=headers)
        assert r.status_code == 422 and "grep" in r.json()["detail"], r.text
    with pytest.raises(BadSearch, match="not valid Unicode"):  # the lab's Python API (Stack.logs) says why too
        line_matcher("\ud800", regex=True)


def test_the_pattern_size_is_bounded_everywhere(stack: Any) -> None:
    long = "a" * (MAX_PATTERN_CHARS + 1)
    r = stack.client.get(stack.lab_url + "/api/services/registry/logs", params={"grep": long})
    assert r.status_code == 422 and "500" in r.text
    r = stack.client.post(stack.lab_url + "/api/console/logs", json={"service": "registry", "grep": long})
    assert r.status_code == 422 and "grep" in r.json()["detail"]
    with pytest.raises(BadSearch, match="at most 500"):
        line_matcher(long)


def test_the_cli_greps_plain_text_unless_asked_for_a_regex(stack: Any) -> None:
    plain = stack.cli("logs", "registry", "--grep", "(")
    assert plain.returncode == 0, plain.stderr
    bad = stack.cli("logs", "registry", "--grep", "(", "--regex")
    assert bad.returncode == 1 and "missing )" in bad.stderr
    # argv cannot carry a NUL: the same pattern with RE2's escapes
    worst = stack.cli("logs", "registry", "--grep", r"^(?:[^\x00]|[^\x01])*\x00", "--regex", timeout=30)
    assert worst.returncode == 0 and worst.stdout == ""


@pytest.fixture
def long_lines(tmp_path: Any) -> Iterator[Supervisor]:
    """A supervised process that fills its whole log buffer (5,000 lines of 8 KiB of word characters)."""
    sup = Supervisor(tmp_path / "logs").start()
    script = f"import sys\nline = 'a' * {MAX_LINE - 1} + '\\n'\nfor _ in range(5000):\n    sys.stdout.write(line)\n"
    sup.add(ServiceSpec("talker", [sys.executable, "-c", script], ready_path=None, restart=RestartPolicy("no")))
    deadline = time.monotonic() + 60
    while sup.service_status("talker")["state"] != "exited" or len(sup.logs("talker")) < 5000:
        assert time.monotonic() < deadline, "the talker did not fill its buffer"
        time.sleep(0.1)
    try:
        yield sup
    finally:
        sup.shutdown(grace_s=2)


def test_a_full_buffer_and_the_slowest_patterns_stay_bounded_and_leave_the_gil(long_lines: Supervisor) -> None:
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:  # stands for the event loop: it must keep getting the GIL while a search runs
        last = time.monotonic()
        while not stop.wait(0.005):
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        for grep, regex in [(WORST[1], True), (WORST[2], True), (BIG_PROGRAM, True), ("needle", False)]:
            t0 = time.monotonic()
            found = long_lines.logs("talker", grep=grep, regex=regex)
            took = time.monotonic() - t0
            assert took < MAX_SEARCH_S + 1.0, (grep, took)
            if grep == BIG_PROGRAM:
                assert found  # it matches the newest lines it had time for
            else:
                assert found == []
    finally:
        stop.set()
        ticker.join(5)
    assert max(gaps) < 0.5, max(gaps)


def test_a_search_scans_at_most_the_newest_max_scan_chars() -> None:
    buf = LogBuffer("big", None, capacity=5000)
    line = "x" * (MAX_LINE - 10)
    buf.add("needle in the oldest line")
    for _ in range(4000):
        buf.add(line)
    buf.add("needle in the newest line")
    assert 4000 * len(line) > MAX_SCAN_CHARS  # the oldest line is still held, but out of a search's reach
    assert buf.query(tail=5000)[0]["line"] == "needle in the oldest line"
    found = buf.query(line_matcher("needle"))
    assert [x["line"] for x in found] == ["needle in the newest line"]
    assert len(buf.query(line_matcher("xx"), tail=3)) == 3
