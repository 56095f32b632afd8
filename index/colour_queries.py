"""Queries with no colour in them against a gallery whose references are in colour.

A manga panel searched in a gallery enrolled from colour pictures: its colour histogram part says
how much grey each character wears, not who it is, so such a query scores by the CNN part alone
(byakugan.embedder.scoring.colourless). Left one source out, on grey queries against colour
references, that took class-mean top-1 from 0.466 to 0.576 on the mean of the anime sources; a
gallery of grey references keeps its histogram, which helps there (0.671 against 0.624 by the CNN
part alone): benchmarks/grey_queries.py, models/loso-grey-queries.json.
"""

from __future__ import annotations

import weakref
from typing import Optional

import numpy as np

from byakugan.embedder.scoring.colourless import colourless, colourless_form

from .gallery import Gallery
from .settings import colourless_spec

SAMPLE = 200  # references looked at, at most (seeded): enough to tell a gallery's majority


class ColourQueries:
    """One pipeline's view of its galleries' references, worked out again only after they change."""

    def __init__(self) -> None:
        self._last: Optional[tuple] = None  # (the gallery, its revision, whether its references are in colour)

    def in_colour(self, gallery: Gallery) -> bool:
        """Whether most of the gallery's references (a seeded sample) have colour in them."""
        last = self._last
        if last is None or last[0]() is not gallery or last[1] != gallery.revision:
            spec, ids = gallery.colourless_queries, [r.id for r in gallery.references()]
            if len(ids) > SAMPLE:
                ids = sorted(np.random.default_rng(0).choice(ids, SAMPLE, replace=False).tolist())
            coloured = not ids or mostly_in_colour(gallery.embeddings(ids), spec)
            self._last = last = (weakref.ref(gallery), gallery.revision, coloured)
        return last[2]

    def form(self, gallery: Gallery, q: np.ndarray) -> np.ndarray:
        """q with its colourless rows scoring by the CNN part alone, where the gallery asks for it
        (galleries made before do not) and its references are in colour."""
        spec = gallery.colourless_queries
        if spec is None or q.ndim != 2 or q.shape[1] != gallery.dim or not self.in_colour(gallery):
            return q
        return colourless_form(q, spec["split"], spec["bins"], spec["weight"])


def set_queries(model, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """A labelled set's stored-form rows as its queries score in a new gallery of the same pictures
    (`byakugan evaluate`, whose trials enrol some of them and search with the rest): where the model
    records the rule and most of the set is in colour, its colourless rows by the CNN part alone.
    Returns (the query rows, how many were rescaled)."""
    spec = colourless_spec(model)
    if spec is None or not len(rows) or not mostly_in_colour(rows, spec):  # a set mostly grey keeps its histogram
        return rows, 0
    return colourless_form(rows, spec["split"], spec["bins"], spec["weight"]), \
        int(colourless(rows, spec["split"], spec["bins"]).sum())


def mostly_in_colour(rows: np.ndarray, spec: dict) -> bool:
    """Whether most stored-form rows have colour in them: where the rule applies."""
    return bool(colourless(rows, spec["split"], spec["bins"]).mean() < 0.5)
