"""Detectors, chosen by name: find the faces or hands to crop before embedding.

- none:       the whole image.
- anime-face: OpenCV LBP cascade `lbpcascade_animeface` (fetched once, see embedder.assets),
              box widened upward to take in the hair, as the projects before byakugan did.
- face:       OpenCV's frontal-face Haar cascade shipped in cv2.data (human faces).
- hand:       MediaPipe Hands, one padded box around both hands, with their landmarks (embedder.hands).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from .assets import ANIMEFACE_CASCADE, fetch
from .errors import ModelError


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, width, height in image pixels
    score: float = 1.0
    landmarks: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # hand detector only

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def crop(self, img: Image.Image) -> Image.Image:
        x, y, w, h = self.box
        return img.crop((x, y, x + w, y + h))


class NoDetector:
    name = "none"

    def __init__(self) -> None:
        self.config = {"name": self.name}

    def __call__(self, img: Image.Image) -> list[Detection]:
        return [Detection((0, 0, img.width, img.height))]


@dataclass(frozen=True)
class CascadeSettings:
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24  # pixels, at the working resolution
    max_side: int = 1024  # larger images are searched downscaled: cascades are slow on big frames
    grow: float = 0.15  # widen each side by this share of the box
    grow_up: float = 0.35  # and the top by this share more, for hair


class CascadeDetector:
    def __init__(self, name: str, cascade_path: str, settings: CascadeSettings) -> None:
        import cv2

        self.name, self.settings = name, settings
        self._cascade = cv2.CascadeClassifier(cascade_path)
        if self._cascade.empty():
            raise ModelError(f"detector {name}: cascade file {cascade_path} could not be loaded")
        self.config = {"name": name, **asdict(settings)}

    def __call__(self, img: Image.Image) -> list[Detection]:
        import cv2

        s = self.settings
        scale = min(1.0, s.max_side / max(img.size))
        small = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY))
        found = self._cascade.detectMultiScale(gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors,
                                               minSize=(s.min_size, s.min_size))
        out = []
        for x, y, w, h in (found if len(found) else []):
            x, y, w, h = (v / scale for v in (x, y, w, h))
            x0, y0 = max(0, x - s.grow * w), max(0, y - (s.grow + s.grow_up) * h)
            x1, y1 = min(img.width, x + w * (1 + s.grow)), min(img.height, y + h * (1 + s.grow))
            out.append(Detection((round(x0), round(y0), round(x1 - x0), round(y1 - y0))))
        return sorted(out, key=lambda d: -d.area)


def _anime_face(config: dict) -> CascadeDetector:
    settings = {k: v for k, v in config.items() if k not in ("name", "cascade")}
    path = fetch(ANIMEFACE_CASCADE, config.get("cascade"))
    return CascadeDetector("anime-face", str(path), CascadeSettings(**settings))


def _face(config: dict) -> CascadeDetector:
    import cv2

    settings = {k: v for k, v in config.items() if k != "name"}
    settings.setdefault("grow_up", 0.1)
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    return CascadeDetector("face", path, CascadeSettings(**settings))


def _hand(config: dict):
    from .hands import create_hand_detector

    return create_hand_detector(config)


_REGISTRY = {"none": lambda config: NoDetector(), "anime-face": _anime_face, "face": _face, "hand": _hand}


def list_detectors() -> list[str]:
    return list(_REGISTRY)


def create_detector(name_or_config: str | dict | None = "none"):
    """A detector from its name, or from the config dict a gallery or bundle stored."""
    config = {"name": name_or_config or "none"} if not isinstance(name_or_config, dict) else dict(name_or_config)
    name = config.get("name", "none")
    if name not in _REGISTRY:
        raise ModelError(f"unknown detector {name!r}; valid: {', '.join(list_detectors())}")
    try:
        return _REGISTRY[name](config)
    except TypeError as exc:
        raise ModelError(f"detector {name}: bad settings {config} ({exc})") from None


def regions(detector, img: Image.Image, fallback: Optional[str] = None) -> list[Detection]:
    """The detections, or the whole image when none are found and fallback == "whole"."""
    found = detector(img)
    if not found and fallback == "whole":
        return [Detection((0, 0, img.width, img.height), score=0.0)]
    return found


def largest_crops(detector, paths: list, landmark_dim: int = 0) -> tuple[list, np.ndarray, float, float]:
    """For evaluation: each image's largest detection, or the whole image where there is none.

    Returns (crops, landmark rows (zeros where none), share of images with a detection, detector
    milliseconds per image).
    """
    import time

    from tqdm import tqdm

    from .images import load_image

    crops, marks, found, spent = [], np.zeros((len(paths), landmark_dim), np.float32), 0, 0.0
    for i, path in enumerate(tqdm(paths, desc=f"detecting ({detector.name})", unit="img", leave=False)):
        img = load_image(path)
        start = time.perf_counter()
        dets = detector(img)
        spent += time.perf_counter() - start
        found += bool(dets)
        crops.append(dets[0].crop(img) if dets else img)
        if dets and dets[0].landmarks is not None and landmark_dim:
            marks[i] = dets[0].landmarks
    n = max(1, len(paths))
    return crops, marks, round(found / n, 4), round(spent / n * 1000, 1)
