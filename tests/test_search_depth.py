"""A gallery's search made cheaper above its store answers exactly as before: the previous ranking
loop and query check, kept here as the reference (as faiss.contrib's tests keep a plain numpy
version), against the ones the gallery runs now; on random galleries of uneven class sizes, every
store type (Flat, HNSW, IVF-PQ) and both scorings, and against exact deep search where it is exact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from byakugan.index import gallery as gallery_module
from byakugan.index import ranking
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.quantised import PQ_MIN
from byakugan.index.ranking import Hit, Reference, _Ranked
from byakugan.index.settings import GallerySettings
from byakugan.index.vectors import as_vectors, wrong_lengths

DIM = 32


# ---- the previous way, as it was ---------------------------------------------------------
def previous_ranked(found, refs, k):
    scores, ids = found
    out = []
    for row_s, row_i in zip(scores, ids):
        hits, best, depth = [], {}, 0
        for s, i in previous_pairs(row_s, row_i):
            if i < 0:
                break
            depth += 1
            ref = refs[i]
            if len(hits) < k:
                hits.append(Hit(i, ref.label, s, ref.source))
            if ref.label not in best:
                best[ref.label] = s
                if len(best) == k and len(hits) == k:
                    break
        out.append(_Ranked(hits, list(best.items()), depth))
    return out


def previous_pairs(scores, ids, step=64):
    for at in range(0, len(ids), step):
        yield from zip(scores[at:at + step].tolist(), ids[at:at + step].tolist())


def previous_as_vectors(vectors, dim, where="", enrolled=False, fused=True):
    emb = np.asarray(vectors)
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise GalleryError(f"vectors of shape {emb.shape} and dtype {emb.dtype}: expected an (N, {dim}) float array")
    if emb.shape[1] != dim:
        raise GalleryError(f"embeddings have dim {emb.shape[1]}, gallery {where or '(unsaved)'} needs {dim}")
    with np.errstate(over="ignore"):
        emb = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all():
        raise GalleryError("embeddings contain NaN or infinite values (or values too large for float32)")
    bad = wrong_lengths(emb, exact=not fused) if enrolled else np.flatnonzero(np.linalg.norm(emb, axis=1) < 1e-3)
    if bad.size:
        rule = ("a query has a direction" if not enrolled else "references are embeddings of length 1"
                + (" (less only for a fused hand vector without landmarks)" if fused else ""))
        raise GalleryError(f"vector {bad[0]}: length {np.linalg.norm(emb[bad[0]]):.4g}; {rule}: normalise it")
    return emb


# ---- ranking the store's answers ---------------------------------------------------------
def as_tuples(ranked):
    return [(r.hits, r.labels, r.depth) for r in ranked]


@settings(max_examples=300, deadline=None)
@example(sizes=[150, 3, 3, 3], rows=1, width=300, k=3, short=[300] * 4, grouped=True, seed=0)  # 3rd label at 153
@given(sizes=st.lists(st.integers(1, 12) | st.integers(60, 150), min_size=1, max_size=12), rows=st.integers(1, 4),
       width=st.integers(1, 300), k=st.integers(1, 8) | st.integers(9, 80),
       short=st.lists(st.integers(0, 300), min_size=4, max_size=4), grouped=st.booleans(), seed=st.integers(0, 10_000))
def test_ranked_reads_the_store_answer_as_the_previous_loop_did(sizes, rows, width, k, short, grouped, seed):
    """Uneven classes; rows deeper than the first piece read (64) and k past it; answers that stop
    short (id -1 from some point on, as FAISS gives them); grouped: each class's references
    together, as a query inside a large class gets them (its next labels lie deep)."""
    rng = np.random.default_rng(seed)
    labels = [f"c{j}" for j, n in enumerate(sizes) for _ in range(n)]
    ids_of = rng.permutation(10 * len(labels))[:len(labels)]  # ids need not be 0..n-1
    refs = {int(i): Reference(int(i), lab, f"f{i}.jpg", "2026-01-01T00:00:00Z") for i, lab in zip(ids_of, labels)}
    ids = np.stack([rng.choice(ids_of, min(width, len(ids_of)), replace=False) for _ in range(rows)]).astype(np.int64)
    if grouped:
        ids = np.stack([sorted(row, key=lambda i: int(refs[int(i)].label[1:])) for row in ids]).astype(np.int64)
    scores = -np.sort(-rng.standard_normal(ids.shape).astype(np.float32), axis=1)
    scores[:, 1::3] = scores[:, 0::3][:, :scores[:, 1::3].shape[1]]  # ties
    for q in range(rows):
        ids[q, short[q]:], scores[q, short[q]:] = -1, -np.finfo(np.float32).max
    assert as_tuples(ranking._ranked((scores, ids), refs, k)) == as_tuples(previous_ranked((scores, ids), refs, k))


def test_ranked_refuses_a_reference_it_reads_and_the_gallery_lacks_as_before():
    refs = {i: Reference(i, "ab"[i % 2], "x", "2026-01-01T00:00:00Z") for i in range(4)}
    found = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32), np.array([[0, 7, 1, 2]])
    for rank in (ranking._ranked, previous_ranked):
        with pytest.raises(KeyError):
            rank(found, refs, 3)
        # past the k-th label nothing more is read, an unknown id there included
        assert as_tuples(rank((found[0], np.array([[0, 1, 7, 2]])), refs, 2))[0][1] == [("a", 0.8999999761581421),
                                                                                        ("b", 0.800000011920929)]


# ---- checking queries ---------------------------------------------------------------------
def outcome(check, *args, **kw):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            got = check(*args, **kw)
        except GalleryError as exc:
            got = str(exc)
    return got, [(w.category, str(w.message)) for w in seen]


def same_outcome(vectors, dim, **kw):
    (new, new_warned), (old, old_warned) = outcome(as_vectors, vectors, dim, **kw), outcome(previous_as_vectors, vectors, dim, **kw)
    assert new_warned == old_warned
    if isinstance(old, str):
        assert isinstance(new, str) and new == old
    else:
        assert isinstance(new, np.ndarray) and new.dtype == np.float32 and new.flags.c_contiguous
        assert new.shape == old.shape and np.array_equal(new, old)
    return old


def test_queries_near_the_shortest_length_are_taken_or_refused_as_before():
    """Lengths a few float32 steps either side of 1e-3 (refused below it), and about the 2e-3 past
    which a query is settled by its squared length alone."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal((1, 8)).astype(np.float32)
    u /= np.linalg.norm(u)
    refused = 0
    for centre in (1e-3, 2e-3):
        c = np.float32(centre)
        steps = [c]
        for _ in range(300):
            steps = [np.nextafter(steps[0], np.float32(0)), *steps, np.nextafter(steps[-1], np.float32(1))]
        for s in steps:
            refused += isinstance(same_outcome(u * s, 8), str)
            refused += isinstance(same_outcome(np.concatenate([u, u * s, u]), 8), str)
    assert 0 < refused < 4 * 601  # both sides of the boundary were tried


@pytest.mark.parametrize("case", ["unit", "float64", "float16", "fortran", "strided", "zero", "nan", "inf", "-inf",
                                  "1e300", "huge32", "huge32+nan", "empty", "wrong dim", "ints", "1d"])
@pytest.mark.parametrize("enrolled", [False, True])
def test_odd_queries_and_references_are_checked_as_before(case, enrolled):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((3, 6))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    x = v.astype(np.float32)
    made = {"unit": lambda: x, "float64": lambda: v, "float16": lambda: v.astype(np.float16),
            "fortran": lambda: np.asfortranarray(x), "strided": lambda: np.repeat(x, 2, axis=0)[::2],
            "zero": lambda: np.concatenate([x, np.zeros((1, 6), np.float32)]),
            "nan": lambda: np.where(np.arange(6) == 2, np.nan, x).astype(np.float32),
            "inf": lambda: np.where(np.arange(6) == 2, np.inf, x).astype(np.float32),
            "-inf": lambda: np.where(np.arange(6) == 1, -np.inf, x).astype(np.float32),
            "1e300": lambda: np.full((1, 6), 1e300), "huge32": lambda: np.full((2, 6), 1e20, np.float32),
            "huge32+nan": lambda: np.array([[1e20] * 6, [np.nan] * 6], np.float32),
            "empty": lambda: np.zeros((0, 6), np.float32), "wrong dim": lambda: x[:, :5],
            "ints": lambda: np.ones((2, 6), np.int64), "1d": lambda: x[0]}[case]()
    same_outcome(made, 6, enrolled=enrolled)
    same_outcome(made, 6, enrolled=enrolled, fused=False)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), st.tuples(st.integers(0, 4), st.just(3)),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)
                  | st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 3e-4, 6e-4, 1e-3, 2e-3, 1e20])))
def test_any_query_array_is_checked_as_before(a):
    same_outcome(a, 3)


# ---- a gallery's search, every store and both scorings -----------------------------------
def uneven(seed: int) -> dict[str, np.ndarray]:
    """One class of 400 tight references, a few of 60, and the rest of 1 to 12 (enough for PQ's codes)."""
    rng = np.random.default_rng(seed)
    sizes = [400] + [60] * 5 + list(rng.integers(1, 13, 2000))
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), PQ_MIN + 100) + 1]
    out = {}
    for j, n in enumerate(sizes):
        v = rng.standard_normal(DIM) + (0.15 if j == 0 else 0.5) * rng.standard_normal((n, DIM))
        out[f"c{j}"] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    data = uneven(3)
    made = {}
    for factory in ("Flat", "HNSW32", "IVF64,PQ8"):
        g = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": DIM}, {"name": "none"}, 0.5),
                           tmp_path_factory.mktemp("g") / "g")
        for label, v in data.items():
            g.enroll(label, v)
        if factory != "Flat":
            g.reindex(factory)
        g.save()
        made[factory] = g
    rng = np.random.default_rng(4)
    near = np.concatenate([v[:2] for v in list(data.values())[:60]])
    near = near + 0.05 * rng.standard_normal(near.shape)
    queries = np.concatenate([near, rng.standard_normal((20, DIM))]).astype(np.float32)  # and far from every class
    return made, data, queries / np.linalg.norm(queries, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF64,PQ8"])
@pytest.mark.parametrize("scoring", ["nearest", "mean"])
def test_a_gallery_answers_as_it_did_on_every_store_and_scoring(galleries, monkeypatch, factory, scoring):
    """The same hits, labels and scores, bit for bit, as the previous ranking and query check gave
    through the same store requests (a second, deeper request included: queries inside the class of
    400), one query at a time and in a batch, for k below and past the first piece read."""
    made, _, queries = galleries
    g = made[factory]
    assert g.vectors.factory == factory
    asked, search = [], g.vectors.search
    monkeypatch.setattr(g.vectors, "search", lambda q, n, **kw: asked.append(len(q)) or search(q, n, **kw))
    g.scoring = scoring
    try:
        for k in (1, 5, 70):
            asked.clear()
            now = g.search(queries, k) + g.search(queries[:3], k) + [g.search(q[None], k)[0] for q in queries[::17]]
            if k == 5:  # asked again, deeper, for queries inside the class of 400 where work grows with depth
                assert (len(asked) > 2 + len(queries[::17])) == (scoring == "nearest" and factory != "Flat")
            with monkeypatch.context() as m:
                m.setattr(ranking, "_ranked", previous_ranked)
                m.setattr(gallery_module, "as_vectors", previous_as_vectors)
                before = g.search(queries, k) + g.search(queries[:3], k) + [g.search(q[None], k)[0] for q in queries[::17]]
            assert now == before
    finally:
        g.scoring = "nearest"


@pytest.mark.parametrize("k", [1, 5, 70])
def test_an_exact_gallery_answers_as_exact_deep_search(galleries, k):
    """Flat against every reference scored in numpy: the k nearest references and the k labels by
    their best reference (to float rounding: FAISS and numpy add in another order)."""
    made, data, queries = galleries
    vecs, labels = np.concatenate(list(data.values())), [lab for lab, v in data.items() for _ in v]
    for q, r in zip(queries, made["Flat"].search(queries, k)):
        s = vecs @ q
        order = np.argsort(-s, kind="stable")
        best: dict[str, float] = {}
        for i in order:
            best.setdefault(labels[i], float(s[i]))
        want = sorted(best, key=lambda lab: -best[lab])[:k]
        assert [h.id for h in r.hits] == order[:k].tolist() or np.allclose([h.score for h in r.hits], s[order[:k]], atol=1e-6)
        assert [lab for lab, _ in r.labels] == want
        assert [s for _, s in r.labels] == pytest.approx([best[lab] for lab in want], abs=1e-5)
