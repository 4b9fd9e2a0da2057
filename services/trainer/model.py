"""The fraud-scoring network and its artifact format (torch; imported by the trainer and the model server only).

An artifact (`model.pt`) is `torch.save` of `{"format", "input_dim", "hidden", "state_dict"}`; it is loaded
with `weights_only=True`, so a tampered file cannot run code. The network outputs one logit per row; the
score is its sigmoid.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

ARTIFACT_FORMAT = "faultline-mlp-1"
DEFAULT_HIDDEN: tuple[int, ...] = (64, 32)


class FraudMLP(nn.Module):
    """input -> [Linear -> ReLU] per hidden size -> Linear -> one logit."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]


def to_bytes(model: FraudMLP) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {"format": ARTIFACT_FORMAT, "input_dim": model.input_dim, "hidden": list(model.hidden), "state_dict": state},
        buf,
    )
    return buf.getvalue()


def from_bytes(data: bytes) -> FraudMLP:
    obj: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"not a {ARTIFACT_FORMAT} artifact")
    model = FraudMLP(int(obj["input_dim"]), tuple(int(h) for h in obj["hidden"]))
    model.load_state_dict(obj["state_dict"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
