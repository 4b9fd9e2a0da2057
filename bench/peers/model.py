"""The one scoring function both peers use: registry artifact -> FraudMLP + Preprocessor -> scores for rows.

Same steps as the model server (services/modelserver/runtime.py): verified bytes from the registry, the net
from services/trainer/model.py, the transform rebuilt from the artifact's meta, sigmoid of the logit. One torch
thread, like the model server's default, so no server gets more cores than another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.registry.store import Registry
from services.trainer import model as model_mod
from services.trainer.transform import Preprocessor


@dataclass
class PeerModel:
    version: str
    sha256: str
    net: Any
    preprocessor: Preprocessor

    def scores(self, rows: list[Any]) -> list[float | None]:
        """Scores for rows (raises transform.RowError on a contract violation); NaN comes back as None."""
        x = self.preprocessor.matrix_from_encoded(self.preprocessor.encode_rows(rows))
        with torch.inference_mode():
            out = torch.sigmoid(self.net(torch.from_numpy(x))).numpy().astype(np.float64)
        return [None if math.isnan(s) else s for s in out.tolist()]


def load(registry_root: str, version: str) -> PeerModel:
    torch.set_num_threads(1)
    art = Registry(registry_root).load(version)
    net = model_mod.from_bytes(art.data)
    return PeerModel(art.version, art.meta["sha256"], net, Preprocessor(art.meta["preprocessing"]))
