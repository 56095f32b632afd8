"""How `byakugan train --backbone-lr` fine-tunes a backbone, as the recipe of the shipped
`anime-finetuned` did (benchmarks/gpu_finetune.py): the head alone for the first --head-epochs
(a random head's gradients would otherwise reach the pretrained features), then the backbone's
last two stages at --backbone-lr and the stages before at --early-lr (default 0.3 of it: they hold
the more general features), BatchNorm statistics kept (metric.train keeps the backbone in eval mode).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..embedding.taps import Tapped

EARLY_SHARE = 0.3  # the recipe's 3e-5 for the earlier stages against 1e-4 for the last two


def late_start(backbone: torch.nn.Module) -> Optional[str]:
    """Where the backbone's last two stages begin, as a parameter name prefix: the second-to-last of
    timm's `blocks` (EfficientNet, MobileNet, ViT) or `stages` (ConvNeXt and others), a ResNet's
    layer3, inside a --taps wrapper too; None for other backbones (all at one rate)."""
    inner = getattr(backbone, "net", None)
    if isinstance(backbone, Tapped) and isinstance(inner, torch.nn.Module):
        start = late_start(inner)
        return None if start is None else "net." + start
    for name in ("blocks", "stages"):
        parts = getattr(backbone, name, None)
        if isinstance(parts, torch.nn.Sequential) and len(parts) >= 3:
            return f"{name}.{len(parts) - 2}."
    return "layer3." if isinstance(getattr(backbone, "layer3", None), torch.nn.Module) else None


def backbone_parts(backbone: torch.nn.Module) -> tuple[list, list]:
    """(late, early) parameters: from the first of the last two stages on, in the order the network
    defines them (so the head convolution after the stages is late), and those before it."""
    named = list(backbone.named_parameters())
    start = late_start(backbone)
    cut = next((i for i, (name, _) in enumerate(named) if start and name.startswith(start)), 0)
    return [p for _, p in named[cut:]], [p for _, p in named[:cut]]


def train_backbone(cfg, epoch: int) -> bool:
    """Whether this epoch (from 0) trains the backbone: fine-tuning, after the head's own epochs."""
    return cfg.backbone_lr > 0 and epoch >= cfg.head_rounds()
