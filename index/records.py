"""What GalleryService takes and gives back: one upload's crop, and a removal that can be undone."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from PIL import Image


class Crop(NamedTuple):
    """What enrolment takes from one uploaded image: its first detection."""

    name: str
    image: Image.Image
    landmarks: Optional[np.ndarray] = None  # hand landmarks, when the detector found them
    found: bool = True  # False: nothing detected, the whole image is taken


class Removed(NamedTuple):
    """What a removal took out of the gallery: enough to put it back (GalleryService.restore)."""

    label: str
    vectors: np.ndarray
    sources: list[str]
    thumbnails: list[Optional[bytes]]
    token: str = ""  # which removal this is: an undo of it is done once (GalleryService.restore)
    after: Optional[tuple] = None  # the gallery's version its save left (GalleryService.version), read under its lock
