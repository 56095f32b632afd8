"""A gallery's calibration from its own references (see embedder.scoring.calibration): each
reference, as a query, against its own class without itself (a true match) and against its best
other class (what a stranger can reach), scored exactly as the gallery scores a search."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from byakugan.embedder.scoring.adapt import Adaptation, left_out
from byakugan.embedder.scoring.calibration import Calibration, fit

from .gallery import Gallery

# References taken as queries at most (a seeded sample beyond it), so that calibrating costs
# about as much as this many searches whatever the gallery's size.
LIMIT = 1000
DUPLICATE_COSINE = 0.98  # as GalleryService warns: a reference this close to another is a copy of it
Prepare = Callable[[np.ndarray], tuple[np.ndarray, Optional[np.ndarray]]]


def evidence(gallery: Gallery, prepare: Prepare, limit: int = LIMIT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(true-match scores, best-stranger scores) of the references. prepare: stored vectors ->
    (query form, cohort offsets or None), as a search prepares its queries."""
    refs = gallery.references()
    members: dict[str, list[int]] = {}
    for r in refs:
        members.setdefault(r.label, []).append(r.id)
    if len(members) < 2:
        return np.zeros(0), np.zeros(0)
    ids = np.asarray([r.id for r in refs])
    if len(ids) > limit:
        ids = np.sort(np.random.default_rng(seed).choice(ids, limit, replace=False))
    label_of = {r.id: r.label for r in refs}
    q, off = prepare(gallery.embeddings(ids.tolist()))
    off = np.zeros(len(ids), np.float32) if off is None else np.asarray(off, np.float32)
    # An approximate index may find no other class near a reference (IVF probes a few lists): that
    # reference gives no stranger score rather than failing the calibration.
    best_other = (next((s for lab, s in res.labels if lab != label_of[int(i)]), None)
                  for i, res in zip(ids, gallery.search(q, k=2, offset=off)))
    impostor = np.asarray([s for s in best_other if s is not None], np.float64)
    # A gallery whose scores are adapted to its classes: each reference's term for its own class with
    # it left out of the fit, as a picture of that class never enrolled would get it.
    terms = _left_out_terms(gallery, ids.tolist(), q, label_of)
    genuine = []
    for label in sorted({label_of[int(i)] for i in ids}):
        rows = np.flatnonzero([label_of[int(i)] == label for i in ids])
        own = members[label]
        if len(own) < 2:
            continue
        V = gallery.embeddings(own)
        S = q[rows] @ V.T
        stored = gallery.embeddings(ids[rows].tolist())
        for n, row in enumerate(rows):
            # leave the reference itself out of its class, and its near-copies: a burst of camera
            # shots would otherwise score ~1 against each other and push the automatic threshold to 1
            keep = (np.asarray(own) != ids[row]) & (V @ stored[n] < DUPLICATE_COSINE)
            if not keep.any():
                continue
            term = 0.0 if terms is None else float(terms[row])
            if gallery.scoring == "mean":
                m = V[keep].sum(0)
                genuine.append(float(q[row] @ m / max(np.linalg.norm(m), 1e-12)) - off[row] + term)
            else:
                genuine.append(float(S[n, keep].max()) - off[row] + term)
    return np.asarray(genuine), impostor


def _left_out_terms(gallery: Gallery, ids: list[int], q: np.ndarray, label_of: dict[int, str]) -> Optional[np.ndarray]:
    if gallery.adapt is None:
        return None
    means = gallery.means()
    labels, sums = means.sums()
    column = {label: j for j, label in enumerate(labels)}
    own = np.asarray([column[label_of[i]] for i in ids])
    return left_out(means.gram, sums, gallery.embeddings(ids), q, own, Adaptation.from_dict(gallery.adapt))


def calibrate(gallery: Gallery, prepare: Prepare, limit: int = LIMIT) -> Calibration:
    return fit(*evidence(gallery, prepare, limit), threshold=gallery.threshold)
