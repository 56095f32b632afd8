"""Index types by FAISS factory string (Gallery.reindex, `byakugan reindex`), in the faiss contrib
style: seeded tiny data; search, save, load, search again, compare."""

import numpy as np
import pytest

from tests.conftest import disk_state

from byakugan.index import reindex
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.settings import GallerySettings
from byakugan.ui.cli import main

DIM = 32


def clustered(n_labels=20, per=15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_labels, DIM))
    out = {}
    for i in range(n_labels):
        v = centres[i] + 0.35 * rng.standard_normal((per, DIM))
        out[f"c{i}"] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def gallery(path, data):
    g = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": DIM}, {"name": "none"}, 0.5), path)
    for label, v in data.items():
        g.enroll(label, v)
    return g


def top_labels(g, queries):
    return [r.labels[0][0] for r in g.search(queries, k=3)]


def test_hnsw_answers_like_exact_and_survives_save_load_and_removal(tmp_path):
    data = clustered()
    g = gallery(tmp_path / "g", data)
    queries = np.concatenate([v[:3] + 0.05 for v in data.values()])
    exact = top_labels(g, queries)
    recall = g.reindex("HNSW32")
    assert g.vectors.factory == "HNSW32" and recall >= 0.95
    approx = top_labels(g, queries)
    assert np.mean([a == b for a, b in zip(exact, approx)]) >= 0.95
    g.save()
    again = Gallery.open(tmp_path / "g")
    assert again.vectors.factory == "HNSW32" and top_labels(again, queries) == approx
    removed = [r.id for r in again.references("c3")]
    again.remove("c3")  # HNSW cannot remove: rebuilt without them
    hits = {h.id for r in again.search(queries, k=5) for h in r.hits}
    assert not hits & set(removed) and len(again) == len(g) - 15 and again.vectors.factory == "HNSW32"
    assert np.allclose(again.embeddings([0]), data["c0"][:1], atol=1e-6)  # vectors come back exactly


def test_ivf_answers_like_exact_removes_in_place_and_survives_save_load(tmp_path):
    data = clustered(per=16)
    g = gallery(tmp_path / "g", data)
    queries = np.concatenate([v[:3] + 0.05 for v in data.values()])
    exact = top_labels(g, queries)
    recall = g.reindex("IVF08,Flat")  # 320 references, 8 lists of which 8 are searched: exact in effect
    assert g.vectors.factory == "IVF8,Flat" and recall == 1.0 and top_labels(g, queries) == exact
    g.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    again = Gallery.open(tmp_path / "g")
    assert again.vectors.factory == "IVF8,Flat" and top_labels(again, queries) == exact
    removed = [r.id for r in again.references("c3")]
    again.remove("c3")
    again.enroll("c3b", data["c3"][:5])  # added after the checkpoint: read from the vector file's tail
    again.save()
    assert list((tmp_path / "g").glob("index.*.faiss")) == [checkpoint]  # a removal rewrites no index
    third = Gallery.open(tmp_path / "g")
    hits = {h.id for r in third.search(queries, k=5) for h in r.hits}
    assert not hits & set(removed) and len(third) == len(g) - 11 and third.labels()["c3b"] == 5
    assert np.allclose(third.embeddings([0]), data["c0"][:1], atol=1e-6)  # vectors come back exactly
    assert third.search(data["c3"][6:7], k=1)[0].labels[0][0] == "c3b"


def test_ivf_refuses_a_gallery_too_small_for_its_lists_in_one_line(tmp_path, capsys):
    gallery(tmp_path / "g", clustered(n_labels=3, per=4)).save()
    before = disk_state(tmp_path / "g")
    assert main(["reindex", str(tmp_path / "g"), "IVF64,Flat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "12 references cannot train 64 lists; an IVF index needs at least 39" in err[0]
    assert disk_state(tmp_path / "g") == before
    assert main(["reindex", str(tmp_path / "g"), "IVF1,Flat"]) == 2  # one list: no fewer to use
    assert "cannot train 1 list; an IVF index needs at least 39 references a list (39 here); use Flat or HNSW32" \
        in capsys.readouterr().err
    gallery(tmp_path / "empty", clustered(n_labels=1, per=1)).save()
    assert main(["reindex", str(tmp_path / "empty"), "HNSW32"]) == 0  # one reference: nothing to measure recall on
    assert "1 references in a HNSW32 index; no recall measured" in capsys.readouterr().out
    g = Gallery.open(tmp_path / "g")
    g.reindex("auto")
    with pytest.raises(GalleryError):
        g.reindex("IVF1,Flat")
    g.save()
    import sqlite3

    with sqlite3.connect(tmp_path / "g" / "gallery.db") as con:  # a refused reindex left the choice as it was
        assert con.execute("SELECT value FROM settings WHERE key = 'index'").fetchone() == ('"auto"',)


def test_an_ivf_gallery_that_probes_only_some_lists_still_answers_and_calibrates():
    """With many lists and few probed, a reference may find no other class near it, and a query
    near removed classes may find nothing at all: the calibration skips the first, and a search
    answers "unknown" for the second, rather than failing."""
    from byakugan.index import confidence

    data = clustered(n_labels=20, per=500)
    g = gallery(None, data)
    g.reindex("IVF256,Flat")
    cal = confidence.calibrate(g, lambda v: (v, None))
    assert cal is not None
    for label in list(data)[1:]:
        g.remove(label)
    results = g.search(data["c5"][:20] + 0.01, k=3)
    empty = [r for r in results if not r.labels]
    assert empty, "the test needs a query whose probed lists are empty"
    m = g.match(empty[0])
    assert not m.known and m.score == -1.0


def test_auto_is_exact_while_small_then_hnsw(tmp_path, monkeypatch):
    monkeypatch.setattr(reindex, "AUTO_HNSW", 100)
    data = clustered(n_labels=10, per=15)
    g = gallery(tmp_path / "g", dict(list(data.items())[:6]))
    assert g.reindex("auto") == 1.0 and g.vectors.factory == "Flat"
    for label, v in list(data.items())[6:]:
        g.enroll(label, v)
    assert len(g) == 150 and g.vectors.factory == "HNSW32"
    g.save()
    assert Gallery.open(tmp_path / "g").vectors.factory == "HNSW32"
    monkeypatch.undo()
    assert [reindex.resolve("auto", n) for n in (49_999, 50_000, 100_000, 100_001, 1_000_000)] == \
        ["Flat", "HNSW32", "HNSW32", "IVF512,Flat", "IVF4096,Flat"]  # HNSW's recall fell at a million


@pytest.mark.parametrize("bad", ["IVF256,SQ8", "HNSW2", "IVF0,Flat", "IVF8", "Flat;rm -rf", "PQ16", ""])
def test_a_factory_a_gallery_cannot_use_is_one_line_and_changes_nothing(tmp_path, capsys, bad):
    g = gallery(tmp_path / "g", clustered(n_labels=3, per=4))
    g.save()
    before = disk_state(tmp_path / "g")
    assert main(["reindex", str(tmp_path / "g"), bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one a gallery can use; valid: Flat" in err[0]
    assert disk_state(tmp_path / "g") == before
    with pytest.raises(GalleryError):
        g.reindex(bad)


def test_reindex_command_reports_recall(tmp_path, capsys):
    gallery(tmp_path / "g", clustered()).save()
    assert main(["reindex", str(tmp_path / "g"), "HNSW16"]) == 0
    out = capsys.readouterr().out
    assert "in a HNSW16 index" in out and "recall@1 by label against exact search" in out
    assert Gallery.open(tmp_path / "g").vectors.factory == "HNSW16"


def test_an_ivf_checkpoint_keeps_lists_not_vectors_and_old_whole_ones_still_open(tmp_path, monkeypatch):
    """The vectors of an IVF gallery are in its vector file once: its checkpoint holds the centroids
    and each reference's list, and opening puts every row it covers back in the list it was in (a row in
    another list would change which queries find it). A folder
    whose checkpoint is a whole index (saved before) opens the same."""
    from byakugan.index import checkpoint as cp
    from byakugan.index.vectors import FlatStore

    data = clustered(per=16)
    queries = np.concatenate([v[:3] + 0.05 for v in data.values()])
    g = gallery(tmp_path / "g", data)
    g.reindex("IVF4,Flat")
    before = top_labels(g, queries)
    g.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    blob = checkpoint.read_bytes()
    assert blob.startswith(cp.IVF) and len(blob) < sum(v.nbytes for v in data.values()) / 4
    again = Gallery.open(tmp_path / "g")
    pairs = lambda store: sorted(map(tuple, cp.read(cp.write(store), "IVF4,Flat", DIM)[1].tolist()))  # noqa: E731
    assert pairs(again.vectors) == pairs(g.vectors) and top_labels(again, queries) == before
    with pytest.raises(ValueError, match="wrong length"):
        cp.read(blob[:-3], "IVF4,Flat", DIM)

    monkeypatch.setattr(cp, "write", FlatStore.to_bytes)  # the first kind: the whole index
    g.reindex("IVF4,Flat")
    g.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    assert not checkpoint.read_bytes().startswith(cp.IVF)
    monkeypatch.undo()
    old = Gallery.open(tmp_path / "g")
    assert old.vectors.factory == "IVF4,Flat" and len(old) == len(g)
    old.remove("c5")
    old.save()  # the next save writes lists in place of the whole index: the vectors once on disk
    [rewritten] = (tmp_path / "g").glob("index.*.faiss")
    assert rewritten != checkpoint and rewritten.read_bytes().startswith(cp.IVF)
    assert "c5" not in Gallery.open(tmp_path / "g").labels()


def test_ivf_lists_filled_from_a_checkpoint_match_the_index_and_refuse_a_missing_vector():
    from byakugan.index import checkpoint as cp
    from byakugan.index.vectors import FlatStore

    data = np.concatenate(list(clustered(per=16).values()))
    ids = np.arange(100, 100 + len(data))
    store = FlatStore.empty(DIM, "IVF4,Flat")
    store.train(data)
    store.add(ids, data)
    empty, pairs = cp.read(cp.write(store), "IVF4,Flat", DIM)
    late = np.arange(1000, 1005)  # added after the checkpoint: to their nearest lists
    cp.fill(empty, pairs, ids, [(ids[:200], data[:200]), (np.r_[ids[200:], late], np.r_[data[200:], data[:5]])])
    assert len(empty) == len(data) + 5 and np.allclose(empty.get(ids), data) and np.allclose(empty.get(late), data[:5])
    assert (empty.search(data[50:70], 3)[1] == store.search(data[50:70], 3)[1]).all()  # c3, c4: no copies late
    again, pairs = cp.read(cp.write(store), "IVF4,Flat", DIM)
    with pytest.raises(ValueError, match="1 vectors the checkpoint lists are missing"):
        cp.fill(again, pairs, ids, [(ids[1:], data[1:])])


def test_an_ivf_gallery_whose_new_rows_fill_a_read_of_their_own_opens(tmp_path):
    """Every reference removed, five enrolled (no new checkpoint is due): the rows read when
    opening are all newer than the checkpoint."""
    data = clustered(per=16)
    g = gallery(tmp_path / "g", data)
    g.reindex("IVF4,Flat")
    g.save()
    for label in list(data):
        g.remove(label)
    g.enroll("late", data["c0"][:5])
    g.save()
    again = Gallery.open(tmp_path / "g")
    assert again.labels() == {"late": 5} and again.search(data["c0"][5:6], k=1)[0].labels[0][0] == "late"


@pytest.mark.parametrize("damage, message", [
    (lambda p: np.c_[p[:, 0], np.full(len(p), 4)], "a list outside 0..3"),
    (lambda p: np.r_[p, p[:1]], r"listing id \d+ twice"),
])
def test_a_checkpoint_with_impossible_lists_is_refused(damage, message):
    from byakugan.index import checkpoint as cp
    from byakugan.index.vectors import FlatStore

    data = np.concatenate(list(clustered(per=16).values()))
    store = FlatStore.empty(DIM, "IVF4,Flat")
    store.train(data)
    store.add(np.arange(100, 100 + len(data)), data)
    blob = cp.write(store)
    size = int.from_bytes(blob[len(cp.IVF):len(cp.IVF) + 8], "little")
    head = len(cp.IVF) + 8 + size
    pairs = np.frombuffer(blob, "<i8", offset=head).reshape(-1, 2)
    with pytest.raises(ValueError, match=message):
        cp.read(blob[:head] + np.ascontiguousarray(damage(pairs), "<i8").tobytes(), "IVF4,Flat", DIM)
    with pytest.raises(ValueError, match="dimension 32 for a IVF4,Flat index of dimension 64"):
        cp.read(blob, "IVF4,Flat", 64)


def test_a_checkpoint_that_lost_some_lists_is_refused_in_one_line(tmp_path, capsys):
    """Pairs cut off the end, the checksum made to match: not a gallery with rows silently moved."""
    import hashlib
    import json
    import sqlite3

    g = gallery(tmp_path / "g", clustered(per=16))
    g.reindex("IVF4,Flat")
    g.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    blob = checkpoint.read_bytes()[:-16 * 10]
    checkpoint.write_bytes(blob)
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    storage = json.loads(con.execute("SELECT value FROM settings WHERE key = 'storage'").fetchone()[0])
    storage["checkpoint_sha256"] = hashlib.sha256(blob).hexdigest()
    con.execute("UPDATE settings SET value = ? WHERE key = 'storage'", (json.dumps(storage),))
    con.commit()
    con.close()
    assert main(["labels", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "lacks some references (damaged)" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_gallery_saved_in_a_later_format_is_refused_in_one_line(tmp_path, capsys):
    import sqlite3

    gallery(tmp_path / "g", clustered(n_labels=3, per=4)).save()
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    con.execute("UPDATE settings SET value = '4' WHERE key = 'version'")
    con.commit()
    con.close()
    assert main(["labels", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert "format version 4 is not one this byakugan reads (2 or 3)" in err and len(err.splitlines()) == 1


def test_an_hnsw_checkpoint_keeps_the_graph_not_the_vectors_and_opens_to_the_same_answers(tmp_path):
    """The graph and the order of its vectors; opening puts each row of the vector file at its
    place, so the reopened index is the same graph over the same vectors: the same ids and scores."""
    from byakugan.index import checkpoint as cp

    data = clustered(per=16)
    queries = np.concatenate([v[:3] + 0.05 for v in data.values()])
    g = gallery(tmp_path / "g", data)
    g.reindex("HNSW16")
    g.save()
    late = np.concatenate([v[:2] * 0.9 + 0.1 for v in data.values()])
    g.enroll("late", late / np.linalg.norm(late, axis=1, keepdims=True))  # after the checkpoint: added on opening
    g.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    blob = checkpoint.read_bytes()
    assert blob.startswith(cp.HNSW) and data["c7"][3].tobytes() not in blob
    want = g.vectors.search(queries, 5)
    again = Gallery.open(tmp_path / "g")
    assert again.vectors.factory == "HNSW16" and len(again) == len(g)
    got = again.vectors.search(queries, 5)
    assert (got[1] == want[1]).all() and np.allclose(got[0], want[0], atol=1e-6)
    assert np.array_equal(again.embeddings([r.id for r in again.references("c2")]), data["c2"])
    again.remove("c4")  # rebuilt without them, the checkpoint written again
    again.save()
    reopened = Gallery.open(tmp_path / "g")
    assert "c4" not in reopened.labels() and (reopened.vectors.search(queries, 5)[1] == again.vectors.search(queries, 5)[1]).all()


def test_an_hnsw_gallery_of_format_2_with_a_whole_index_opens_and_is_rewritten_as_3(tmp_path, monkeypatch):
    import sqlite3

    from byakugan.index import checkpoint as cp
    from byakugan.index.vectors import FlatStore

    data = clustered(per=16)
    queries = np.concatenate([v[:3] + 0.05 for v in data.values()])
    g = gallery(tmp_path / "g", data)
    g.reindex("HNSW32")
    monkeypatch.setattr(cp, "write", FlatStore.to_bytes)  # what format 2 wrote: the whole index
    g.save()
    monkeypatch.undo()
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    con.execute("UPDATE settings SET value = '2' WHERE key = 'version'")
    con.commit()
    con.close()
    old = Gallery.open(tmp_path / "g")
    assert (old.vectors.search(queries, 3)[1] == g.vectors.search(queries, 3)[1]).all()
    old.enroll("late", data["c0"][:2])  # a save that would append only: it also writes the graph checkpoint
    old.save()
    [checkpoint] = (tmp_path / "g").glob("index.*.faiss")
    assert checkpoint.read_bytes().startswith(cp.HNSW)
    version = sqlite3.connect(tmp_path / "g" / "gallery.db").execute(
        "SELECT value FROM settings WHERE key = 'version'").fetchone()[0]
    again = Gallery.open(tmp_path / "g")
    assert version == "3" and again.labels()["late"] == 2
    assert (again.vectors.search(queries, 3)[1] == old.vectors.search(queries, 3)[1]).all()


def hnsw_store(n_labels=6):
    from byakugan.index.vectors import FlatStore

    data = np.concatenate(list(clustered(n_labels=n_labels, per=10).values()))
    ids = np.arange(500, 500 + len(data))[::-1].copy()  # the graph's order is not the ids' order
    store = FlatStore.empty(DIM, "HNSW8")
    store.add(ids, data)
    return store, ids, data


def test_hnsw_storage_filled_from_a_checkpoint_refuses_a_missing_or_repeated_vector():
    from byakugan.index import checkpoint as cp

    store, ids, data = hnsw_store()
    empty, slots = cp.read(cp.write(store), "HNSW8", DIM)
    cp.fill(empty, slots, ids, [(ids[:7], data[:7]), (np.r_[ids[7:], 9000], np.r_[data[7:], -data[:1]])])
    assert len(empty) == len(ids) + 1 and np.array_equal(empty.get(ids), data)
    assert (empty.search(data[:9], 4)[1] == store.search(data[:9], 4)[1]).all()
    for blocks, message in (([(ids[1:], data[1:])], "1 vectors the checkpoint lists are missing"),
                            ([(ids, data), (ids[:1], data[:1])], f"id {ids[0]} given twice")):
        again, slots = cp.read(cp.write(store), "HNSW8", DIM)
        with pytest.raises(ValueError, match=message):
            cp.fill(again, slots, ids, blocks)


def test_an_hnsw_checkpoint_with_links_outside_its_vectors_or_of_another_index_is_refused():
    import faiss

    from byakugan.index import checkpoint as cp

    store, ids, data = hnsw_store()
    blob = cp.write(store)
    with pytest.raises(ValueError, match="HNSW8 for a HNSW32 index"):
        cp.read(blob, "HNSW32", DIM)
    with pytest.raises(ValueError, match="dimension 32 .* for a HNSW8 index of dimension 64"):
        cp.read(blob, "HNSW8", 64)
    with pytest.raises(ValueError, match="wrong length"):
        cp.read(blob[:-3], "HNSW8", DIM)

    def damaged(change) -> bytes:
        """The checkpoint of a copy of the store's graph after `change(inner HNSW index)`."""
        clone = faiss.clone_index(store.faiss_index)  # kept: the inner index lives as long as it does
        inner = faiss.downcast_index(clone.index)
        change(inner)
        writer = faiss.VectorIOWriter()
        faiss.write_index(inner, writer, faiss.IO_FLAG_SKIP_STORAGE)
        graph = faiss.vector_to_array(writer.data).tobytes()
        return b"".join([cp.HNSW, len(graph).to_bytes(8, "little"), graph, np.ascontiguousarray(ids, "<i8").tobytes()])

    def link_outside(inner):
        faiss.rev_swig_ptr(inner.hnsw.neighbors.data(), inner.hnsw.neighbors.size())[5] = len(ids) + 7

    def entry_below_the_top(inner):  # searched from there, FAISS reads past its buffers
        levels = faiss.vector_to_array(inner.hnsw.levels)
        inner.hnsw.entry_point = int(np.flatnonzero(levels < levels.max())[0])

    def no_entry(inner):  # every search would find nothing
        inner.hnsw.entry_point = -1

    def l2(inner):
        inner.metric_type = faiss.METRIC_L2

    for change, message in ((link_outside, "out of range|links or levels do not fit its 60 vectors"),  # FAISS's or ours
                            (entry_below_the_top, "links or levels do not fit its 60 vectors"),
                            (no_entry, "links or levels do not fit its 60 vectors"),
                            (l2, "another metric than inner product")):
        with pytest.raises(ValueError, match=message):
            cp.read(damaged(change), "HNSW8", DIM)
    graph_at = len(cp.HNSW) + 8
    huge = bytearray(blob)
    second = graph_at + 45 + 8 * int.from_bytes(blob[graph_at + 37:graph_at + 45], "little")
    huge[second + 5] = 0x7F  # the length of the second array: far beyond the file (FAISS would allocate it)
    with pytest.raises(ValueError, match="an array longer than its bytes"):
        cp.read(bytes(huge), "HNSW8", DIM)


def test_back_to_an_automatic_threshold_the_model_s_is_in_force_not_the_last_hand_set_one(tmp_path):
    """Until its references give one, an automatic gallery uses the model's threshold; switching
    back from a hand-set one kept the hand-set value in force (and the page called it the model's)."""
    g = gallery(tmp_path / "g", clustered(n_labels=2, per=2))
    g.threshold = 0.9
    assert not g.threshold_auto and g.threshold == 0.9
    g.threshold_auto = True
    assert g.threshold == 0.5
    g.save()
    assert Gallery.open(tmp_path / "g").threshold == 0.5 and Gallery.open(tmp_path / "g").threshold_auto
