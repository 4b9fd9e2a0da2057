"""A registry version loaded for serving: verified bytes -> torch net + the shared transform + runtime knobs.

Imports torch; the model server calls `load_version` from a worker thread so that /healthz answers while torch
is still importing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from services.registry.store import Registry
from services.trainer.transform import Preprocessor


@dataclass
class LoadedModel:
    version: str
    sha256: str
    meta: dict[str, Any]
    preprocessor: Preprocessor
    net: Any  # services.trainer.model.FraudMLP
    delay_ms: float = 0.0  # the `slow` variant's extra compute per batch
    loaded_at: float = field(default_factory=time.time)
    workspace: np.ndarray | None = None  # reserved for a full batch: see reserve_workspace

    @property
    def variant(self) -> str | None:
        return self.meta.get("variant")

    @cached_property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Each categorical feature's vocabulary size (its index is the 'unknown' code): for input summaries."""
        return tuple(len(vocab) for vocab in self.preprocessor.categorical.values())

    @property
    def threshold(self) -> float:
        return float(self.meta.get("metrics", {}).get("threshold", 0.5))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Fraud scores (float64, NaN allowed) for a float32 model-input matrix."""
        import torch

        with torch.inference_mode():
            return torch.sigmoid(self.net(torch.from_numpy(x))).numpy().astype(np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "variant": self.variant,
            "stage": self.meta.get("stage"),
            "metrics": self.meta.get("metrics"),
            "lineage": self.meta.get("lineage"),
            "delay_ms": self.delay_ms,
        }


def load_version(registry: Registry, version: str) -> LoadedModel:
    """Load and verify one version. Raises CorruptArtifact / VersionNotFound from the registry."""
    from services.trainer import model as model_mod

    art = registry.load(version)
    net = model_mod.from_bytes(art.data)
    pre = Preprocessor(art.meta["preprocessing"])
    if pre.input_dim != net.input_dim:
        raise ValueError(f"{version}: preprocessing yields {pre.input_dim} inputs, the net expects {net.input_dim}")
    delay = float(art.meta.get("runtime", {}).get("delay_ms", 0.0) or 0.0)
    return LoadedModel(art.version, art.meta["sha256"], art.meta, pre, net, delay)


WARM_UP_MAX_ROWS = 4096  # warm-up passes beyond this only cost start-up time; the workspace covers the rest


def workspace_width(model: LoadedModel) -> int:
    """float32 values per row of a batch: the input row and every layer's activations."""
    return int(model.net.input_dim) + sum(int(h) for h in model.net.hidden) + 1


def reserve_workspace(model: LoadedModel, max_batch_size: int) -> int:
    """Reserve (and touch, so it is resident) the memory a full batch of `max_batch_size` rows needs: its input
    matrix and activations, kept for the life of the loaded version, as inference engines built for a maximum
    batch size reserve their buffers up front. Returns the bytes reserved."""
    model.workspace = None  # the old reservation goes first: a smaller one must not briefly need both
    workspace = np.empty((max_batch_size, workspace_width(model)), dtype=np.float32)
    workspace.fill(1.0)
    model.workspace = workspace
    return int(workspace.nbytes)


def warm_up(model: LoadedModel, batch_sizes: tuple[int, ...] = (1, 8, 32)) -> None:
    """Run the net on a few batch shapes so the first real requests don't pay one-off allocation costs."""
    rows = _warmup_rows(model)
    enc = model.preprocessor.encode_rows(rows)
    x = model.preprocessor.matrix_from_encoded(enc)
    for n in sorted({min(n, WARM_UP_MAX_ROWS) for n in batch_sizes}):
        reps = np.resize(np.arange(len(x)), n)
        for _ in range(3):
            model.scores(x[reps])


def _warmup_rows(model: LoadedModel) -> list[dict[str, Any]]:
    from services.common.schema import DEFAULT_CARD_FEATURES

    row = {
        "amount": 42.0,
        "hour": 12,
        "device_age_days": 100.0,
        "merchant_category": "grocery",
        "country": "US",
        "card_present": True,
        **DEFAULT_CARD_FEATURES,
    }
    return [row, {**row, "amount": None, "country": "GB", "merchant_category": "never-seen"}]
