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

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Adaptation:
    weight: float  # how much of the ridge output is added to the class score
    ridge: float = 0.1  # the regularisation of XᵀX (reference vectors are unit length)

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
