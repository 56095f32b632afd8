"""Ranking references and labels for query vectors into the typed results every interface gets
(index.results; numpy only, no torch: an exported bundle ranks with it too)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Mapping, Optional

import numpy as np

from byakugan.embedder.scoring.calibration import Calibration

from .errors import GalleryError, shown
from .results import UNKNOWN, Hit, Match, Recognition, Reference, SearchResult, blank_answer  # noqa: F401 (imported from here too)
from .counts import LabelCounts, Members
from .vectors import VectorStore, deep_costs, leaves_out

def search(index: VectorStore, refs: Mapping[int, Reference], emb: np.ndarray, k: int,
           protos: Optional[tuple[list[str], np.ndarray]] = None, offset: Optional[np.ndarray] = None,
           counts: Optional[LabelCounts] = None, members: Optional[Members] = None,
           adapted: Optional[tuple[list[str], np.ndarray]] = None) -> list[SearchResult]:
    """For each query row: its k nearest references and the k best labels.

    Labels are ranked by their best reference, or, given `protos` (index.means.ClassMeans.matrix), by the
    cosine to their class mean, which was 3-6 points more accurate on unseen anime characters.
    offset: per query row, an amount taken off all its scores (cohort normalisation, see
    byakugan.embedder.scoring.cohort); the order of hits and labels stays the same. counts: the
    references per label (index.counts), when the caller keeps them (else counted
    here, O(references)); members: their ids (index.counts.Members), kept while the references
    stand (else found here when a search needs them). adapted: each label (sorted, as protos) and its
    direction (index.means.ClassMeans.directions): a label's score is its own plus its direction's dot
    product with the query (embedder.scoring.adapt); hits keep their references' scores.
    """
    if offset is not None:
        return [SearchResult([Hit(h.id, h.label, h.score - float(o), h.source) for h in r.hits],
                             [(lab, s - float(o)) for lab, s in r.labels], float(o), r.lift)
                for r, o in zip(search(index, refs, emb, k, protos, None, counts, members, adapted), offset)]
    if adapted is not None:
        return adapted_search(index, refs, emb, k, protos, adapted, counts, members)
    if protos is not None:  # only the k nearest references are kept: k deep is enough
        hits = _ranked(index.search(emb, min(len(refs), k)), refs, k)
        names, P = protos
        S = emb @ P.T
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]
        return [SearchResult(h.hits, [(names[j], float(S[q, j])) for j in order[q]]) for q, h in enumerate(hits)]
    if counts is None:
        counts = LabelCounts(r.label for r in refs.values())
    # The k best labels are certain to lie within the top k x (largest class) references. One large
    # class (a gesture enrolled from a whole video) would make every search of an index whose work
    # grows with depth (HNSW, IVF-PQ) that deep, so such a store is asked as deep as k labels of the
    # size most labels have take, and only a query whose k labels are not all there is asked again,
    # as deep as the labels it found leave it to go (_depth). Flat and IVF,Flat read the same vectors
    # however deep: asked twice they would read them twice.
    full = min(len(refs), k * counts.largest())
    first = min(full, max(4 * k, 32, k * counts.typical())) if deep_costs(index.factory) else full
    results = _ranked(index.search(emb, first), refs, k)
    # A query short of k labels (while the gallery has more) may have more below it, unless its
    # request came back short from an IVF index: the lists it probed hold no more. (A Milvus HNSW
    # search comes back short where references were removed, with more below.)
    ivf, leave_out = index.factory.startswith("IVF"), leaves_out(index.factory)
    again: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for q, r in enumerate(results):
        if len(r.labels) < min(k, len(counts)) and first < full and (r.depth == first or not ivf):
            found, (theirs, rest) = tuple(sorted(lab for lab, _ in r.labels)), _depth(r, k, counts)  # sorted: one group
            # Where the labels found hold most of that depth (the query lies inside the large class),
            # an index that can leave ids out is asked past them only for the rest.
            key = (min(full, rest), found) if leave_out and theirs > rest else (min(full, theirs + rest), ())
            again.setdefault(key, []).append(q)
    for (depth, found), qs in again.items():  # queries grouped by how deep each must go
        if not found:
            for q, r in zip(qs, _ranked(index.search(emb[qs], depth), refs, k)):
                results[q] = r
            continue
        members = members if members is not None else Members(refs)
        for q, more in zip(qs, _ranked(index.search(emb[qs], depth, exclude=members.of(found)), refs, k)):
            # Its hits are those of the first request (at least k; on IVF-PQ re-scored among its first
            # candidates, as any query's are), and so are the found labels' scores.
            r = results[q]
            new = [ls for ls in more.labels if ls[0] not in found]  # (none, unless the index kept one)
            results[q] = _Ranked(r.hits, sorted(r.labels + new, key=lambda ls: -ls[1])[:k], r.depth)
    return [SearchResult(r.hits, r.labels) for r in results]


# Up to this many references a search adapted to the classes ranks every label exactly (every
# reference scored: Milvus returns at most 16,384 a query); past it, the labels an unadapted search
# finds (its k x 4 best) are ranked adapted.
EXACT_ADAPTED = 10_000
# Every reference comes back for each query: queries are asked this many results at a time (a
# calibration's 1,000 queries of 10,000 references at once would hold 10 million; Milvus answers at most 64 MB).
RESULTS_PER_REQUEST = 200_000


def adapted_search(index: VectorStore, refs: Mapping[int, Reference], emb: np.ndarray, k: int,
                   protos: Optional[tuple[list[str], np.ndarray]], adapted: tuple[list[str], np.ndarray],
                   counts: Optional[LabelCounts], members: Optional[Members]) -> list[SearchResult]:
    names, D = adapted
    T = emb @ D.T  # each query's term for each label
    column = {n: j for j, n in enumerate(names)}
    return [replace(r, lift=float(T[q, column[r.labels[0][0]]])) if r.labels else r
            for q, r in enumerate(_adapted(index, refs, emb, k, protos, adapted, counts, members, T, column))]


def _adapted(index, refs, emb, k, protos, adapted, counts, members, T, column) -> list[SearchResult]:
    names, D = adapted
    if protos is not None:  # by class mean: the term is linear in the query, so it joins the means
        return search(index, refs, emb, k, (names, protos[1] + D), None, counts, members)
    if len(refs) > EXACT_ADAPTED:
        out = []
        for q, r in enumerate(search(index, refs, emb, 4 * k, None, None, counts, members)):
            labels = sorted(((lab, s + float(T[q, column[lab]])) for lab, s in r.labels), key=lambda ls: -ls[1])[:k]
            out.append(SearchResult(r.hits[:k], labels))
        return out
    # Reference id -> its label's column, looked up in the sorted ids: as big as the gallery, whatever
    # its ids have grown to over years of edits (a table indexed by id would be as big as the largest).
    known = np.fromiter(refs, np.int64, len(refs))
    order = np.argsort(known)
    known, owner = known[order], np.fromiter((column[r.label] for r in refs.values()), np.int64, len(refs))[order]
    out = []
    step = max(1, RESULTS_PER_REQUEST // len(refs))
    for at in range(0, len(emb), step):
        scores, ids = index.search(emb[at:at + step], len(refs))
        pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        cols = np.where(known[pos] == ids, owner[pos], -1)  # -1: none (a padding -1 matches no id)
        best = np.full((len(ids), len(names)), -np.inf, np.float32)
        rows, where = np.nonzero(cols >= 0)
        np.maximum.at(best, (rows, cols[rows, where]), scores[rows, where])
        for q, h in enumerate(_ranked((scores, ids), refs, k)):
            S = best[q] + T[at + q]
            order = [j for j in np.argsort(-S, kind="stable")[:k] if np.isfinite(best[q, j])]
            out.append(SearchResult(h.hits, [(names[j], float(S[j])) for j in order]))
    return out


def _depth(found: "_Ranked", k: int, counts: LabelCounts) -> tuple[int, int]:
    """How deep the k best labels lie, given the first labels found (the best ones, in order):
    everything ranked above the best reference of the j-th label after them belongs to a found
    label or to one of the j - 1 labels between, so it lies within (the found labels' references)
    + (k - found) x (the largest class among the others): those two terms."""
    labels = [lab for lab, _ in found.labels]
    return sum(counts.get(lab, 0) for lab in labels), (k - len(labels)) * counts.largest_except(labels)


@dataclass
class _Ranked:
    hits: list[Hit]
    labels: list[tuple[str, float]]
    depth: int  # how many results the store gave for this query


def _ranked(found: tuple[np.ndarray, np.ndarray], refs: Mapping[int, Reference], k: int, step: int = 64) -> list[_Ranked]:
    """Each row's first k hits and first k labels (with their best scores), read from the top: every
    row's first `step` results made plain floats and ints at once (no numpy scalar per hit), more
    only for a row whose k labels lie deeper. Its hits are looked up once its labels are found."""
    scores, ids = found
    out = []
    for q, (head_s, head_i) in enumerate(zip(scores[:, :step].tolist(), ids[:, :step].tolist())):
        best: dict[str, float] = {}
        depth = 0
        for s, i in zip(head_s, head_i) if ids.shape[1] <= step else _pairs(scores[q], ids[q], step):
            if i < 0:
                break
            depth += 1
            label = refs[i].label
            if label not in best:
                best[label] = s
                if len(best) == k:  # (and so k hits: as many results read)
                    break
        some_s, some_i = (head_s, head_i) if k <= step else (scores[q, :k].tolist(), ids[q, :k].tolist())
        hits = [Hit(i, (ref := refs[i]).label, s, ref.source) for s, i in zip(some_s[:min(k, depth)], some_i)]
        out.append(_Ranked(hits, list(best.items()), depth))
    return out


def _pairs(scores: np.ndarray, ids: np.ndarray, step: int = 64):
    """(score, id) as plain floats and ints (no numpy scalar per hit), a piece at a time: most of a
    deep row is never read."""
    for at in range(0, len(ids), step):
        yield from zip(scores[at:at + step].tolist(), ids[at:at + step].tolist())


def check_threshold(value, lowest: float = -1.0, highest: float = 1.0, unit: str = "a cosine similarity") -> float:
    """A threshold as a float: a number (not a bool or a string, which convert by accident) between
    lowest and highest (a fixed one is a cosine, or an adapted score; one a search is given may be a
    normalised score)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (abs(value) <= sys.float_info.max if isinstance(value, (int, np.integer)) else math.isfinite(value)) \
            or not lowest <= value <= highest:
        rule = f"{unit} between {lowest:g} and {highest:g}" if math.isfinite(lowest + highest) else "a finite number"
        raise GalleryError(f"threshold {shown(value)}: must be {rule}")
    return float(value)


def check_fallback(fallback) -> Optional[str]:
    """What a search does where nothing is detected: "whole" searches the whole image; None (or
    "none", as the CLI and the server spell it) answers nothing."""
    if fallback not in (None, "whole", "none"):
        raise GalleryError(f"fallback {shown(fallback)}: must be 'whole' (search the whole image), or 'none' or None")
    return None if fallback == "none" else fallback


def check_k(k) -> int:
    """How many results: a whole number of at least 1 (not a bool, a float or a string)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise GalleryError(f"k={k!r}: must be a whole number of at least 1")
    return int(k)


def match(result: SearchResult, threshold: float, calibration: Optional[Calibration] = None) -> Match:
    if not isinstance(result, SearchResult):  # a label or a list of results: not an AttributeError from below
        raise GalleryError(f"match: expected one SearchResult (what search gives for each query), got {type(result).__name__}")
    threshold = check_threshold(threshold, -math.inf, math.inf)  # cohort-normalised scores reach past -1
    # An approximate index (IVF) can find nothing in the lists it probes: an unknown, scored lowest.
    label, score = result.labels[0] if result.labels else (UNKNOWN, -1.0)
    confidence = (round(calibration.confidence(score), 4), round(calibration.confidence(threshold), 4)) \
        if calibration is not None else (None, None)
    return Match(label if score >= threshold else UNKNOWN, score, label, threshold, score + result.offset - result.lift,
                 *confidence)
