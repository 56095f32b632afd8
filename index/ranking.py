"""Ranking references and labels for query vectors, and the typed results every interface gets
(numpy only, no torch: an exported bundle ranks with it too)."""

from __future__ import annotations

import math

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import numpy as np

from byakugan.embedder.scoring.calibration import Calibration

from .errors import GalleryError
from .vectors import VectorStore

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reference:
    id: int
    label: str
    source: str
    added: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Hit:
    id: int
    label: str
    score: float
    source: str


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]  # top-k references, best first
    labels: list[tuple[str, float]]  # top-k labels by their best reference score, best first
    offset: float = 0.0  # taken off every score by cohort normalisation: score + offset is the cosine

    def to_dict(self, calibration: Optional[Calibration] = None) -> dict:
        labels = [{"label": lab, "score": s} for lab, s in self.labels]
        if calibration is not None:
            for entry in labels:
                entry["confidence"] = round(calibration.confidence(entry["score"]), 4)
        return {"hits": [asdict(h) for h in self.hits], "labels": labels}


@dataclass(frozen=True)
class Match:
    label: str  # UNKNOWN when the best score is below the threshold
    score: float
    nearest: str  # best label even when below the threshold
    threshold: float
    cosine: Optional[float] = None  # the score before cohort normalisation (= score without a cohort)
    confidence: Optional[float] = None  # 0-1, the score on the gallery's calibrated scale
    threshold_confidence: Optional[float] = None  # the threshold on that scale

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN

    def to_dict(self) -> dict:
        return dict(asdict(self), known=self.known)


@dataclass(frozen=True)
class Recognition:
    """The answer for one detection in an image: where it is, and what it matched."""

    box: tuple[int, int, int, int]  # x, y, width, height in image pixels
    match: Match
    result: SearchResult
    landmarks: Optional[bool] = None  # fused hand gallery: whether this detection had landmarks
    found: bool = True  # False: nothing was detected, so the whole image was searched
    calibration: Optional[Calibration] = None  # the gallery's, for the labels' confidences

    @property
    def hits(self) -> list[Hit]:
        return self.result.hits

    @property
    def labels(self) -> list[tuple[str, float]]:
        return self.result.labels

    def to_dict(self) -> dict:
        """The JSON form the CLI, the server and a bundle give: box, found, match, hits, labels[, landmarks]."""
        out = {"box": list(self.box), "found": self.found, "match": self.match.to_dict(),
               **self.result.to_dict(self.calibration)}
        if self.landmarks is not None:
            out["landmarks"] = self.landmarks
        return out


def search(index: VectorStore, refs: Mapping[int, Reference], emb: np.ndarray, k: int,
           protos: Optional[tuple[list[str], np.ndarray]] = None,
           offset: Optional[np.ndarray] = None, largest: Optional[int] = None) -> list[SearchResult]:
    """For each query row: its k nearest references and the k best labels.

    Labels are ranked by their best reference, or, given `protos` (index.means.ClassMeans.matrix), by the
    cosine to their class mean, which was 3-6 points more accurate on unseen anime characters.
    offset: per query row, an amount taken off all its scores (cohort normalisation, see
    byakugan.embedder.scoring.cohort); the order of hits and labels stays the same. largest: the
    size of the largest class when the caller keeps it (else counted here, O(references)).
    """
    if offset is not None:
        return [SearchResult([Hit(h.id, h.label, h.score - float(o), h.source) for h in r.hits],
                             [(lab, s - float(o)) for lab, s in r.labels], float(o))
                for r, o in zip(search(index, refs, emb, k, protos, None, largest), offset)]
    if protos is not None:
        hits = search(index, refs, emb, k, largest=largest)
        names, P = protos
        S = emb @ P.T
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]
        return [SearchResult(h.hits, [(names[j], float(S[q, j])) for j in order[q]]) for q, h in enumerate(hits)]
    if largest is None:
        largest = max(Counter(r.label for r in refs.values()).values())
    # The first k distinct labels are certain to lie within the top k * (largest class size) hits.
    depth = min(len(refs), k * largest)
    scores, ids = index.search(emb, depth)
    results = []
    for row_s, row_i in zip(scores.tolist(), ids.tolist()):  # plain floats and ints: no numpy scalars per hit
        hits: list[Hit] = []
        best: dict[str, float] = {}
        for s, i in zip(row_s, row_i):
            if i < 0:
                break
            ref = refs[i]
            if len(hits) < k:
                hits.append(Hit(i, ref.label, s, ref.source))
            if ref.label not in best:
                best[ref.label] = s
                if len(best) == k and len(hits) == k:
                    break
        results.append(SearchResult(hits, list(best.items())))
    return results


def match(result: SearchResult, threshold: float, calibration: Optional[Calibration] = None) -> Match:
    if isinstance(threshold, (str, bytes)) or not math.isfinite(threshold):  # a string compares by accident
        raise GalleryError(f"threshold {threshold!r}: must be a finite number")
    # An approximate index (IVF) can find nothing in the lists it probes: an unknown, scored lowest.
    label, score = result.labels[0] if result.labels else (UNKNOWN, -1.0)
    confidence = (round(calibration.confidence(score), 4), round(calibration.confidence(threshold), 4)) \
        if calibration is not None else (None, None)
    return Match(label if score >= threshold else UNKNOWN, score, label, threshold, score + result.offset, *confidence)
