"""IVF-PQ galleries (index.quantised): codes in memory, exact vectors read from the vector file.
Seeded clustered data; search, save, load, search again, compare, as tests/test_reindex.py does."""

import numpy as np
import pytest

from tests.conftest import disk_state

from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.quantised import PQ_MIN, PQStore
from byakugan.index.vectors import IVF_TRAIN_ITERATIONS
from byakugan.ui.cli import main

from .test_reindex import DIM, clustered, gallery, top_labels


@pytest.fixture(scope="module")
def data():
    return clustered(n_labels=520, per=20)  # 10,400 references: PQ's codes need 9,984


def test_ivf_pq_answers_like_exact_with_exact_scores_and_vectors_and_survives_save_load(tmp_path, data):
    g = gallery(tmp_path / "g", data)
    assert len(g) >= PQ_MIN
    queries = np.concatenate([v[:1] + 0.05 for v in list(data.values())[:100]])
    exact = g.search(queries, k=3)
    recall = g.reindex("IVF64,PQ8")
    assert g.vectors.factory == "IVF64,PQ8" and recall >= 0.95
    approx = g.search(queries, k=3)
    assert np.mean([a.labels[0][0] == b.labels[0][0] for a, b in zip(exact, approx)]) >= 0.95
    # re-ranked on the exact vectors: a hit's score is its exact cosine, to float rounding
    same = [(a.hits[0].id, a.hits[0].score, b.hits[0].score) for a, b in zip(exact, approx) if a.hits[0].id == b.hits[0].id]
    assert len(same) >= 90 and all(abs(x - y) < 1e-5 for _, x, y in same)
    assert np.array_equal(g.embeddings([0, 5]), data["c0"][[0, 5]])  # vectors come back exactly, before a save ...
    g.save()
    again = Gallery.open(tmp_path / "g")
    assert again.vectors.factory == "IVF64,PQ8" and top_labels(again, queries) == top_labels(g, queries)
    assert np.array_equal(again.embeddings([0, 5]), data["c0"][[0, 5]])  # ... and after, from the vector file
    # edits: added vectors are exact before and after a save, removed ones are never answered
    extra = data["c2"][:5].copy()
    ids = again.enroll("new", extra)
    assert np.array_equal(again.embeddings(ids), extra)
    mixed = [ids[1], 5, ids[0], 0]  # unsaved and on file in one read, in the order asked
    assert np.array_equal(again.embeddings(mixed), np.stack([extra[1], data["c0"][5], extra[0], data["c0"][0]]))
    removed = [r.id for r in again.references("c3")]
    again.remove("c3")
    again.save()
    third = Gallery.open(tmp_path / "g")
    assert np.array_equal(third.embeddings(ids), extra) and len(third) == len(g) + 5 - 20
    hits = {h.id for r in third.search(np.concatenate([data["c3"], queries]), k=5) for h in r.hits}
    assert not hits & set(removed)
    assert top_labels(third, data["c2"][:5])[0] in ("c2", "new")
    # a bundle gets an exact index of the same vectors; and back to exact
    from byakugan.index.vectors import FlatStore

    shipped = FlatStore.from_bytes(third.vectors.to_bytes())
    assert shipped.factory == "Flat" and len(shipped) == len(third) and np.array_equal(shipped.get(ids), extra)
    assert third.reindex("Flat") == 1.0 and np.array_equal(third.embeddings(ids), extra)


def test_ivf_pq_refuses_what_it_cannot_be_in_one_line(tmp_path, capsys, data):
    small = gallery(tmp_path / "small", dict(list(data.items())[:10]))
    small.save()
    before = disk_state(tmp_path / "small")
    assert main(["reindex", str(tmp_path / "small"), "IVF4,PQ8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"a PQ index needs at least {PQ_MIN}" in err[0]
    assert main(["reindex", str(tmp_path / "small"), "IVF4,PQ5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must divide the dimension 32" in err[0]
    assert disk_state(tmp_path / "small") == before
    with pytest.raises(GalleryError, match="IVFn,PQm"):
        small.reindex("IVF4,PQ999")


def test_an_ivf_pq_gallery_opened_while_another_writes_reads_its_own_rows_and_saves_after(tmp_path, data):
    """A reader's exact vectors are the rows its snapshot named: a writer's appends and a
    compaction into a new vector file (the old one unlinked) do not change what it reads; and when
    it saves afterwards into that folder, it is told to open it again, nothing written."""
    g = gallery(tmp_path / "g", data)
    g.reindex("IVF32,PQ4")
    g.save()
    reader, writer = Gallery.open(tmp_path / "g"), Gallery.open(tmp_path / "g")
    probe = [0, 1, 2, 6000, 8000, 10000]
    want = reader.embeddings(probe)
    first = {p.name for p in (tmp_path / "g").glob("vectors.*.f32")}
    for label in list(data)[:300]:  # more removed than kept: the next save compacts the vector file
        writer.remove(label)
    writer.save()
    writer.enroll("more", data["c9"][:3])
    writer.save()
    assert {p.name for p in (tmp_path / "g").glob("vectors.*.f32")}.isdisjoint(first)  # compacted
    assert np.array_equal(reader.embeddings(probe), want)
    reader.threshold = 0.6
    before = disk_state(tmp_path / "g")
    with pytest.raises(GalleryError, match="another save changed it since this copy was opened"):
        reader.save()  # an older state, its rows numbered as a compacted file no longer numbers them: refused
    assert disk_state(tmp_path / "g") == before and np.array_equal(reader.embeddings(probe), want)
    reader.save(tmp_path / "copy")  # a copy it can still save, whole, from the vectors it reads
    assert np.array_equal(Gallery.open(tmp_path / "copy").embeddings(probe), want)


def test_ivf_pq_to_ivf_pq_copies_no_vector_the_file_has(tmp_path, data):
    g = gallery(tmp_path / "g", data)
    g.reindex("IVF32,PQ4")
    g.save()
    again = Gallery.open(tmp_path / "g")
    ids = again.enroll("fresh", data["c5"][:2])
    again.reindex("IVF16,PQ8")
    assert set(again.vectors._pending) == set(ids)  # only what the file does not hold yet
    assert np.array_equal(again.embeddings([0, *ids]), np.concatenate([data["c0"][:1], data["c5"][:2]]))
    again.remove_reference(0)
    with pytest.raises(GalleryError):
        again.embeddings([0])  # removed: not given back, as FlatStore gives none


def test_an_ivf_pq_checkpoint_listing_an_id_twice_is_refused(tmp_path, data):
    import faiss

    from byakugan.index import checkpoint as cp

    g = gallery(tmp_path / "g", dict(list(data.items())[:500]))
    g.reindex("IVF16,PQ4")
    index = faiss.clone_index(g.vectors.faiss_index)
    index.add_with_ids(data["c0"][:1], np.array([3], np.int64))
    with pytest.raises(ValueError, match="listing id 3 twice"):
        cp.read(cp.CODES + faiss.serialize_index(index).tobytes(), "IVF16,PQ4", DIM)


def test_ivf_pq_is_asked_past_a_large_class_with_its_ids_left_out(tmp_path, data):
    """A class enrolled from a whole video: a query inside it gets 5 labels (as exact search does)
    from a second request that leaves its 600 references out, not one that re-scores past them.
    With faiss.contrib.torch_utils imported (pytorch-metric-learning does, so training in the same
    process did), whose search takes no params."""
    import faiss.contrib.torch_utils  # noqa: F401
    g = gallery(tmp_path / "g", data)
    rng = np.random.default_rng(5)
    big = rng.standard_normal(DIM) + 0.1 * rng.standard_normal((600, DIM))
    big = (big / np.linalg.norm(big, axis=1, keepdims=True)).astype(np.float32)
    g.enroll("big", big)
    queries = big[:8] + 0.01
    exact = g.search(queries, k=5)
    g.reindex("IVF64,PQ8")
    left = [r.id for r in g.references("big")]
    _, ids = g.vectors.search(queries, 40, exclude=left)
    assert (ids >= 0).all() and not set(ids.ravel().tolist()) & set(left)
    got = g.search(queries, k=5)
    assert all([h.label for h in r.hits] == ["big"] * 5 and len({lab for lab, _ in r.labels}) == 5 for r in got)
    same = [[lab for lab, _ in a.labels] == [lab for lab, _ in b.labels] for a, b in zip(exact, got)]
    assert np.mean(same) >= 0.75, same
    # More of the class, enrolled after a search: left out too (ids not gathered again would let
    # them fill the second request, and fewer labels would come back).
    more = big.mean(0) + 0.02 * rng.standard_normal((400, DIM))
    g.enroll("big", (more / np.linalg.norm(more, axis=1, keepdims=True)).astype(np.float32))
    assert all(len({lab for lab, _ in r.labels}) == 5 for r in g.search(queries, k=5))
    g.rename("big", "video")  # the ids left out follow the references, not what they were called
    assert all(r.labels[0][0] == "video" and len({lab for lab, _ in r.labels}) == 5 for r in g.search(queries, k=5))


def test_ivf_pq_codes_trained_without_polysemous_numbering_answer_as_with_it(data):
    """FAISS's polysemous training (its default) only numbers each sub-quantiser's codes anew, for a
    Hamming filter no search here uses: a store trained without it (most of the training time) has
    the same centroids in another order and answers bit for bit alike, codes alone and re-ranked."""
    import faiss

    sample, threads = np.concatenate(list(data.values())), faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means alike in both
    try:
        ours = PQStore.trained(DIM, "IVF16,PQ4", sample)
        index = faiss.index_factory(DIM, "IVF16,PQ4", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.niter, ivf.cp.spherical = IVF_TRAIN_ITERATIONS, True
        assert ivf.do_polysemous_training
        shorter = faiss.PolysemousTraining()  # (fewer rounds than FAISS's 2 x 500,000: still a renumbering)
        shorter.n_iter, shorter.n_redo = 20_000, 1
        ivf.polysemous_training = shorter
        index.train(sample)
        theirs = PQStore.ready(index)
    finally:
        faiss.omp_set_num_threads(threads)
    ours_pq = faiss.downcast_index(faiss.extract_index_ivf(ours.faiss_index)).pq
    assert not faiss.downcast_index(faiss.extract_index_ivf(ours.faiss_index)).do_polysemous_training
    a, b = (faiss.vector_to_array(pq.centroids).reshape(4, 256, -1) for pq in (ours_pq, ivf.pq))
    assert not np.array_equal(a, b) and all(np.array_equal(np.unique(x, axis=0), np.unique(y, axis=0)) for x, y in zip(a, b))
    ids = np.arange(len(sample))
    ours.add(ids, sample)
    theirs.add(ids, sample)
    queries = sample[::37] + 0.05
    for search in (lambda s, k: s.search(queries, k), lambda s, k: s.faiss_index.search(queries, 4 * k)):
        for k in (1, 5, 50):
            (s1, i1), (s2, i2) = search(ours, k), search(theirs, k)
            assert np.array_equal(s1, s2) and np.array_equal(i1, i2)
