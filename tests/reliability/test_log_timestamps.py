"""One timestamp per log line: a service's own leading UTC timestamp becomes the line's time (and leaves its text);
a line without one is stamped when the supervisor captured it. And on a real stack, `logs` shows no line with
two timestamps run together."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from lab.logbuffer import LogBuffer, split_timestamp

TWO_STAMPS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ?\d{4}-\d\d-\d\dT")


def test_the_services_own_timestamp_is_the_lines_only_timestamp(tmp_path: Any) -> None:
    buf = LogBuffer("gw", tmp_path / "gw.log")
    buf.feed(b"2026-12-06T18:00:01.057Z INFO gateway started\nno stamp here\n")
    first, second = buf.query()
    assert first["line"] == "INFO gateway started" and first["ts"] == "2026-12-06T18:00:01.057Z"
    assert abs(first["t"] - 1796580001.057) < 1e-3
    assert second["line"] == "no stamp here" and abs(second["t"] - time.time()) < 5
    buf.close()
    for line in (tmp_path / "gw.log").read_text().splitlines():
        assert not TWO_STAMPS.search(line), line
    assert split_timestamp("2026-13-99T99:00:00Z odd")[1] == "2026-13-99T99:00:00Z odd"  # not a time: kept as text


@pytest.mark.stack
def test_console_logs_show_one_timestamp_per_line(stack: Any) -> None:
    with httpx.Client(base_url=stack.lab_url, timeout=30, trust_env=False) as http:
        r = http.post("/api/console/logs", json={"service": "gateway", "tail": 30})
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["data"]["lines"]
        for line in data["text"].splitlines()[1:]:
            assert not TWO_STAMPS.search(line), line
