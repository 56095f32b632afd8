"""What a detector returns, and the detector that takes the whole image."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import ModelError


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, width, height in image pixels
    score: float = 1.0
    landmarks: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # hand detector only
    whole: bool = field(default=False, compare=False)  # the whole picture, taken as the face (it fills the picture)

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def crop(self, img: Image.Image) -> Image.Image:
        x, y, w, h = self.box
        return img.crop((x, y, x + w, y + h))


def whole(img: Image.Image, score: float = 1.0) -> Detection:
    return Detection((0, 0, img.width, img.height), score)


class NoDetector:
    name = "none"

    def __init__(self) -> None:
        self.config = {"name": self.name}

    def __call__(self, img: Image.Image) -> list[Detection]:
        return [whole(img)]


def make_settings(cls, given: dict, detector: str, files: tuple[str, ...] = ()):
    """A detector's settings dataclass from a stored or typed config; a key it does not have is named
    with the valid ones (`files`: the config's other keys, paths the detector reads)."""
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(given) - known):
        raise ModelError(f"detector {detector}: no setting {unknown[0]!r}; valid: {', '.join(sorted(known | set(files)))}")
    return cls(**given)
