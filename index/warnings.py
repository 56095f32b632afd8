"""Warnings about crops before they are enrolled: near-duplicates, crops closer to another class,
and crops with nothing in them to tell a class by (a few pixels, one flat colour)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from byakugan.embedder.images import ImageSource, blank, describe, image_list

from .confidence import DUPLICATE_COSINE
from .gallery import Gallery
from .labels import differing, variants
from .pipeline import Pipeline
from .records import Crop
from .results import Region

BLOCK, TOP_LABELS = 1024, 10


def blank_warnings(crops: list[Crop]) -> list[str]:
    return [f"{c.name}: {why}" for c in crops if (why := blank(c.image)) is not None]


def enrol_warnings(pipe: Pipeline, g: Gallery, label: str, crops: Sequence[Union[Crop, Region, ImageSource]],
                   emb: Optional[np.ndarray] = None) -> list[str]:
    """Near-duplicates (by the raw cosine, whatever the gallery's scale), or closer to another class;
    `g` is the gallery they go into, or an empty one of the model `pipe` embeds with. crops: as
    enrolment takes them (records.Crop), regions (Pipeline.crops), or pictures, cropped here as
    Pipeline.enroll would (the whole picture where nothing is found). emb: the crops' vectors when
    they are already made (what enrolment stores), else made here."""
    crops = [as_crop(pipe, c, i) for i, c in enumerate(image_list(crops, "crops"))]
    if emb is None:
        emb = pipe.embed_regions([c.image for c in crops], [c.landmarks for c in crops])
    # Within this batch (the gallery cannot see these yet), scored as a search would score one
    # against the other: a hand crop without landmarks by its CNN part alone. A new reference
    # this close to another (raw cosine) adds nothing but weight to its class.
    q, _ = pipe.query(g, emb)
    warnings = blank_warnings(crops)
    for j0 in range(0, len(crops), BLOCK):  # crop j against every crop before it, a block of rows at a time:
        S = q[j0:j0 + BLOCK] @ emb[:j0 + BLOCK].T  # a whole folder of one class would make an N x N matrix
        S = np.maximum(S, (q[:j0 + BLOCK] @ emb[j0:j0 + BLOCK].T).T)
        for jj, row in enumerate(S):
            j = j0 + jj
            if (before := np.flatnonzero(row[:j] >= DUPLICATE_COSINE)).size:
                warnings.append(f"{crops[j].name}: near-duplicate of {crops[before[0]].name} in the same upload, "
                                f"cosine {row[before[0]]:.3f}")
    if not len(g):
        return warnings
    if alike := variants(label, g.labels()):
        warnings.append(f"label {label!r} is new, but {alike[0]!r} is enrolled, {differing(label, alike[0])}: "
                        f"these go into a second class (enrol as {alike[0]!r} to add to that one)")
    # The best labels only (their own label's score is "lower" when it is not among them): asking for
    # every label would rank the whole gallery for each crop.
    for crop, r in zip(crops, pipe.search(g, emb, k=min(len(g.labels()), TOP_LABELS))):
        if not r.hits:  # an approximate index found nothing near: neither a duplicate nor a closer class
            continue
        top = r.hits[0]
        if top.score + r.offset >= DUPLICATE_COSINE:
            warnings.append(f"{crop.name}: near-duplicate of reference {top.id} ({top.label}, {top.source}), "
                            f"cosine {top.score + r.offset:.3f}")
        own = dict(r.labels).get(label)
        best_label, best = r.labels[0]
        if label in g.labels() and best_label != label:
            own_text = f"{own:.3f}" if own is not None else "lower"
            warnings.append(f"{crop.name}: closer to {best_label!r} ({best:.3f}) than to its own class {label!r} ({own_text})")
    return warnings


def as_crop(pipe: Pipeline, item: Union[Crop, Region, ImageSource], i: int) -> Crop:
    if isinstance(item, Crop):
        return item
    name = f"region {i + 1}" if isinstance(item, Region) else describe(item)
    region = item if isinstance(item, Region) else pipe.crops(item, fallback="whole", name=name)[0]
    return Crop(name, region.crop, region.landmarks, region.found)
