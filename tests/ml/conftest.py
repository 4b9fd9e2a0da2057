"""Fixtures for the model side: a registry trained by the real trainer CLI, its broken variants, processes.

`ml_home` runs `python -m services.trainer defaults` (kit.train_defaults) once per session into a tmp dir (the
full default training, so its timing and metrics are what users get). Tests that change a registry work on a copy
(`registry_copy`). Processes a test starts go in `procs` and are stopped by pid at teardown.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import train_defaults
from mlprocs import Proc


@pytest.fixture(scope="session")
def ml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose registry holds the default v1 and v2, trained by the real CLI (timed)."""
    home = tmp_path_factory.mktemp("ml-home")
    started = time.monotonic()
    proc = train_defaults(home, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (home / "defaults.seconds").write_text(f"{time.monotonic() - started:.2f}")
    (home / "defaults.stderr").write_text(proc.stderr)
    (home / "defaults.stdout").write_text(proc.stdout)
    return home


@pytest.fixture(scope="session")
def ml_registry(ml_home: Path) -> Path:
    return ml_home / "registry"


@pytest.fixture(scope="session")
def variant_registry(ml_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default registry plus one of each broken variant of v1 (made in-process)."""
    from services.registry.store import Registry
    from services.registry.variants import make_variant

    root = tmp_path_factory.mktemp("variants") / "registry"
    shutil.copytree(ml_registry, root)
    reg = Registry(root)
    made = {}
    for variant, params in (
        ("flipped_labels", {}),
        ("no_standardisation", {}),
        ("slow", {"delay_ms": 80}),
        ("nan", {"fraction": 0.3}),
        ("corrupt", {}),
    ):
        made[variant] = make_variant(reg, "v1", variant, params)["version"]
    (root / "variants.txt").write_text("\n".join(f"{k}={v}" for k, v in made.items()))
    return root


@pytest.fixture
def registry_copy(ml_registry: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "registry"
    shutil.copytree(ml_registry, dest)
    return dest


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    """Collects processes a test starts, and stops them all at teardown."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()
