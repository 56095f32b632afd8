"""`anime-face-verified`: candidate boxes from a permissive anime-face cascade (finer scales, one
neighbour, small pictures upscaled, the whole picture itself for tight crops); what the strict
cascade would keep stays, the rest is checked by a CNN verifier (verifier.py); overlaps merged.
Finds faces the strict cascade misses; slower than `anime-face`, which stays the fast option."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from PIL import Image

from .assets import ANIMEFACE_CASCADE, ANIMEFACE_VERIFIER, fetch
from .base import Detection, make_settings
from .cascade import check_settings, grown, load_classifier


@dataclass(frozen=True)
class CandidateSettings:
    scale_factor: float = 1.08
    min_neighbors: int = 1
    min_size: int = 20  # pixels, at the working resolution
    work_side: int = 800  # pictures are searched at this longer side (small ones upscaled)
    grow: float = 0.15  # the box is widened as `anime-face` widens it (the verifier learnt head crops)
    grow_up: float = 0.35


@dataclass(frozen=True)
class VerifiedSettings(CandidateSettings):
    min_probability: float = 0.5
    sure_neighbours: int = 5  # a box the strict cascade would keep (`anime-face`'s min_neighbors) needs no verifier
    overlap: float = 0.3  # boxes overlapping more than this (IoU) are one face


def load_cascade(path: Optional[str] = None):
    """The anime-face cascade (the packaged copy unless a path is given), loaded once per detector."""
    return load_classifier("anime-face-verified", str(fetch(ANIMEFACE_CASCADE, path)))


def candidates(img: Image.Image, cascade, s: CandidateSettings = CandidateSettings()) -> list[tuple[tuple, int]]:
    """Boxes (x, y, w, h, grown for the hair) the permissive cascade proposes, each with how many
    raw detections it groups (`anime-face` keeps those with 5 or more), plus the whole picture (0)."""
    import cv2

    scale = s.work_side / max(img.size)
    work = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(work.convert("RGB")), cv2.COLOR_RGB2GRAY))
    found, neighbours = cascade.detectMultiScale2(
        gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors, minSize=(s.min_size, s.min_size))
    out = [((0, 0, img.width, img.height), 0)]
    for box, n in zip(found if len(found) else [], neighbours if len(found) else []):
        out.append((grown(box, scale, s, img.size), int(n)))
    return out


def intersection(a: tuple, b: tuple) -> int:
    """The area two (x, y, w, h) boxes share."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def iou(a: tuple, b: tuple) -> float:
    inter = intersection(a, b)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def inside(a: tuple, b: tuple) -> float:
    """The share of box a's area that lies inside box b."""
    return intersection(a, b) / float(max(1, a[2] * a[3]))


class VerifiedFaceDetector:
    name = "anime-face-verified"

    def __init__(self, settings: VerifiedSettings, cascade: Optional[str] = None, verifier: Optional[str] = None) -> None:
        from .verifier import FaceVerifier

        check_settings(self.name, settings, {"scale_factor": (float, 1, 4), "min_neighbors": (int, 0, 100),
                                             "min_size": (int, 1, 4096), "work_side": (int, 32, 8192),
                                             "grow": (float, 0, 2), "grow_up": (float, 0, 2),
                                             "min_probability": (float, 0, 1), "sure_neighbours": (int, 0, 100),
                                             "overlap": (float, 0, 1)})
        self.settings = settings
        self._cascade = load_cascade(cascade)
        self.verifier = FaceVerifier(fetch(ANIMEFACE_VERIFIER, verifier))
        self.config = {"name": self.name, **asdict(settings)}
        if cascade:
            self.config["cascade"] = cascade
        if verifier:
            self.config["verifier"] = verifier

    def __call__(self, img: Image.Image) -> list[Detection]:
        s = self.settings
        found = candidates(img, self._cascade, s)
        boxes = [b for b, _ in found]
        prob = self.verifier([img.crop((x, y, x + w, y + h)) for x, y, w, h in boxes])
        # What the strict cascade would keep stays (nearly what `anime-face` finds); the verifier
        # decides on the rest, the extra candidates of the permissive pass and the whole picture.
        sure = np.asarray([n >= s.sure_neighbours for _, n in found])
        kept: list[tuple[float, tuple]] = []
        for i in np.lexsort((-prob, ~sure)):
            if i == 0 or (not sure[i] and prob[i] < s.min_probability):
                continue
            if all(iou(boxes[i], b) <= s.overlap for _, b in kept):
                kept.append((float(prob[i]), boxes[i]))
        if not kept and prob[0] >= s.min_probability:  # no face in it: the picture may be one (a tight crop)
            kept.append((float(prob[0]), boxes[0]))
        return sorted((Detection(b, score=p) for p, b in kept), key=lambda d: -d.area)


def anime_face_verified(config: dict) -> VerifiedFaceDetector:
    settings = {k: v for k, v in config.items() if k not in ("name", "cascade", "verifier")}
    return VerifiedFaceDetector(make_settings(VerifiedSettings, settings, "anime-face-verified", ("cascade", "verifier")),
                                config.get("cascade"), config.get("verifier"))
