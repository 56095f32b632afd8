"""Scores adapted to a gallery's own classes: a ridge regression from the enrolled references to their
class, fitted in closed form on the gallery (no model is trained), whose output is added to the usual
class score.

The embedding was trained to tell its training classes apart; a gallery's classes differ from them
in ways the embedding only partly follows (a source's drawing style, its camera). A linear map
fitted on the references finds the directions that separate *these* classes. With X the reference
vectors (rows), s_c the sum of class c's, A = XᵀX + ridge·I:

    score_c(q) = base_c(q) + weight · qᵀ A⁻¹ s_c

the ridge solution for one-hot targets, scored on q. A and the sums are what a gallery can keep up to
date by edits (a sum of outer products and per-class sums), so the term costs one d×d solve per edit
and one d-vector product per class and query. Measured by benchmarks/gallery_adapt.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Adaptation:
    weight: float  # how much of the ridge output is added to the class score
    ridge: float = 0.1  # the regularisation of XᵀX (reference vectors are unit length)

    @classmethod
    def from_dict(cls, spec: object) -> "Adaptation":
        """From a gallery's, bundle's or model's {"weight", "ridge"}; ValueError naming what is wrong."""
        if not isinstance(spec, dict) or set(spec) != {"weight", "ridge"}:
            raise ValueError(f"adapt {spec!r}: must be {{\"weight\": W, \"ridge\": R}}")
        for key, top in (("weight", 10.0), ("ridge", 100.0)):
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= top:
                raise ValueError(f"adapt {key} {v!r}: must be a number above 0, at most {top:g}")
        return cls(float(spec["weight"]), float(spec["ridge"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def directions(self, gram: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """[classes, dim]: weight · A⁻¹ s_c for each class's sum s_c (rows of `sums`); a query's term
        for class c is its dot product with row c."""
        A = np.asarray(gram, np.float64) + self.ridge * np.eye(len(gram))
        return (self.weight * np.linalg.solve(A, np.asarray(sums, np.float64).T).T).astype(np.float32)

    def fit(self, refs: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
        """directions() of references `refs` whose classes are `groups` (row indices of each class)."""
        X = np.asarray(refs, np.float64)
        return self.directions(X.T @ X, np.stack([X[g].sum(0) for g in groups]))

    def terms(self, queries: np.ndarray, refs: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
        """[queries, classes]: what adaptation adds to each class score of each query."""
        return np.asarray(queries, np.float32) @ self.fit(refs, groups).T


def left_out(gram: np.ndarray, sums: np.ndarray, stored: np.ndarray, queries: np.ndarray, own: np.ndarray,
             a: Adaptation) -> np.ndarray:
    """Each reference's term for its own class with that reference left out of the fit, as a query of
    the class never enrolled would get it (a gallery's own threshold is set from such scores):
    weight · qᵀ(A − xxᵀ)⁻¹(s_c − x) by the Sherman-Morrison formula, from A⁻¹ once. stored: the
    references as enrolled (x), queries: the same in query form (q), own: each one's row of `sums`."""
    B = np.linalg.inv(np.asarray(gram, np.float64) + a.ridge * np.eye(len(gram)))
    x, q = np.asarray(stored, np.float64), np.asarray(queries, np.float64)
    s = np.asarray(sums, np.float64)[own] - x
    Bx, Bs = x @ B, s @ B  # B is symmetric
    return (a.weight * ((q * Bs).sum(1) + (q * Bx).sum(1) * (x * Bs).sum(1) / (1 - (x * Bx).sum(1)))).astype(np.float32)


def loaded(spec: Optional[dict]) -> Optional[Adaptation]:
    return None if spec is None else Adaptation.from_dict(spec)


def advised(model, landmarks=None) -> Optional[Adaptation]:
    """Whether a new gallery of this model scores adapted to its classes, as the model's config advises
    ("adapt"); for one fusing hand landmarks, as the landmark model's does."""
    advice = getattr(landmarks, "adapt", None) if landmarks is not None else getattr(model, "config", {}).get("adapt")
    return None if advice is None else Adaptation.from_dict(advice)
