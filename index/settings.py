"""What a gallery records of the pipeline that fills it (model, detector, landmarks, cohort)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from byakugan.embedder.scoring import check_scoring

from .errors import GalleryError
from .ranking import Reference
from .sequences import check_sequences


@dataclass(frozen=True)
class GallerySettings:
    """What a new gallery records of the pipeline that fills it, so every query is embedded,
    cropped and scored as its references were (see Pipeline.settings)."""

    model: dict  # {"name", "fingerprint", "dim"}
    detector: dict  # the detector's config
    threshold: float
    scoring: Optional[str] = None  # the model's advice; "nearest" when None
    landmarks: Optional[dict] = None  # {"name", "source", "fingerprint", "dim", "weight"} when fused
    cohort_top: Optional[int] = None  # cohort normalisation (byakugan.embedder.scoring.cohort) ...
    cohort: Optional[np.ndarray] = None  # ... with these unit rows

    @property
    def dim(self) -> int:
        return int(self.model["dim"]) + (int(self.landmarks["dim"]) if self.landmarks else 0)


def digest(cohort: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cohort, np.float32).tobytes()).hexdigest()


def check_meta(meta: dict) -> None:
    """Raises KeyError, TypeError or ValueError when gallery.json is not of the shape a save writes."""
    if not isinstance(meta["model"], dict) or not isinstance(meta["model"]["dim"], int):
        raise ValueError("model must be {name, fingerprint, dim}")
    for key in ("name", "fingerprint"):
        if not isinstance(meta["model"][key], str):
            raise ValueError(f"model {key} must be text")
    float(meta["threshold"])
    if not isinstance(meta["next_id"], int) or not isinstance(meta["references"], list):
        raise ValueError("next_id must be a number and references a list")
    for r in meta["references"]:
        if isinstance(r, Reference):
            continue  # typed by its reader (index.db has SQLite check the columns' types)
        if not isinstance(r, dict) or set(r) != {"id", "label", "source", "added"} or not isinstance(r["id"], int) \
                or not all(isinstance(r[k], str) for k in ("label", "source", "added")):
            raise ValueError(f"reference {r!r} must be {{id, label, source, added}}")
    if not isinstance(meta.get("detector", {}), dict) or not isinstance(meta.get("landmarks", {}), dict) \
            or not isinstance(meta.get("cohort", {}), dict):
        raise ValueError("detector, landmarks and cohort must be objects")
    check_sequences(meta.get("sequences"))


def set_auto(meta: dict, value: bool) -> None:
    """Threshold mode automatic (or fixed). Back to automatic, the threshold in force until the
    references give one is the model's again, not the last one set by hand (galleries made before
    it was recorded keep the last one)."""
    meta["threshold_mode"] = "auto" if value else "fixed"
    if value and isinstance(meta.get("model_threshold"), (int, float)):
        meta["threshold"] = float(meta["model_threshold"])


def set_threshold(meta: dict, value) -> None:
    """A threshold fixed by hand: a cosine similarity, so between -1 and 1."""
    try:
        ok = -1.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise GalleryError(f"threshold {value!r}: must be a cosine similarity between -1 and 1")
    meta["threshold"], meta["threshold_mode"] = float(value), "fixed"


def set_scoring(meta: dict, value: str) -> None:
    try:
        meta["scoring"] = check_scoring(value)
    except ValueError as exc:
        raise GalleryError(str(exc)) from None
