"""The augmented views a head trains on (embedder.training.metric)."""

from __future__ import annotations

from torchvision.transforms import v2

# The share of colour-jittered views made grey: a few, so that colour stays what tells anime
# characters apart (benchmarks/loso.py --grey-views measures more).
GREY = 0.05


def augmentation(size: int, hflip: bool, colour_jitter: bool = True, grey: float = GREY) -> v2.Compose:
    steps = [v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True), v2.RandomRotation(12)]
    if colour_jitter:
        steps += [v2.ColorJitter(0.3, 0.3, 0.2, 0.03), v2.RandomGrayscale(grey)]
    return v2.Compose(steps + ([v2.RandomHorizontalFlip()] if hflip else []))
