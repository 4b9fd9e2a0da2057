"""Helpers for the model-side tests: real service processes on free loopback ports, generated feature rows.

Services are started as `python -m services.<name>` with their logs in the test's tmp dir and stopped by pid
(`Proc.stop`); nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from services.common.schema import MODEL_FEATURES  # noqa: E402
from services.trainer.generator import Generator  # noqa: E402

START_TIMEOUT_S = 90.0  # generous: the machine is shared by several engineers


def child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feature_rows(n: int, seed: int = 123, data_seed: int = 7, **shift: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    """n generated rows carrying every model feature (as the gateway sends them), and their labels."""
    from services.trainer.generator import Shift

    cols = Generator(data_seed).sample_columns(n, Shift(**shift) if shift else None, np.random.default_rng(seed))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for name in MODEL_FEATURES:
            v = cols[name][i]
            row[name] = v.item() if hasattr(v, "item") else v
        rows.append(row)
    return rows, cols["label"]


class Proc:
    """One started service process; `stop()` ends it by pid."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, port: int, wait_path: str | None = "/readyz"):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        if wait_path is not None:
            self.wait_for(wait_path)

    def wait_for(self, path: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: {path} not 200 after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples of `name` (optionally those whose labels include `labels`) on /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += sample.value
        return total

    def stop(self) -> None:
        self.client.close()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start_modelserver(
    registry: Path,
    log_dir: Path,
    versions: str = "v1",
    config: str | None = None,
    wait: str | None = "/readyz",
    name: str = "model-1",
) -> Proc:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "services.modelserver",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--registry",
        str(registry),
        "--replica",
        name,
        "--versions",
        versions,
    ]
    if config:
        argv += ["--config", config]
    return Proc(name, argv, log_dir, port, wait)


def variant_versions(root: Path) -> dict[str, str]:
    """{variant name: version} of the variants the `variant_registry` fixture made."""
    return dict(line.split("=") for line in (root / "variants.txt").read_text().splitlines())
