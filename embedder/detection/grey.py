"""Is a picture in shades of grey (a manga page, a scan, a grey screenshot)? `anime-face-net` sends
such pictures to heads trained on grey pictures: its colour heads, trained on faces nearly all in
colour, found and passed far fewer grey faces (models/anime-face-net/MODEL_CARD.md)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Judged on a thumbnail, where JPEG's colour noise is averaged away: a picture is grey when at most
# 1% of it has a colour (the largest less the smallest channel) above CHROMA of 255. A red stamp or
# a coloured caption over more than that makes it a picture in colour.
SIDE, CHROMA, SHARE = 64, 16, 0.01


def is_grey(img: Image.Image) -> bool:
    if img.mode in ("L", "LA", "I", "I;16", "F", "1"):
        return True
    # Reduced by whole blocks first: a full-size copy of a large photograph costs more than the test.
    factor = max(1, min(img.size) // (2 * SIDE))
    small = (img.reduce(factor) if factor > 1 and img.mode in ("RGB", "RGBA") else img).convert("RGB")
    small.thumbnail((SIDE, SIDE), Image.BILINEAR)
    rgb = np.asarray(small, np.int16)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return float((chroma > CHROMA).mean()) <= SHARE
