"""Preprocessing settings that travel with the weights (saved in the model's config.json).

Written with PIL and numpy only, so an exported bundle reproduces it exactly without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .errors import ModelError

RESIZE_MODES = ("crop", "stretch", "pad")
MAX_ASPECT = 8  # "crop" mode: longer sides are cut to this many short sides before resizing
_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                   "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Turns an RGB PIL image into a normalised CHW float32 array or tensor.

    mean/std are in pixel units (0-255), so EfficientNet-Lite's `(x - 127) / 128` is stated
    exactly rather than approximated by ImageNet statistics.
    resize: "crop" scales the short side to `size` and cuts the centre square; "stretch" scales
    both sides to `size`; "pad" scales the long side to `size` and centres it on grey.
    """

    size: int = 224
    resize: str = "crop"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ModelError(f"preprocess resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if not isinstance(self.size, int) or self.size < 16:
            raise ModelError(f"preprocess size {self.size!r} must be an integer >= 16")
        if self.interpolation not in _INTERPOLATIONS:
            raise ModelError(f"preprocess interpolation {self.interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}")
        try:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        except (TypeError, ValueError):
            raise ModelError(f"preprocess mean {self.mean!r} and std {self.std!r} must be three numbers each") from None
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in self.mean + self.std) \
                or min(self.std) <= 0:  # a std of 0 divides every pixel by zero: every vector NaN
            raise ModelError(f"preprocess mean {list(self.mean)} and std {list(self.std)}: three finite numbers each, "
                             "std above 0")

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize and crop or pad to size x size."""
        s, w, h = self.size, img.width, img.height
        resample = _INTERPOLATIONS[self.interpolation]
        if self.resize == "stretch":
            return img.resize((s, s), resample)
        if self.resize == "crop":
            if max(w, h) > MAX_ASPECT * min(w, h):
                # Only the centre square is kept: cut an extreme strip (40000x1) to its middle first,
                # or scaling its short side up to `size` would build a gigapixel image on the way.
                keep = MAX_ASPECT * min(w, h)
                img = img.crop(((w - keep) // 2, 0, (w + keep) // 2, h) if w > h else (0, (h - keep) // 2, w, (h + keep) // 2))
                w, h = img.width, img.height
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            img = img.resize((nw, nh), resample)
            left, top = (nw - s) // 2, (nh - s) // 2
            return img.crop((left, top, left + s, top + s))
        scale = s / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
        canvas = Image.new("RGB", (s, s), (127, 127, 127))
        canvas.paste(img, ((s - img.width) // 2, (s - img.height) // 2))
        return canvas

    def to_array(self, img: Image.Image) -> np.ndarray:
        x = np.asarray(self.geometry(img), dtype=np.float32)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, img):
        """A picture as the model's input tensor: a PIL image of any mode, or whatever load_image reads."""
        import torch

        if not (isinstance(img, Image.Image) and img.mode == "RGB"):
            from .images import load_image  # the one path every picture takes to RGB (its modes, EXIF, errors)

            img = load_image(img)
        return torch.from_numpy(self.to_array(img))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        known = {"size", "resize", "mean", "std", "interpolation"}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown preprocess settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)
