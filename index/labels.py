"""What a label may be: the one check every way of enrolling or renaming goes through."""

from __future__ import annotations

import unicodedata

from .errors import GalleryError
from .ranking import UNKNOWN

MAX_LABEL_LEN = 100


def check_label(label: object) -> str:
    if not isinstance(label, str) or not label.strip():
        raise GalleryError(f"label {label!r}: must be a non-empty string")
    label = label.strip()
    if len(label) > MAX_LABEL_LEN:
        raise GalleryError(f"label {label[:20]!r}...: longer than {MAX_LABEL_LEN} characters")
    if any(unicodedata.category(c) == "Cc" for c in label):
        raise GalleryError(f"label {label!r}: must not contain control characters")
    if label.lower() == UNKNOWN:
        raise GalleryError(f"label {label!r}: reserved for queries below the threshold; choose another name")
    return label
