"""Preprocessing settings that travel with the weights (saved in the model's config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from .errors import ModelError

RESIZE_MODES = ("crop", "stretch", "pad")


@dataclass(frozen=True)
class Preprocess:
    """Turns an RGB PIL image into a normalised CHW float tensor.

    mean/std are in pixel units (0-255), so EfficientNet-Lite's `(x - 127) / 128` is stated
    exactly rather than approximated by ImageNet statistics.
    resize: "crop" scales the short side to `size` and cuts the centre square; "stretch" scales
    both sides to `size`; "pad" scales the long side to `size` and pads with grey.
    """

    size: int = 224
    resize: str = "crop"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    interpolation: str = "bicubic"
    _transform: v2.Compose | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ModelError(f"preprocess resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if not isinstance(self.size, int) or self.size < 16:
            raise ModelError(f"preprocess size {self.size!r} must be an integer >= 16")
        try:
            interp = InterpolationMode(self.interpolation)
        except ValueError:
            valid = ", ".join(m.value for m in InterpolationMode)
            raise ModelError(f"preprocess interpolation {self.interpolation!r} is not one of {valid}") from None
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "_transform", self._build(interp))

    def _build(self, interp: InterpolationMode) -> v2.Compose:
        s = self.size
        if self.resize == "crop":
            geometry = [v2.Resize(s, interpolation=interp, antialias=True), v2.CenterCrop(s)]
        elif self.resize == "stretch":
            geometry = [v2.Resize((s, s), interpolation=interp, antialias=True)]
        else:
            geometry = [_Letterbox(s, interp)]
        return v2.Compose(
            [
                *geometry,
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=False),
                v2.Normalize(mean=list(self.mean), std=list(self.std)),
            ]
        )

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self._transform(img)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_transform")
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        known = {"size", "resize", "mean", "std", "interpolation"}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown preprocess settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


class _Letterbox(torch.nn.Module):
    """Scale the long side to `size` and centre the image on a grey square."""

    def __init__(self, size: int, interp: InterpolationMode) -> None:
        super().__init__()
        self.size, self.interp = size, interp

    def forward(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        scale = self.size / max(w, h)
        new = [max(1, round(h * scale)), max(1, round(w * scale))]
        img = v2.functional.resize(img, new, interpolation=self.interp, antialias=True)
        canvas = Image.new("RGB", (self.size, self.size), (127, 127, 127))
        canvas.paste(img, ((self.size - img.width) // 2, (self.size - img.height) // 2))
        return canvas
