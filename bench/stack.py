"""A private Faultline stack for a benchmark: lab/privatelab.py's `PrivateLab` (`faultline up -d` on a free block
of ports in a home holding a copy of the default trained registry) with an HTTP client on the lab's JSON API.

The lab is told to exit with this process (`--exit-with`), and `stop()` runs `faultline down` and then makes sure
the lab's pid is gone. Everything is reached the way a learner reaches it: the CLI and the lab's JSON API.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import source_registry
from lab.client import LabError
from lab.privatelab import PrivateLab, lab_cli


def faultline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The real CLI (`python -m lab.cli ...`), output captured."""
    return lab_cli(*args, timeout=timeout)


class BenchStack(PrivateLab):
    """A private lab (lab/privatelab.py) with the lab's JSON API as a benchmark calls it."""

    def api(self, method: str, path: str, timeout: float = 120.0, **kwargs: Any) -> Any:
        r = self.client.request(method, self.lab_url + path, timeout=timeout, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def status(self) -> dict[str, Any]:
        return self.api("GET", "/api/status", timeout=30)


def up(home: Path, cache: Path, replicas: int = 2, extra: tuple[str, ...] = (), track: str = "fraud") -> BenchStack:
    """`faultline up -d` in `home` on a free block of ports; a port grabbed meanwhile means another block.
    `track`: up's `--track` (the LLM track runs `replicas` LLM replicas)."""
    try:
        stack = BenchStack.start(source_registry(cache), replicas=replicas, home=home, up_args=extra, track=track,
                                 llm_replicas=replicas)
    except LabError as exc:
        raise RuntimeError(f"faultline up -d failed: {str(exc)[-2000:]}") from None
    assert isinstance(stack, BenchStack)
    return stack


@contextlib.contextmanager
def running(home: Path, cache: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> Iterator[BenchStack]:
    stack = up(home, cache, replicas, extra)
    try:
        yield stack
    finally:
        stack.stop()
