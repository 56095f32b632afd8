"""Cohort score normalisation: how much a query looks like *anyone* is taken off its scores.

A query that resembles every identity (a generic pose, a common hair colour) scores high against
whatever is enrolled, so an unknown character passes the threshold. A fixed cohort of other
identities measures that: the mean cosine of the query to its `top` most similar cohort vectors
(all of them when `top` is 0) is subtracted from every score of that query. Rankings within a
query do not change; only scores, and so what passes the threshold, do (on the 4 held-out anime
characters FAR@TAR95 fell by 11-13 points, benchmarks/cohort_norm.py).

The cohort is part of a model folder (COHORT_FILE, unit rows, the class means of the classes the
model was trained on) and is copied into each gallery and bundle made with it, whose thresholds
are in normalised units. No torch here: bundles use it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from ..atomic import write_atomic
from ..errors import ByakuganError

COHORT_FILE = "cohort.safetensors"


def cohort_settings(value: object) -> Optional[dict]:
    """Validates a config's "cohort" entry: {"top": int >= 0} or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or type(value.get("top")) is not int or value["top"] < 0:  # not true, not 1.0
        raise ByakuganError(f"cohort settings {value!r}: must be {{\"top\": N}} with N >= 0 (0: all cohort vectors)")
    return {"top": value["top"]}


def class_means(emb: np.ndarray, labels: list[str]) -> np.ndarray:
    """Unit mean vector of each label, in sorted label order."""
    labels_a = np.asarray(labels)
    means = np.stack([emb[labels_a == c].mean(0) for c in sorted(set(labels))]).astype(np.float32)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def offsets(emb: np.ndarray, cohort: np.ndarray, top: int) -> np.ndarray:
    """Per query row: the mean cosine to its `top` nearest cohort rows (all when top is 0)."""
    c = np.asarray(emb, np.float32) @ cohort.T
    if top and top < c.shape[1]:
        c = np.partition(c, c.shape[1] - top, axis=1)[:, -top:]
    return c.mean(1).astype(np.float32)


def save_cohort(folder: os.PathLike | str, cohort: np.ndarray) -> Path:
    return write_atomic(Path(folder) / COHORT_FILE, save_arrays({"cohort": np.ascontiguousarray(cohort, np.float32)}))


def load_cohort(folder: os.PathLike | str, dim: int, name: str = COHORT_FILE) -> np.ndarray:
    path = Path(folder) / name
    try:
        cohort = load_arrays(path.read_bytes())["cohort"].astype(np.float32)
    except FileNotFoundError:
        raise ByakuganError(f"{path}: missing (the settings ask for cohort normalisation)") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ByakuganError(f"{path}: not a readable cohort file ({exc})") from None
    if cohort.ndim != 2 or cohort.shape[1] != dim or len(cohort) == 0:
        raise ByakuganError(f"{path}: cohort of shape {tuple(cohort.shape)}, expected (N, {dim}) with N >= 1")
    return cohort
