"""What a gallery records of the pipeline that fills it (model, detector, landmarks, cohort)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np


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
