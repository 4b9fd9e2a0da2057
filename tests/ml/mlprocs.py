"""Helpers for the model-side tests: real service processes on free loopback ports, generated feature rows.

Services are started through the harness (tests/kit.py; command lines from lab.specs) with their logs in the test's
tmp dir and stopped by pid (`Proc.stop`); nothing here touches the default ports or ./.faultline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kit import ServiceProc, free_port, service_argv

from services.common.schema import MODEL_FEATURES
from services.trainer.generator import Generator


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
    argv = service_argv(name, port, registry=registry, versions=versions.split(","), config=config)
    return Proc(name, argv, log_dir, port, wait)


def start_registry(root: Path, log_dir: Path) -> Proc:
    """The registry's HTTP service on `root`, ready."""
    port = free_port()
    return Proc("registry", service_argv("registry", port, registry=root), log_dir, port)


def variant_versions(root: Path) -> dict[str, str]:
    """{variant name: version} of the variants the `variant_registry` fixture made."""
    return dict(line.split("=") for line in (root / "variants.txt").read_text().splitlines())
