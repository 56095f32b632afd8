"""Labels ranked from a store asked as little as it takes: a gallery with one large class (a gesture
enrolled from a whole video) answers as brute force does, and asks deep only when it must."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byakugan.index.counts import LabelCounts, Members
from byakugan.index.ranking import Reference, search
from byakugan.index.vectors import FlatStore

DIM = 16


class Counting:
    """An exact store that records how deep each search asked, taken for an index whose work grows
    with depth (HNSW) so that the answers can be checked against brute force."""

    def __init__(self, store, factory: str = "HNSW32"):
        self.store, self.asked, self.factory = store, [], factory

    def search(self, queries, k):
        self.asked.append((len(queries), k))
        return self.store.search(queries, k)


class LeavesOut(Counting):
    """An exact store taken for IVF-PQ, which can leave ids out of a search (exclude)."""

    def __init__(self, store):
        super().__init__(store, "IVF64,PQ16")

    def search(self, queries, k, exclude=None):
        self.asked.append((len(queries), k) if exclude is None else (len(queries), k, len(exclude)))
        s, i = self.store.search(queries, len(self.store))
        keep = ~np.isin(i, np.asarray([] if exclude is None else exclude, np.int64))
        out_s, out_i = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32), np.full((len(queries), k), -1)
        for q in range(len(queries)):
            row_s, row_i = s[q][keep[q]][:k], i[q][keep[q]][:k]
            out_s[q, :len(row_s)], out_i[q, :len(row_i)] = row_s, row_i
        return out_s, out_i


def gallery(sizes: list[int], seed: int, dim: int = DIM, spread: tuple = (), away: bool = False):
    """away: the first class on the far side of all the others (it never stands between them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim)).astype(np.float32)
    if away:  # the others share a direction, the first class has its opposite
        common = rng.standard_normal(dim).astype(np.float32)
        centres[1:] += 2 * common
        centres[0] = -common
    labels = [f"c{j}" for j, n in enumerate(sizes) for _ in range(n)]
    spreads = list(spread) + [0.7] * (len(sizes) - len(spread))
    vecs = np.concatenate([centres[j] + spreads[j] * rng.standard_normal((n, dim)).astype(np.float32)
                           for j, n in enumerate(sizes)])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = FlatStore.empty(dim)
    store.add(np.arange(len(vecs)), vecs)
    refs = {i: Reference(i, lab, f"f{i}.jpg", "2026-01-01T00:00:00Z") for i, lab in enumerate(labels)}
    return store, refs, vecs, labels, centres


def brute(vecs, labels, q, k):
    s = vecs @ q
    order = np.argsort(-s, kind="stable")
    best: dict[str, float] = {}
    for i in order:
        best.setdefault(labels[i], float(s[i]))
    return [i for i in order[:k]], sorted(best, key=lambda lab: -best[lab])[:k]


@settings(max_examples=40, deadline=None)
@given(big=st.lists(st.integers(20, 300), min_size=1, max_size=3), small=st.integers(1, 5),
       classes=st.integers(0, 30), k=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_labels_and_hits_as_brute_force(big, small, classes, k, seed):
    """Fewer labels than k too, and several large classes (the deep pass bounds its depth by the
    largest class it has not found yet)."""
    store, refs, vecs, labels, centres = gallery(big + [small] * classes, seed)
    rng = np.random.default_rng(seed + 1)
    queries = centres[rng.integers(0, len(centres), 12)] + 0.5 * rng.standard_normal((12, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for spy in (Counting(store), LeavesOut(store)):  # the second asked past the labels it has found
        for q, r in zip(queries, search(spy, refs, queries, k)):
            want_hits, want_labels = brute(vecs, labels, q, k)
            assert [h.id for h in r.hits] == want_hits
            assert [lab for lab, _ in r.labels] == want_labels
            assert [s for _, s in r.labels] == pytest.approx([max(float(vecs[i] @ q) for i in refs if labels[i] == lab)
                                                              for lab in want_labels], abs=1e-5)


def test_one_large_class_makes_only_its_own_queries_deep():
    # a tight class: one pose, many frames
    store, refs, vecs, labels, centres = gallery([2000] + [5] * 100, seed=3, dim=128, spread=(0.1,))
    spy = Counting(store)
    near_small = centres[1:41] + 0.05
    near_small /= np.linalg.norm(near_small, axis=1, keepdims=True)
    search(spy, refs, near_small, 5)
    assert spy.asked == [(40, 32)]  # what 5 labels of a few references each take, not 5 x 2000
    spy.asked.clear()
    near_big = vecs[:3]
    got = search(spy, refs, np.concatenate([near_big, near_small[:2]]), 5)
    # Only the three queries inside the large class go deep, and only past its 2,000 references and
    # 4 classes of 5 more: not 5 x 2,000.
    assert spy.asked == [(5, 32), (3, 2020)]
    assert all(len(r.labels) == 5 for r in got) and got[0].labels[0][0] == "c0"


def test_an_index_that_leaves_ids_out_is_asked_past_the_large_class_not_through_it():
    store, refs, vecs, labels, centres = gallery([2000] + [5] * 100, seed=3, dim=128, spread=(0.1,))
    spy = LeavesOut(store)
    near_small = centres[1:3] + 0.05
    got = search(spy, refs, np.concatenate([vecs[:3], near_small / np.linalg.norm(near_small, axis=1, keepdims=True)]), 5)
    # 4 classes of 5 past the 2,000 references it leaves out, not 2,020 deep
    assert spy.asked == [(5, 32), (3, 20, 2000)]
    assert all(len(r.labels) == 5 and len({lab for lab, _ in r.labels}) == 5 for r in got)
    assert [h.label for h in got[0].hits] == ["c0"] * 5 and got[0].labels[0][0] == "c0"
    # Where the labels found hold less than the rest of the depth (another class as large lies below),
    # leaving them out saves little: asked through them, as before.
    store, refs, vecs, labels, centres = gallery([60, 60] + [5] * 100, seed=8, dim=64, spread=(0.1, 0.1))
    spy = LeavesOut(store)
    got = search(spy, refs, vecs[:1], 5)
    assert spy.asked == [(1, 32), (1, 300)] and len(got[0].labels) == 5


class Approximate(LeavesOut):
    """An index that misses some references in its first answer (as IVF-PQ may) and keeps one id it
    was told to leave out: the merged labels must still be distinct and in score order."""

    def __init__(self, store, missed):
        super().__init__(store)
        self.missed = set(missed)

    def search(self, queries, k, exclude=None):
        s, i = super().search(queries, k + len(self.missed) + 1, exclude)
        if exclude is None:
            keep = ~np.isin(i, list(self.missed))
        else:  # the best left-out id comes back, at the top
            all_s, all_i = self.store.search(queries, len(self.store))
            at = np.isin(all_i, np.asarray(exclude)).argmax(1)[:, None]
            s = np.concatenate([np.take_along_axis(all_s, at, 1), s], 1)
            i = np.concatenate([np.take_along_axis(all_i, at, 1), i], 1)
            keep = np.ones_like(i, bool)
        rows = [(row_s[m][:k], row_i[m][:k]) for row_s, row_i, m in zip(s, i, keep)]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def test_labels_asked_past_the_found_ones_are_merged_in_score_order_without_repeats():
    """Two look-alikes of 5 tight references sit on the large class's centre, nearer the query than
    its 400; the first answer misses the better look-alike, so it comes from the second request
    and must go first."""
    rng = np.random.default_rng(9)
    centre, dim = rng.standard_normal(64).astype(np.float32), 64
    parts = [centre + 0.1 * rng.standard_normal((400, dim)), centre + 0.03 * rng.standard_normal((5, dim)),
             centre + 0.03 * rng.standard_normal((5, dim))]
    parts += [rng.standard_normal(dim) + 0.7 * rng.standard_normal((5, dim)) for _ in range(40)]
    vecs = np.concatenate(parts).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["big"] * 400 + ["a"] * 5 + ["b"] * 5 + [f"c{j}" for j in range(40) for _ in range(5)]
    store = FlatStore.empty(dim)
    store.add(np.arange(len(vecs)), vecs)
    refs = {i: Reference(i, lab, "x", "2026-01-01T00:00:00Z") for i, lab in enumerate(labels)}
    q = centre[None] / np.linalg.norm(centre)
    _, want = brute(vecs, labels, q[0], 5)
    assert set(want[:2]) == {"a", "b"}
    spy = Approximate(store, [i for i in refs if labels[i] == want[0]])
    got = search(spy, refs, q, 5)[0]
    assert len(spy.asked) == 2 and len(spy.asked[1]) == 3  # asked past "big" and the other look-alike
    assert [lab for lab, _ in got.labels] == want
    assert [s for _, s in got.labels] == sorted((s for _, s in got.labels), reverse=True)


def test_members_are_found_once_per_revision_of_the_references():
    refs = {i: Reference(i, "ab"[i % 2], "x", "2026-01-01T00:00:00Z") for i in range(6)}
    m = Members(refs, revision=3)
    assert m.of(["b", "a"]).tolist() == [1, 3, 5, 0, 2, 4] and m.of([]).tolist() == []
    assert Members.current(m, refs, 3) is m
    assert Members.current(m, refs, 4) is not m and Members.current(m, dict(refs), 3) is not m  # an edit; a clone
    assert Members.current(None, refs, 3).of(["a"]).tolist() == [0, 2, 4]


def test_class_means_ask_only_for_the_hits():
    store, refs, vecs, labels, centres = gallery([300] + [5] * 20, seed=4)
    spy = Counting(store)
    names = sorted(set(labels))
    P = np.stack([vecs[[i for i in refs if labels[i] == n]].mean(0) for n in names])
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    r = search(spy, refs, vecs[:2], 5, (names, P))
    assert spy.asked == [(2, 5)] and len(r[0].hits) == 5 and len(r[0].labels) == 5


def test_classes_alike_in_size_are_asked_once_as_deep_as_they_need():
    """Every class of 12 tight references: 5 labels lie within 60, and one request of 60 finds them
    (asking 32 first would ask every query twice)."""
    store, refs, vecs, labels, centres = gallery([12] * 200, seed=5, dim=64, spread=(0.1,) * 200)
    spy = Counting(store)
    got = search(spy, refs, vecs[::120], 5)
    assert spy.asked == [(20, 60)] and all(len(r.labels) == 5 for r in got)


class Short(Counting):
    """A store whose search comes back with fewer results than asked (Milvus HNSW where references
    were removed), the rest below them."""

    def search(self, queries, k):
        self.asked.append((len(queries), k))
        s, i = self.store.search(queries, k)
        i, s = i.copy(), s.copy()
        i[:, max(1, k // 3):], s[:, max(1, k // 3):] = -1, -np.finfo(np.float32).max
        return s, i


def test_a_short_answer_is_asked_again_unless_an_ivf_index_gave_it():
    store, refs, vecs, labels, centres = gallery([300] + [5] * 50, seed=6, dim=64, spread=(0.1,))
    hnsw = Short(store, "HNSW16")
    search(hnsw, refs, vecs[:2], 5)
    assert hnsw.asked == [(2, 32), (2, 320)]
    ivf = Short(store, "IVF64,PQ16")  # the lists it probed hold no more
    search(ivf, refs, vecs[:2], 5)
    assert ivf.asked == [(2, 32)]


def test_nothing_is_asked_again_once_every_label_is_found():
    """12 labels and 20 asked for: a query whose first answer holds all 12 is done."""
    store, refs, vecs, labels, centres = gallery([300] + [2] * 11, seed=7, dim=64, spread=(0.1,), away=True)
    spy = Counting(store)
    got = search(spy, refs, vecs[300:], 20)
    assert spy.asked == [(22, 80)] and all(len(r.labels) == 12 for r in got)
    spy.asked.clear()
    search(spy, refs, vecs[:1], 20)  # inside the large class: the others lie past all 300 of its references
    assert spy.asked == [(1, 80), (1, 322)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(-3, 6)), max_size=40))
def test_label_counts_keep_their_sizes_through_edits(edits):
    """The largest class, the typical one and the largest among the rest, kept as edits go, are
    those counted afresh (edits as the gallery makes them: add, subtract to zero, pop, rename)."""
    counts = LabelCounts({"a": 3, "b": 1})
    for label, n in edits:
        if n > 0:
            counts[label] += n
        elif n < 0 and label in counts:
            counts -= Counter({label: -n})
        elif n == 0 and label in counts:
            counts["z" + label] = counts.pop(label)
        fresh = sorted(counts.values())
        assert counts.largest() == max(fresh, default=0)
        assert counts.typical() == (fresh[math.ceil(0.9 * len(fresh)) - 1] if fresh else 0)
        found = [lab for lab in counts if lab < "d"]
        assert counts.largest_except(found) == max((c for lab, c in counts.items() if lab not in found), default=0)


def test_flat_reads_its_vectors_once():
    """A Flat index reads every vector whatever it is asked: one pass, as deep as labels need."""
    store, refs, vecs, labels, centres = gallery([2000] + [5] * 100, seed=3, dim=128, spread=(0.1,))
    spy = Counting(store, "Flat")
    search(spy, refs, np.concatenate([vecs[:3], vecs[2000:2002]]), 5)
    assert spy.asked == [(5, 2500)]
