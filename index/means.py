"""Class means kept up to date by edits: each label's sum of reference vectors and its count change
by what an enrolment adds or a removal takes, so ranking by class mean never goes over every
reference again after an edit (that took 2.2 s at 100k references). For a gallery whose scores are
adapted to its classes (embedder.scoring.adapt) the sum of the references' outer products too."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from byakugan.embedder.scoring.adapt import Adaptation, cohort_outer

from .ranking import Reference
from .vectors import VectorStore


class ClassMeans:
    def __init__(self, dim: int, gram: bool = False) -> None:
        self.dim = dim
        self._sum: dict[str, np.ndarray] = {}  # float64: sums that go up and down do not drift
        self._count: dict[str, int] = {}
        self._matrix: Optional[tuple[list[str], np.ndarray]] = None
        self.gram: Optional[np.ndarray] = np.zeros((dim, dim)) if gram else None  # XᵀX of every reference
        # Each made for (the setting and) the cohort array it holds, compared by identity: a gallery's cohort
        # is one array for its life, and holding it keeps its id from being reused by another.
        self._directions: Optional[tuple[Adaptation, object, list[str], np.ndarray]] = None  # adapt, cohort, labels, D
        self._outer: Optional[tuple[np.ndarray, np.ndarray]] = None  # cohort, its mean outer product: edits keep it

    @classmethod
    def of(cls, store: VectorStore, refs: Mapping[int, Reference], gram: bool = False) -> "ClassMeans":
        """Counted from the store, read once, in large pieces: a read per class was one Milvus request per
        class, and a d x d product per class took 20 times as long as one per piece (300 classes)."""
        means, ids = cls(store.dim, gram), list(refs)
        for at in range(0, len(ids), 4096):
            piece = ids[at:at + 4096]
            v = np.asarray(store.get(piece), np.float64)
            names, which = np.unique(np.array([refs[i].label for i in piece], dtype=object), return_inverse=True)
            totals = np.zeros((len(names), store.dim))
            np.add.at(totals, which, v)
            for label, total, n in zip(names.tolist(), totals, np.bincount(which, minlength=len(names)).tolist()):
                means._sum[label] = means._sum.get(label, 0.0) + total
                means._count[label] = means._count.get(label, 0) + n
            if means.gram is not None:
                means.gram += v.T @ v
        return means

    def add(self, label: str, vectors: np.ndarray) -> None:
        v = np.asarray(vectors, np.float64)
        self._sum[label] = self._sum.get(label, np.zeros(self.dim)) + v.sum(axis=0)
        self._count[label] = self._count.get(label, 0) + len(vectors)
        if self.gram is not None:
            self.gram += v.T @ v
        self._matrix = self._directions = None

    def remove(self, labels: Sequence[str], vectors: np.ndarray) -> None:
        """Take out rows of `vectors`, each of the label at the same place in `labels`."""
        vectors = np.asarray(vectors, np.float64)
        for label, v in zip(labels, vectors):
            self._count[label] -= 1
            if self._count[label] == 0:
                del self._count[label], self._sum[label]
            else:
                self._sum[label] = self._sum[label] - v
        if self.gram is not None and len(vectors):
            self.gram -= vectors.T @ vectors
        self._matrix = self._directions = None

    def rename(self, old: str, new: str) -> None:
        self._sum[new], self._count[new] = self._sum.pop(old), self._count.pop(old)
        self._matrix = self._directions = None

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """Each label (sorted) and the unit mean of its references, as ranking.search takes them."""
        if self._matrix is None:
            labels = sorted(self._sum)
            P = np.stack([self._sum[lab] / self._count[lab] for lab in labels]).astype(np.float32) if labels \
                else np.zeros((0, self.dim), np.float32)
            P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
            self._matrix = (labels, np.ascontiguousarray(P))
        return self._matrix

    def sums(self) -> tuple[list[str], np.ndarray]:
        """Each label (sorted) and the sum of its references (float64)."""
        labels = sorted(self._sum)
        return labels, np.stack([self._sum[lab] for lab in labels]) if labels else np.zeros((0, self.dim))

    def directions(self, adapt: Adaptation, cohort: Optional[np.ndarray] = None) -> tuple[list[str], np.ndarray]:
        """Each label (sorted, as matrix()) and its adapted direction (embedder.scoring.adapt), with the
        gallery's cohort in the fit where the setting asks: one d × d solve after each edit, none per search."""
        if self.gram is None:
            raise ValueError("class means kept without XᵀX cannot adapt scores")
        made = self._directions
        if made is None or made[0] != adapt or made[1] is not cohort:
            labels, S = self.sums()
            D = adapt.directions(self.system(adapt, cohort), S) if labels else np.zeros((0, self.dim), np.float32)
            self._directions = made = (adapt, cohort, labels, np.ascontiguousarray(D))
        return made[2], made[3]

    def system(self, adapt: Adaptation, cohort: Optional[np.ndarray] = None) -> np.ndarray:
        """A of the adaptation (Adaptation.system) on these references, the cohort's part computed once
        for the cohort array, not after each edit."""
        if self.gram is None:
            raise ValueError("class means kept without XᵀX cannot adapt scores")
        if not adapt.cohort or cohort is None or not len(cohort):
            return self.gram
        if self._outer is None or self._outer[0] is not cohort:
            self._outer = (cohort, cohort_outer(cohort))
        return adapt.system(self.gram, cohort, self._outer[1])


def kept(means: Optional[ClassMeans], store: VectorStore, refs: Mapping[int, Reference], mean: bool,
         adapted: bool) -> Optional[ClassMeans]:
    """The class sums a gallery's scoring needs (XᵀX too when adapted), made on first need, then kept by its
    edits; None when it needs none (a gallery ranked by nearest reference, not adapted)."""
    if not (mean or adapted):
        return None
    return ClassMeans.of(store, refs, gram=adapted) if means is None or adapted and means.gram is None else means
