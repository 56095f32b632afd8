"""OpenCV cascade detectors: `anime-face` (lbpcascade_animeface, fetched once, see assets) and
`face` (OpenCV's frontal-face Haar cascade from cv2.data); each box is widened, upward for hair."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..errors import ModelError
from .assets import ANIMEFACE_CASCADE, fetch
from .base import Detection, make_settings
from .requires import opencv


@dataclass(frozen=True)
class CascadeSettings:
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24  # pixels, at the working resolution
    max_side: int = 1024  # larger images are searched downscaled: cascades are slow on big frames
    grow: float = 0.15  # widen each side by this share of the box
    grow_up: float = 0.35  # and the top by this share more, for hair

    def check(self, detector: str) -> None:
        check_settings(detector, self, {"scale_factor": (float, 1, 4), "min_neighbors": (int, 0, 100),
                                        "min_size": (int, 1, 4096), "max_side": (int, 32, 8192),
                                        "grow": (float, 0, 2), "grow_up": (float, 0, 2)})


def check_settings(detector: str, settings, rules: dict[str, tuple[type, float, float]]) -> None:
    """Each setting named in rules: (int or float, lowest, highest); scale_factor must be above its lowest."""
    # --detector-setting, a gallery or a bundle gives these: OpenCV would raise a traceback on a
    # bad one, or search forever (scale_factor 1 never grows the window).
    for name, (kind, low, high) in rules.items():
        v = getattr(settings, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
        above = name == "scale_factor"  # the window must grow between scales
        if not ok or not (low < v if above else low <= v) or not v <= high:
            span = f"above {low} and up to {high}" if above else f"from {low} to {high}"
            raise ModelError(f"detector {detector}: {name} {v!r} must be a{'n integer' if kind is int else ' number'} {span}")


def load_classifier(detector: str, path: str):
    """An OpenCV cascade from its file; one that OpenCV cannot read is one ModelError naming the file."""
    cv2 = opencv(detector)

    try:
        cascade = cv2.CascadeClassifier(path)
    except (cv2.error, SystemError):  # a file OpenCV cannot parse raises; one it cannot open loads empty
        cascade = None
    if cascade is None or cascade.empty():
        raise ModelError(f"detector {detector}: cascade file {path} could not be loaded by OpenCV "
                         "(not a cascade classifier XML file)")
    return cascade


class CascadeDetector:
    def __init__(self, name: str, cascade_path: str, settings: CascadeSettings) -> None:
        settings.check(name)
        self.name, self.settings = name, settings
        self._cascade = load_classifier(name, cascade_path)
        self.config = {"name": name, **asdict(settings)}

    def __call__(self, img: Image.Image) -> list[Detection]:
        import cv2

        s = self.settings
        scale = min(1.0, s.max_side / max(img.size))
        # max(1, ...): a strip 3000 x 1 px is 1024 x 0 at this scale, which PIL refuses
        small = img if scale == 1.0 else img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                                    Image.BILINEAR)
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY))
        found = self._cascade.detectMultiScale(gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors,
                                               minSize=(s.min_size, s.min_size))
        out = []
        for x, y, w, h in (found if len(found) else []):
            out.append(Detection(grown((x, y, w, h), scale, s, img.size)))
        return sorted(out, key=lambda d: -d.area)


def grown(box, scale: float, s: CascadeSettings, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A cascade box found at `scale`, in picture pixels, widened by s.grow (and upward by s.grow_up
    more, for the hair) within the picture."""
    x, y, w, h = (v / scale for v in box)
    x0, y0 = max(0, x - s.grow * w), max(0, y - (s.grow + s.grow_up) * h)
    x1, y1 = min(size[0], x + w * (1 + s.grow)), min(size[1], y + h * (1 + s.grow))
    return round(x0), round(y0), round(x1 - x0), round(y1 - y0)


def anime_face(config: dict) -> CascadeDetector:
    settings = {k: v for k, v in config.items() if k not in ("name", "cascade")}
    path = fetch(ANIMEFACE_CASCADE, config.get("cascade"))
    return CascadeDetector("anime-face", str(path), make_settings(CascadeSettings, settings, "anime-face", ("cascade",)))


def face(config: dict) -> CascadeDetector:
    cv2 = opencv("face")
    settings = {k: v for k, v in config.items() if k != "name"}
    settings.setdefault("grow_up", 0.1)
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    return CascadeDetector("face", path, make_settings(CascadeSettings, settings, "face"))
