"""One log line per event on stderr, `2026-11-26T10:00:00.123Z level name message key=value`, for every service.

Its own module, standard library only: the lab and the load generator set up their logging with it before they
start anything, and must not pay for the web stack (FastAPI, prometheus_client) that services/common/service.py
imports.
"""

from __future__ import annotations

import logging
import sys
import time


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = self.converter(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def setup_logging(name: str, level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(name)
