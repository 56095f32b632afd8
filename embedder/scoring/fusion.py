"""Joining a CNN embedding with a landmark embedding (numpy only: a bundle uses it without torch).

A fused vector is [sqrt(1 - w) * cnn, sqrt(w) * landmarks]; both parts are unit vectors, so two
fused vectors score (1 - w) * cnn cosine + w * landmark cosine. A region without landmarks gets a
zero landmark part. As a query, such a row is divided by (1 - w), so it scores by the CNN cosine
alone against every reference instead of being pulled down by the part it lacks.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..detection.hands import LANDMARK_DIM


def fuse(cnn: np.ndarray, landmarks: np.ndarray, weight: float) -> np.ndarray:
    """(N, C) unit CNN rows and (N, L) unit-or-zero landmark rows -> (N, C + L) fused rows."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"landmark weight {weight!r}: must be in [0, 1)")
    return np.ascontiguousarray(
        np.concatenate([np.sqrt(1.0 - weight) * cnn, np.sqrt(weight) * landmarks], axis=1), dtype=np.float32)


def stack_landmarks(marks: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """(N, LANDMARK_DIM) float32 rows from per-region landmark encodings; None (no hands) -> zeros."""
    out = np.zeros((len(marks), LANDMARK_DIM), np.float32)
    for i, m in enumerate(marks):
        if m is not None:
            out[i] = m
    return out


def has_landmarks(emb: np.ndarray, split: int) -> np.ndarray:
    """Which fused rows carry a landmark part (split = the CNN dimension)."""
    return np.abs(emb[:, split:]).sum(axis=1) > 0


def query_form(emb: np.ndarray, split: int, weight: float) -> np.ndarray:
    """Fused rows ready to search with: rows without landmarks rescaled to score by the CNN part alone."""
    out = np.array(emb, dtype=np.float32, copy=True)
    out[~has_landmarks(out, split)] /= 1.0 - weight
    return out

