"""Pooled features of earlier backbone levels joined to the final ones.

The last level of an ImageNet network encodes object categories; what tells anime characters
apart (hair and eye colours, patterns) survives better in early levels. With frozen
EfficientNet-Lite0 ImageNet features, 5-shot top-1 on the 4 held-out anime characters was 0.65
from the final level and 0.84 from level 0 (stride 2, 16 channels) alone (benchmarks/taps.py).
On top of the colour histogram of models/anime, though, trained models with taps were no better
(its model card), so no shipped model uses them; `byakugan train --taps` offers them.

A tapped backbone returns [unit(final pooled), unit(pooled level i) for each tap], so each level
counts equally in a cosine whatever its width. Levels are timm's `feature_info` indices.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ModelError


class Tapped(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, taps: Sequence[int]) -> None:
        super().__init__()
        levels = [info["num_chs"] for info in getattr(net, "feature_info", [])]
        if not hasattr(net, "forward_intermediates") or not levels:
            raise ModelError(f"backbone {type(net).__name__}: timm gives no intermediate levels to tap")
        bad = [t for t in taps if not isinstance(t, int) or not 0 <= t < len(levels)]
        if bad or not taps or len(set(taps)) != len(taps):
            raise ModelError(f"feature taps {list(taps)}: must be distinct levels 0-{len(levels) - 1} of this backbone "
                             f"(channels {levels})")
        self.net, self.taps = net, sorted(taps)
        self.num_features = int(net.num_features) + sum(levels[t] for t in self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final, inter = self.net.forward_intermediates(x, indices=self.taps, norm=False)
        parts = [F.normalize(self.net.forward_head(final), dim=-1)]
        parts += [F.normalize(t.mean((2, 3)), dim=-1) for t in inter]
        return torch.cat(parts, -1)
