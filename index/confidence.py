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
    stored = gallery.embeddings(ids.tolist())
    q, off = prepare(stored)
    off = np.zeros(len(ids), np.float32) if off is None else np.asarray(off, np.float32)
    # Each reference as a query of its class: the rest of its class without it and its near-copies (a
    # burst of camera shots would otherwise score ~1 against each other and push the automatic
    # threshold to 1). A gallery adapted to its classes leaves them out of the fit as well.
    own_rest: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    copies: list[np.ndarray] = [stored[:0]] * len(ids)
    for label in sorted({label_of[int(i)] for i in ids}):
        own = np.asarray(members[label])
        V = gallery.embeddings(own.tolist())
        for row in np.flatnonzero([label_of[int(i)] == label for i in ids]):
            near = (V @ stored[row] >= DUPLICATE_COSINE) & (own != ids[row])
            own_rest[row], copies[row] = (V, (own != ids[row]) & ~near), V[near]
    terms = _left_out_terms(gallery, [label_of[int(i)] for i in ids], stored, q, copies)
    # An approximate index may find no other class near a reference (IVF probes a few lists): that
    # reference gives no stranger score rather than failing the calibration. Adapted, a label's score
    # changes with the fit left without the reference: its best few are scored again.
    impostor = []
    for row, (i, res) in enumerate(zip(ids, gallery.search(q, k=2 if terms is None else 4, offset=off))):
        others = [(lab, s) for lab, s in res.labels if lab != label_of[int(i)]]
        if terms is not None:
            column, inside, out = terms
            others = [(lab, s - inside[row, column[lab]] + out[row, column[lab]]) for lab, s in others]
        if others:
            impostor.append(max(s for _, s in others))
    genuine = []
    for row in sorted(own_rest, key=lambda row: (label_of[int(ids[row])], row)):
        V, keep = own_rest[row]
        if not keep.any():
            continue
        term = 0.0 if terms is None else float(terms[2][row, terms[0][label_of[int(ids[row])]]])
        if gallery.scoring == "mean":
            m = V[keep].sum(0)
            genuine.append(float(q[row] @ m / max(np.linalg.norm(m), 1e-12)) - off[row] + term)
        else:
            genuine.append(float((q[row] @ V[keep].T).max()) - off[row] + term)
    return np.asarray(genuine), np.asarray(impostor, np.float64)


def _left_out_terms(gallery: Gallery, labels: list[str], stored: np.ndarray, q: np.ndarray, copies: list[np.ndarray]):
    """None, or (each label's column, the terms the gallery's fit gives, those a fit without each
    reference and its near-copies gives: [references, labels] each) (embedder.scoring.adapt.left_out)."""
    if gallery.adapt is None:
        return None
    means = gallery.means()
    names, sums = means.sums()
    column = {label: j for j, label in enumerate(names)}
    adapt = Adaptation.from_dict(gallery.adapt)
    inside, out = left_out(means.system(adapt, gallery.cohort), sums, stored, q,
                           np.asarray([column[lab] for lab in labels]), adapt, copies)
    return column, inside, out


def calibrate(gallery: Gallery, prepare: Prepare, limit: int = LIMIT) -> Calibration:
    return fit(*evidence(gallery, prepare, limit), threshold=gallery.threshold)


def strangers_note(cal: Calibration, threshold: float) -> Optional[str]:
    """For people, beside a threshold: the share of the references' best scores against another class
    that reach it (None without them), and a warning where that is most of them."""
    share = cal.strangers_passing(threshold)
    if share is None:
        return None
    said = (f"{share:.0%} of the references' best scores against a class not theirs reach it (about the share of "
            "look-alike strangers it would answer with a label)")
    return said + ("; that is most of them: enrol more varied references, or set a higher threshold by hand"
                   if share > 0.5 else "")
