"""A query with no colour to compare is scored without its colour histogram (numpy only: a bundle
uses it without torch).

A model with a colour histogram (embedder.embedding.colour) stores rows [e, sqrt(w) h] / sqrt(1 + w),
so two rows score (CNN cosine + w * histogram cosine) / (1 + w). A picture in shades of grey (a
manga panel) puts every pixel in the histogram's lowest-saturation bins; against references in
colour its histogram cosine measures how much grey or white each character wears, not who it is,
and pulls every score down (benchmarks/grey_queries.py). Such a row is told from its own
histogram part, so every path that searches with stored-form vectors (the CLI, the server, a
bundle, a video) treats it alike, and rescaled to score by the CNN cosine alone, as a hand query
without landmarks is (embedder.scoring.fusion.query_form).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# A row is colourless when at least this share of its pixels fell in the lowest saturation bin
# (saturation under 1 / bins[1]) or the lowest value bin: pictures in colour have their hair and eyes
# well above both, and a dark pixel's hue is noise (ink at (0, 0, 1) has saturation 1).
SHARE = 0.99


def colourless(rows: np.ndarray, split: int, bins: Sequence[int], share: float = SHARE) -> np.ndarray:
    """Which rows' histogram parts (columns split: onward, bins (hue, saturation, value)) are colourless."""
    nh, ns, nv = (int(b) for b in bins)
    h = np.asarray(rows, np.float64)[:, split:]
    if h.shape[1] != nh * ns * nv:
        raise ValueError(f"colour part of {h.shape[1]} columns: bins {list(bins)} make {nh * ns * nv}")
    mass = h ** 2  # the histogram is square-rooted: its squares are the pixels' shares
    m = mass.reshape(len(h), nh, ns, nv)
    low = m[:, :, 0, :].sum(axis=(1, 2)) + m[:, :, 1:, 0].sum(axis=(1, 2))
    total = mass.sum(axis=1)
    return (total > 0) & (low >= share * total)


def cnn_form(rows: np.ndarray, split: int, weight: float, which: Optional[np.ndarray] = None) -> np.ndarray:
    """Stored-form rows (all, or those `which` marks) rescaled to score by the CNN cosine alone against
    stored rows: the histogram part zeroed, the CNN part e / sqrt(1 + w) times (1 + w)."""
    out = np.array(rows, dtype=np.float32, copy=True)
    which = slice(None) if which is None else which
    out[which, split:] = 0.0
    out[which, :split] *= 1.0 + weight
    return out


def colourless_form(rows: np.ndarray, split: int, bins: Sequence[int], weight: float) -> np.ndarray:
    """Stored-form query rows with the colourless ones scoring by the CNN cosine alone."""
    return cnn_form(rows, split, weight, colourless(rows, split, bins))
