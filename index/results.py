"""The typed results every interface gets (a detection's region, a reference, a hit, a search's result, a match, the
answer for one detection) and their JSON forms: what the CLI, the server and a bundle print."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
from PIL import Image

from byakugan.embedder.scoring.calibration import Calibration

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Region:
    """One detection of an image, cropped, with its hand landmarks when the detector gives them."""

    box: tuple[int, int, int, int]
    crop: Image.Image
    landmarks: Optional[np.ndarray] = None
    found: bool = True  # False: the whole image, taken because nothing was detected
    whole: bool = False  # found, and the whole image: the detector took it as the face (it fills the picture)


@dataclass(frozen=True)
class Reference:
    id: int
    label: str
    source: str
    added: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Hit:
    id: int
    label: str
    score: float
    source: str


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]  # top-k references, best first
    labels: list[tuple[str, float]]  # top-k labels by their best reference score, best first
    offset: float = 0.0  # taken off every score by cohort normalisation
    lift: float = 0.0  # added to the best label's score by adaptation: its score + offset - lift is its cosine

    def to_dict(self, calibration: Optional[Calibration] = None) -> dict:
        labels = [{"label": lab, "score": s} for lab, s in self.labels]
        if calibration is not None:
            for entry in labels:
                entry["confidence"] = round(calibration.confidence(entry["score"]), 4)
        return {"hits": [asdict(h) for h in self.hits], "labels": labels}


@dataclass(frozen=True)
class Match:
    label: str  # UNKNOWN when the best score is below the threshold, or the crop is blank (blank_answer)
    score: float
    nearest: str  # best label even when below the threshold
    threshold: float
    cosine: Optional[float] = None  # the nearest label's cosine: its score before cohort normalisation and adaptation
    confidence: Optional[float] = None  # 0-1, the score on the gallery's calibrated scale
    threshold_confidence: Optional[float] = None  # the threshold on that scale

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN

    def to_dict(self) -> dict:
        return dict(asdict(self), known=self.known)


@dataclass(frozen=True)
class Recognition:
    """The answer for one detection in an image: where it is, and what it matched."""

    box: tuple[int, int, int, int]  # x, y, width, height in image pixels
    match: Match
    result: SearchResult
    landmarks: Optional[bool] = None  # fused hand gallery: whether this detection had landmarks
    found: bool = True  # False: nothing was detected, so the whole image was searched
    calibration: Optional[Calibration] = None  # the gallery's, for the labels' confidences
    whole: bool = False  # found, and the whole image: the detector took it as the face (it fills the picture)
    blank: Optional[str] = None  # why the crop holds nothing to tell a class by: answered unknown (blank_answer)

    @property
    def hits(self) -> list[Hit]:
        return self.result.hits

    @property
    def labels(self) -> list[tuple[str, float]]:
        return self.result.labels

    def to_dict(self) -> dict:
        """The JSON form the CLI, the server and a bundle give: box, found, match, hits, labels[, landmarks]."""
        match = self.match.to_dict()
        if self.calibration is not None:  # False: the confidences are the uncalibrated curve, 50% at the threshold
            match["calibrated"] = self.calibration.fitted
        out = {"box": list(self.box), "found": self.found, **({"whole": True} if self.whole else {}),
               **({"blank": self.blank} if self.blank else {}), "match": match, **self.result.to_dict(self.calibration)}
        if self.landmarks is not None:
            out["landmarks"] = self.landmarks
        return out


def blank_answer(match: Match, why: Optional[str]) -> Match:
    """A blank crop's match (one flat colour, a few pixels: why): unknown whatever it scored, since
    any label it reaches means nothing; the nearest label and the scores are kept."""
    return match if why is None else replace(match, label=UNKNOWN)
