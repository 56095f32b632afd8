"""The enrolment protocol on precomputed embeddings: few-shot top-1 and open-set rejection.

Each trial enrols `shots` references of each known class, holds some classes out as unknown,
and queries with everything else. Scores are cosines (embeddings are unit vectors).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float(np.mean((below + 0.5 * equal) / len(neg)))


def enrolment_trials(
    emb: np.ndarray,
    labels: Sequence[str],
    shots: int = 5,
    trials: int = 10,
    unknown_fraction: float = 0.33,
    seed: int = 0,
) -> dict:
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    n_unknown = int(round(len(classes) * unknown_fraction)) if unknown_fraction > 0 else 0
    if len(classes) - n_unknown < 2:
        raise ValueError(f"need at least 2 known classes; have {len(classes)} classes with {n_unknown} held out as unknown")
    near, proto, thr, far, auc = [], [], [], [], []
    for _ in range(trials):
        unknown = set(rng.choice(classes, n_unknown, replace=False).tolist())
        known = [c for c in classes if c not in unknown]
        refs, queries = [], []
        for c in known:
            idx = rng.permutation(np.flatnonzero(labels == c))
            refs += idx[:shots].tolist()
            queries += idx[shots:].tolist()
        unk_q = np.flatnonzero(np.isin(labels, list(unknown)))
        S = emb[queries] @ emb[refs].T
        ref_lab = labels[refs]
        near.append(np.mean(ref_lab[S.argmax(1)] == labels[queries]))
        P = np.stack([emb[[r for r in refs if labels[r] == c]].mean(0) for c in known])
        P /= np.linalg.norm(P, axis=1, keepdims=True)
        proto.append(np.mean(np.asarray(known)[(emb[queries] @ P.T).argmax(1)] == labels[queries]))
        if len(unk_q):
            known_best = S.max(1)
            unk_best = (emb[unk_q] @ emb[refs].T).max(1)
            t = float(np.quantile(known_best, 0.05))  # keeps 95% of known queries
            thr.append(t)
            far.append(float(np.mean(unk_best >= t)))
            auc.append(roc_auc(known_best, unk_best))
    out = {
        "shots": shots,
        "trials": trials,
        "classes": len(classes),
        "unknown_classes_per_trial": n_unknown,
        "top1_nearest": round(float(np.mean(near)), 4),
        "top1_nearest_std": round(float(np.std(near)), 4),
        "top1_prototype": round(float(np.mean(proto)), 4),
    }
    if thr:
        out |= {
            "threshold_tar95": round(float(np.mean(thr)), 4),
            "far_at_tar95": round(float(np.mean(far)), 4),
            "roc_auc": round(float(np.mean(auc)), 4),
        }
    return out
