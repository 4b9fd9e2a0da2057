"""Helpers for the model-side tests: real service processes on free loopback ports, generated feature rows.

Services are started as `python -m services.<name>` with their logs in the test's tmp dir and stopped by pid
(`Proc.stop`); nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from kit import REPO, ServiceProc, free_port

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from services.common.schema import MODEL_FEATURES  # noqa: E402
from services.trainer.generator import Generator  # noqa: E402


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


class Proc(ServiceProc):
    """A model-side service; `wait_path` None starts it without waiting."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, port: int, wait_path: str | None = "/readyz"):
        super().__init__(name, argv, port, log_dir, ready_path=wait_path)

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
