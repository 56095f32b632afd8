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

Fitted on the enrolled classes alone, the term also lifts a stranger who looks like any of them. A
model's cohort (embedder.scoring.cohort: the identities it trained on, which galleries of it hold)
can join the fit as examples of no enrolled class, with target 0: A = XᵀX + cohort·CᵀC/|C| + ridge·I
(the cohort's mean outer product, so the setting means the same for a cohort of any size). Measured
by benchmarks/adapt_cohort.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import ModelError


@dataclass(frozen=True)
class Adaptation:
    weight: float  # how much of the ridge output is added to the class score
    ridge: float = 0.1  # the regularisation of XᵀX (reference vectors are unit length)
    cohort: float = 0.0  # the weight of the cohort's mean outer product in A (0: the cohort is not in the fit)

    @classmethod
    def from_dict(cls, spec: object) -> "Adaptation":
        """From a gallery's, bundle's or model's {"weight", "ridge"}; ValueError naming what is wrong. A
        weight past 2 would let the adaptation outweigh the cosine; a ridge under 0.001 leaves
        XᵀX nearly singular where references are fewer than dimensions (always, few-shot)."""
        if not isinstance(spec, dict) or not {"weight", "ridge"} <= set(spec) <= {"weight", "ridge", "cohort"}:
            raise ValueError(f"adapt {spec!r}: must be {{\"weight\": W, \"ridge\": R}}, and \"cohort\": C if any")
        # A weight under 0.01 barely moves a score (its term is about the weight at most): adapted in name only.
        for key, low, top in (("weight", 0.01, 2.0), ("ridge", 0.001, 100.0), ("cohort", 0.0, 1000.0)):
            if key not in spec:
                continue
            v = spec[key]  # compared before any float(): 10**400 is an int no float holds
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= top:
                raise ValueError(f"adapt {key} {v!r}: must be a number at least {low:g}, at most {top:g}")
        return cls(float(spec["weight"]), float(spec["ridge"]), float(spec.get("cohort", 0.0)))

    def to_dict(self) -> dict:  # {"weight", "ridge"} as before the cohort could join, and "cohort" when it does
        return {k: v for k, v in asdict(self).items() if k != "cohort" or v}

    def __str__(self) -> str:  # for people: "weight 0.3, ridge 0.03", and the cohort's share when it has one
        return f"weight {self.weight:g}, ridge {self.ridge:g}" + (f", cohort {self.cohort:g}" if self.cohort else "")

    def system(self, gram: np.ndarray, cohort: Optional[np.ndarray] = None,
               outer: Optional[np.ndarray] = None) -> np.ndarray:
        """XᵀX (gram) with the cohort's share of A added, when this setting and the gallery have one;
        outer: the cohort's cohort_outer(), where the caller keeps it (else computed here)."""
        if not self.cohort or cohort is None or not len(cohort):
            return gram
        return np.asarray(gram, np.float64) + self.cohort * (cohort_outer(cohort) if outer is None else outer)

    def directions(self, gram: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """[classes, dim]: weight · A⁻¹ s_c for each class's sum s_c (rows of `sums`); a query's term
        for class c is its dot product with row c."""
        A = np.asarray(gram, np.float64) + self.ridge * np.eye(len(gram))
        return (self.weight * np.linalg.solve(A, np.asarray(sums, np.float64).T).T).astype(np.float32)

    def fit(self, refs: np.ndarray, groups: Sequence[np.ndarray], cohort: Optional[np.ndarray] = None,
            outer: Optional[np.ndarray] = None) -> np.ndarray:
        """directions() of references `refs` whose classes are `groups` (row indices of each class);
        outer as system()'s."""
        X = np.asarray(refs, np.float64)
        return self.directions(self.system(X.T @ X, cohort, outer), np.stack([X[g].sum(0) for g in groups]))

    def terms(self, queries: np.ndarray, refs: np.ndarray, groups: Sequence[np.ndarray],
              cohort: Optional[np.ndarray] = None) -> np.ndarray:
        """[queries, classes]: what adaptation adds to each class score of each query."""
        return np.asarray(queries, np.float32) @ self.fit(refs, groups, cohort).T


def cohort_outer(cohort: np.ndarray) -> np.ndarray:
    """The cohort's mean outer product CᵀC/|C| (float64, d × d): as costly as a solve for a large cohort,
    and the same for a gallery's life, so a gallery keeps it (index.means)."""
    C = np.asarray(cohort, np.float64)
    return (C.T @ C) / max(len(C), 1)


def left_out(gram: np.ndarray, sums: np.ndarray, stored: np.ndarray, queries: np.ndarray, own: np.ndarray,
             a: Adaptation, copies: Optional[Sequence[np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """For each reference, [references, classes] twice: its term for every class as the gallery's fit
    gives it, and as a fit without it gives it, what a picture of its class never enrolled would get
    (a gallery's own threshold is set from such scores). stored: the references as enrolled (x),
    queries: the same in query form (q), own: each one's row of `sums`, copies: for each, the vectors
    of its near-copies, left out with it. By the Sherman-Morrison formula (Woodbury's where there are
    copies), from A⁻¹ once: weight · qᵀ(A − UᵀU)⁻¹(s_c − what U took from c)."""
    B = np.linalg.inv(np.asarray(gram, np.float64) + a.ridge * np.eye(len(gram)))
    X, Q, S = (np.asarray(v, np.float64) for v in (stored, queries, sums))
    QB, XB = Q @ B, X @ B  # B is symmetric
    inside = a.weight * QB @ S.T
    r = QB + XB * ((XB * Q).sum(1) / (1 - (XB * X).sum(1)))[:, None]  # (A − xxᵀ)⁻¹q
    taken = X.copy()
    for i, more in enumerate(copies or ()):
        if len(more):
            U = np.vstack([X[i], more])
            G = U @ B
            r[i] = QB[i] + G.T @ np.linalg.solve(np.eye(len(U)) - G @ U.T, G @ Q[i])
            taken[i] = U.sum(0)
    out = r @ S.T
    out[np.arange(len(X)), own] -= (r * taken).sum(1)
    return inside.astype(np.float32), (a.weight * out).astype(np.float32)


def advised(model, landmarks=None) -> Optional[Adaptation]:
    """Whether a new gallery of this model scores adapted to its classes, as the model's config advises
    ("adapt"); for one fusing hand landmarks, as the landmark model's does."""
    which = landmarks if landmarks is not None else model
    advice = getattr(landmarks, "adapt", None) if landmarks is not None else getattr(model, "config", {}).get("adapt")
    try:
        return None if advice is None else Adaptation.from_dict(advice)
    except ValueError as exc:
        raise ModelError(f"model {getattr(which, 'name', '?')}: config.json: {exc}") from None


def completed(given: dict, advice: Optional[Adaptation]) -> Adaptation:
    """An adaptation from the parts a user gave (`--adapt 0.5` gives the weight alone), the rest as
    the model advises; for a model that advises none, ridge 0.03 and no cohort (the hand advice)."""
    return Adaptation.from_dict((advice.to_dict() if advice is not None else {"ridge": 0.03}) | given)


def advised_threshold(model, landmarks=None) -> Optional[float]:
    """The default threshold for a new gallery that takes the advice: its config's
    "adapted_threshold", set on scores adapted as advised (which sit higher than the cosines its
    "threshold" was set on: for anime, about 0.3 against 0.0); None where it gives none."""
    which = landmarks if landmarks is not None else model
    t = getattr(landmarks, "adapted_threshold", None) if landmarks is not None \
        else (getattr(model, "config", None) or {}).get("adapted_threshold")
    advice = advised(model, landmarks)
    if t is None or advice is None:
        return None
    wrong = threshold_fault(t, advice.weight)
    if wrong:
        raise ModelError(f"model {getattr(which, 'name', '?')}: config.json: {wrong}")
    return float(t)


def threshold_fault(t: object, weight: float) -> Optional[str]:
    """What is wrong with an adapted_threshold for scores adapted at this weight (None: nothing): a
    number within ±(1 + weight), the reach of such scores; past it every search would say unknown."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not abs(t) <= 1.0 + weight:
        return f"adapted_threshold {t!r}: must be a number from {-1 - weight:g} to {1 + weight:g} (its adapt weight {weight:g})"
    return None
