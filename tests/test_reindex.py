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


@pytest.mark.parametrize("bad", ["IVF256,PQ8", "HNSW2", "Flat;rm -rf", "PQ16", ""])
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
