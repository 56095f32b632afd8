"""The enrolment protocol on precomputed embeddings: few-shot top-1 and open-set rejection.

Each trial enrols `shots` references of each known class, holds some classes out as unknown,
and queries with everything else. Scores are cosines (embeddings are unit vectors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..scoring.adapt import Adaptation, cohort_outer


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float(np.mean((below + 0.5 * equal) / len(neg)))


def draw_trial(rng: np.random.Generator, labels: np.ndarray, classes: np.ndarray, n_unknown: int,
               shots: int) -> tuple[list, set, list[int], list[int]]:
    """One trial: (known classes, unknown classes, reference rows, known-query rows)."""
    unknown = set(rng.choice(classes, n_unknown, replace=False).tolist())
    known = [c for c in classes if c not in unknown]
    refs, queries = [], []
    for c in known:
        idx = rng.permutation(np.flatnonzero(labels == c))
        refs += idx[:shots].tolist()
        queries += idx[shots:].tolist()
    return known, unknown, refs, queries


def check_seed(seed: object) -> int:
    """A seed numpy takes (np.random.seed, default_rng): a whole number from 0 to 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed {seed!r} must be a whole number from 0 to {2**32 - 1}")
    return int(seed)


def check_trials(labels: Sequence[str], shots: int, trials: int, unknown_fraction: float, seed: int = 0) -> int:
    """The number of classes left out as unknown in each trial; ValueError (one line) when the
    settings or the labels cannot make a trial. Needs only the labels: it runs before embedding."""
    check_seed(seed)
    if shots < 1 or trials < 1:
        raise ValueError(f"shots {shots} and trials {trials} must both be >= 1")
    if not 0 <= unknown_fraction < 1:  # also refuses NaN
        raise ValueError(f"unknown fraction {unknown_fraction} must be >= 0 and < 1 (the share of classes left out of "
                         "the gallery in each trial)")
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    n_unknown = int(round(len(classes) * unknown_fraction))
    if len(classes) - n_unknown < 2:
        raise ValueError(f"need at least 2 known classes; have {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                         f"with {n_unknown} held out as unknown")
    small = [str(c) for c, n in zip(classes, counts) if n <= shots]
    if small:
        raise ValueError(f"classes {', '.join(small[:5])}{' ...' if len(small) > 5 else ''} have no images left to "
                         f"query after {shots} references (each class needs more than shots images)")
    return n_unknown


@dataclass
class Trials:
    """Everything the trials produced: the summary plus what the plots need."""

    summary: dict
    classes: list[str]
    confusion: np.ndarray  # [true, predicted] counts, nearest reference, known queries
    known_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unknown_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def enrolment_trials(
    emb: np.ndarray,
    labels: Sequence[str],
    shots: int = 5,
    trials: int = 10,
    unknown_fraction: float = 0.33,
    seed: int = 0,
    query_emb: Optional[np.ndarray] = None,
    offset: Optional[np.ndarray] = None,
    adapt: Optional[Adaptation] = None,
    cohort: Optional[np.ndarray] = None,
) -> Trials:
    """query_emb: the rows to query with when they differ from the enrolled form (fused vectors
    without landmarks, see embedder.scoring.fusion.query_form); emb by default.
    offset: a per-row amount taken off every score of that row as a query (cohort normalisation,
    see embedder.scoring.cohort), as a gallery with a cohort does.
    adapt: labels scored as a gallery adapted to its classes scores them (embedder.scoring.adapt):
    each known class's nearest reference (or mean) plus its term; None: by the nearest reference.
    cohort: the model's cohort, which a gallery of it holds and fits with where `adapt` asks."""
    labels = np.asarray(labels)
    q_emb = emb if query_emb is None else query_emb
    off = np.zeros(len(labels), np.float32) if offset is None else np.asarray(offset, np.float32)
    classes = np.unique(labels)
    index = {c: i for i, c in enumerate(classes)}
    n_unknown = check_trials(labels, shots, trials, unknown_fraction, seed)
    rng = np.random.default_rng(seed)
    # The cohort's share of every trial's fit is the same: computed once, not once a trial.
    outer = cohort_outer(cohort) if adapt is not None and adapt.cohort and cohort is not None and len(cohort) else None
    near, proto, thr, far, auc = [], [], [], [], []
    open_mean: list[tuple[float, float, float]] = []  # threshold, FAR, AUC when labels score by class mean
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    known_all, unknown_all = [], []
    by_unknown: dict[str, list[tuple[float, float]]] = {}  # per class left out: (FAR nearest, FAR class mean)
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, n_unknown, shots)
        S = q_emb[queries] @ emb[refs].T - off[queries, None]
        scored = _Labels(emb[refs], labels[refs], known, adapt, cohort, outer)
        NS = scored.nearest(q_emb[queries], S)
        predicted = scored.names[NS.argmax(1)]
        near.append(np.mean(predicted == labels[queries]))
        np.add.at(confusion, ([index[c] for c in labels[queries]], [index[c] for c in predicted]), 1)
        P = np.stack([emb[[r for r in refs if labels[r] == c]].mean(0) for c in known])
        P /= np.linalg.norm(P, axis=1, keepdims=True)
        PS = q_emb[queries] @ P.T - off[queries, None] + scored.terms(q_emb[queries])
        proto.append(np.mean(np.asarray(known)[PS.argmax(1)] == labels[queries]))
        unk_q = np.flatnonzero(np.isin(labels, list(unknown)))
        if len(unk_q):
            known_best = NS.max(1)
            unk_best = scored.nearest(q_emb[unk_q], q_emb[unk_q] @ emb[refs].T - off[unk_q, None]).max(1)
            t = float(np.quantile(known_best, 0.05))  # keeps 95% of known queries
            thr.append(t)
            far.append(float(np.mean(unk_best >= t)))
            auc.append(roc_auc(known_best, unk_best))
            known_all.append(known_best)
            unknown_all.append(unk_best)
            kp, up = PS.max(1), (q_emb[unk_q] @ P.T - off[unk_q, None] + scored.terms(q_emb[unk_q])).max(1)
            tp = float(np.quantile(kp, 0.05))
            open_mean.append((tp, float(np.mean(up >= tp)), roc_auc(kp, up)))
            for c in unknown:  # which left-out classes pass for enrolled ones
                rows = labels[unk_q] == c
                by_unknown.setdefault(c, []).append((float(np.mean(unk_best[rows] >= t)), float(np.mean(up[rows] >= tp))))
    queried = confusion.sum(1)
    per_class = confusion.diagonal() / np.maximum(queried, 1)
    summary = {
        "shots": shots,
        "trials": trials,
        "classes": len(classes),
        "images": len(labels),
        "unknown_classes_per_trial": n_unknown,
        "top1_nearest": round(float(np.mean(near)), 4),
        "top1_nearest_std": round(float(np.std(near)), 4),
        "top1_prototype": round(float(np.mean(proto)), 4),
        # only classes queried as known at least once: one left out in every trial has no top-1
        "per_class_top1_nearest": {c: round(float(a), 4) for c, a, n in zip(classes.tolist(), per_class, queried) if n},
    }
    if thr:
        summary |= {
            "threshold_tar95": round(float(np.mean(thr)), 4),
            "far_at_tar95": round(float(np.mean(far)), 4),
            "roc_auc": round(float(np.mean(auc)), 4),
            # the same with labels scored by class mean (a gallery with scoring "mean")
            "threshold_tar95_mean": round(float(np.mean([o[0] for o in open_mean])), 4),
            "far_at_tar95_mean": round(float(np.mean([o[1] for o in open_mean])), 4),
            "roc_auc_mean": round(float(np.mean([o[2] for o in open_mean])), 4),
            # each class's FAR@TAR95 over the trials that left it out: [nearest, class mean]
            "far_at_tar95_by_unknown_class": {c: [round(float(np.mean([v[0] for v in vs])), 4),
                                                  round(float(np.mean([v[1] for v in vs])), 4)]
                                              for c, vs in sorted(by_unknown.items())},
        }
    return Trials(summary, classes.tolist(), confusion,
                  np.concatenate(known_all) if known_all else np.zeros(0),
                  np.concatenate(unknown_all) if unknown_all else np.zeros(0))


class _Labels:
    """A trial's enrolled classes, scored as a gallery scores labels: by the nearest reference, plus,
    adapted to the classes, each class's term."""

    def __init__(self, refs: np.ndarray, ref_labels: np.ndarray, known: Sequence[str], adapt: Optional[Adaptation],
                 cohort: Optional[np.ndarray] = None, outer: Optional[np.ndarray] = None) -> None:
        self.names = np.asarray(ref_labels) if adapt is None else np.asarray(known)
        self._groups = [np.flatnonzero(ref_labels == c) for c in known]
        self._D = None if adapt is None else adapt.fit(refs, self._groups, cohort, outer)

    def terms(self, q: np.ndarray) -> np.ndarray:
        return 0.0 if self._D is None else q @ self._D.T

    def nearest(self, q: np.ndarray, S: np.ndarray) -> np.ndarray:
        """[queries, references] scores as label scores: as they are (argmax names the reference's
        label) or, adapted, [queries, known classes]."""
        if self._D is None:
            return S
        return np.stack([S[:, g].max(1) for g in self._groups], 1) + self.terms(q)
