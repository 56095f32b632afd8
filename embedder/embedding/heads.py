"""Projection heads: pooled backbone features -> embedding (before the final L2 normalisation).

- none:   the features as they are (frozen ImageNet embedding).
- linear: one linear projection to `dim`.
- concat: [normalised features, weight * normalised MLP(features)]. A head trained with a metric
  loss alone collapsed onto the training classes and lost accuracy on unseen ones; keeping the
  generic features beside it kept their accuracy and added the learned gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelError

HEAD_TYPES = ("none", "linear", "concat")


class Head(torch.nn.Module):
    def __init__(self, config: dict, feature_dim: int) -> None:
        super().__init__()
        kind = config.get("type", "none")
        if kind not in HEAD_TYPES:
            raise ModelError(f"head type {kind!r} is not one of {', '.join(HEAD_TYPES)}")
        self.kind, self.weight = kind, float(config.get("weight", 1.0))
        if kind == "none":
            self.out_dim = feature_dim
        elif kind == "linear":
            self.proj = torch.nn.Linear(feature_dim, int(config["dim"]))
            self.out_dim = int(config["dim"])
        else:
            hidden, dim = int(config.get("hidden", 512)), int(config["dim"])
            self.proj = torch.nn.Sequential(
                torch.nn.Linear(feature_dim, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
                torch.nn.Dropout(float(config.get("dropout", 0.1))), torch.nn.Linear(hidden, dim),
            )
            self.out_dim = feature_dim + dim

    def learned(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable part alone (what a metric loss sees during training)."""
        return self.proj(features) if self.kind != "none" else features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "concat":
            return torch.cat([F.normalize(features, dim=-1), self.weight * F.normalize(self.proj(features), dim=-1)], -1)
        return self.learned(features)
