"""Gallery behaviour on seeded tiny embeddings (fast, no model needed for most)."""

import json
import os

import numpy as np
import pytest

import byakugan.embedder as embedder
from byakugan.index import UNKNOWN, Gallery, GalleryError, ModelMismatchError, Pipeline, open_gallery
from byakugan.index import store

from .conftest import new_gallery, unit_rows

@pytest.fixture(scope="module")
def D(model) -> int:
    return model.dim


@pytest.fixture()
def gallery(model, tmp_path, D):
    _, g = new_gallery(model, tmp_path / "g")
    x = unit_rows(30, D, seed=1)
    for i, label in enumerate(["ame", "gura", "seal-tiger"]):
        g.enroll(label, x[i * 10 : (i + 1) * 10], sources=[f"{label}{j}.png" for j in range(10)])
    return g


def brute_force(g, q, k):
    refs = g.references()
    e = g.embeddings([r.id for r in refs])
    s = q @ e.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [[refs[j].label for j in row] for row in order], s


def test_search_save_load_search_identical(gallery, tmp_path, D):
    q = unit_rows(7, D, seed=2)
    before = gallery.search(q, k=4)
    labels, s = brute_force(gallery, q, 4)
    assert [[h.label for h in r.hits] for r in before] == labels
    np.testing.assert_allclose([[h.score for h in r.hits] for r in before], -np.sort(-s, axis=1)[:, :4], atol=1e-6)
    gallery.save()
    reopened = Gallery.open(tmp_path / "g")
    assert reopened.search(q, k=4) == before
    assert reopened.labels() == {"ame": 10, "gura": 10, "seal-tiger": 10}


def test_labels_ranked_by_best_reference(gallery):
    q = gallery.embeddings([25]) * 0.9 + gallery.embeddings([3]) * 0.1  # near a seal-tiger ref, then ame
    r = gallery.search(q.astype(np.float32), k=2)[0]
    assert [lab for lab, _ in r.labels] == ["seal-tiger", "ame"]
    assert r.labels[0][1] == r.hits[0].score


def test_match_applies_threshold(gallery, model, D):
    q = gallery.embeddings([12])
    pipe = Pipeline.create(model)
    assert pipe.match(gallery, q, threshold=0.99)[0].label == "gura"
    far = unit_rows(1, D, seed=9)
    m = pipe.match(gallery, far, threshold=0.5)[0]
    assert m.label == UNKNOWN and not m.known and m.nearest in gallery.labels()


def test_remove_rename_and_ids_are_stable(gallery, tmp_path, D):
    ids = [r.id for r in gallery.references("gura")]
    assert gallery.remove("ame") == 10
    assert [r.id for r in gallery.references("gura")] == ids
    gallery.remove_reference(ids[0])
    assert gallery.rename("gura", "Gawr Gura") == 9
    new = gallery.enroll("ame", unit_rows(1, D, seed=5))
    assert new == [30]  # ids are never reused
    gallery.save()
    g = Gallery.open(tmp_path / "g")
    assert g.labels() == {"Gawr Gura": 9, "ame": 1, "seal-tiger": 10}
    assert g.search(g.embeddings([ids[1]]), k=1)[0].hits[0].id == ids[1]


def test_bad_labels_and_ids(gallery, D):
    with pytest.raises(GalleryError, match=r"label 'zz': not in gallery .*labels: ame, gura, seal-tiger"):
        gallery.remove("zz")
    with pytest.raises(GalleryError, match="reserved"):
        gallery.enroll("Unknown", unit_rows(1, D))
    with pytest.raises(GalleryError, match=r"looks like 'unknown', .*U\+043E CYRILLIC SMALL LETTER O.*, which is reserved"):
        gallery.enroll("unkn\u043ewn", unit_rows(1, D))  # an answer that would read as unknown, and not be
    with pytest.raises(GalleryError, match="non-empty"):
        gallery.enroll("  ", unit_rows(1, D))
    with pytest.raises(GalleryError, match="already exists"):
        gallery.rename("ame", "gura")
    for space, name in (("\u00a0", "NO-BREAK SPACE"), ("\u3000", "IDEOGRAPHIC SPACE"), ("\u2028", "LINE SEPARATOR")):
        with pytest.raises(GalleryError, match=f"holds U\\+{ord(space):04X} \\({name}\\), which shows as a space or as nothing"):
            gallery.rename("ame", f"gu{space}ra")  # another label that would show as "gu ra"
    gallery.rename("ame", "gu ra")
    with pytest.raises(GalleryError, match="reference id 999"):
        gallery.remove_reference(999)
    with pytest.raises(GalleryError, match="dim 3"):
        gallery.search(np.ones((1, 3), np.float32))


def test_empty_and_missing_galleries(model, tmp_path, D):
    with pytest.raises(GalleryError, match="is empty"):
        new_gallery(model)[1].search(unit_rows(1, D))
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.open(tmp_path / "none")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GalleryError, match="not empty"):
        open_gallery(tmp_path / "other")


def test_crash_during_save_keeps_previous_state(gallery, tmp_path, monkeypatch):
    from byakugan.index import db

    gallery.save()
    before = Gallery.open(tmp_path / "g").labels()
    gallery.remove("ame")
    gallery.enroll("new", gallery.embeddings([gallery.references("gura")[0].id]))
    real_write = db.write_vectors

    def crash(*args, **kwargs):  # the new vectors reach the disk, the power goes before the commit
        real_write(*args, **kwargs)
        raise OSError("simulated power cut")

    monkeypatch.setattr(db, "write_vectors", crash)
    with pytest.raises(GalleryError, match="could not be saved \\(simulated power cut\\); nothing changed"):
        gallery.save()
    monkeypatch.undo()
    # The new vector was appended, but gallery.db still holds the old, complete state.
    (vectors,) = (tmp_path / "g").glob("vectors.*.f32")
    assert vectors.stat().st_size == 31 * gallery.dim * 4  # 30 saved rows, 1 appended
    assert Gallery.open(tmp_path / "g").labels() == before
    gallery.save()  # cuts off the uncommitted row and appends it again
    assert Gallery.open(tmp_path / "g").labels() == {"gura": 10, "new": 1, "seal-tiger": 10}
    assert vectors.stat().st_size == 31 * gallery.dim * 4  # removed rows stay until compaction


def test_damaged_files_are_reported(gallery, tmp_path):
    gallery.save()
    (vectors,) = (tmp_path / "g").glob("vectors.*.f32")
    with open(vectors, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(GalleryError, match="does not match its checksum"):
        Gallery.open(tmp_path / "g")
    for extra in ("gallery.db-wal", "gallery.db-shm"):
        (tmp_path / "g" / extra).unlink(missing_ok=True)
    (tmp_path / "g" / "gallery.db").write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryError, match="gallery.db is not a readable database"):
        Gallery.open(tmp_path / "g")


def test_wrong_model_is_refused(gallery, tmp_path):
    gallery.save()
    other = embedder.create_embedder("efficientnet_lite0", dim=16, name="other")
    with pytest.raises(ModelMismatchError, match=r"built with model 'default'.*not with 'other'"):
        Pipeline.for_gallery(Gallery.open(tmp_path / "g"), other)


def test_thumbnails_follow_their_references(model, tiny_images, tmp_path):
    pipe, g = new_gallery(model, tmp_path / "t")
    ids = pipe.enroll(g, "red", tiny_images[:2])
    assert g.thumbnail(ids[0])[:2] == b"\xff\xd8"  # before saving, from memory
    g.save()
    assert sorted(p.name for p in (tmp_path / "t" / "thumbs").iterdir()) == [f"{i}.jpg" for i in ids]
    g = Gallery.open(tmp_path / "t")
    g.remove_reference(ids[0])
    g.save()
    assert g.thumbnail(ids[0]) is None and g.thumbnail(ids[1]) is not None
    assert [r.source for r in g.references()] == [str(tiny_images[1])]
    (tmp_path / "t" / "x.jpg").write_bytes(b"\xff\xd8 not a thumbnail")
    for bad in (str(ids[1]), "../x", True, 1.0):  # a string would name a file: "../x" one outside thumbs/
        with pytest.raises(GalleryError, match=r"reference id .*: not in gallery .*whole numbers"):
            g.thumbnail(bad)
    assert g.thumbnail(np.int64(ids[1])) == g.thumbnail(ids[1])


def test_saving_into_another_folder_takes_the_thumbnails_along(model, tiny_images, tmp_path):
    pipe, g = new_gallery(model, tmp_path / "t")
    old = pipe.enroll(g, "red", tiny_images[:2])
    g.save()
    g = Gallery.open(tmp_path / "t")
    g.remove_reference(old[0])
    new = pipe.enroll(g, "blue", tiny_images[2:3])
    g.save(tmp_path / "copy")
    names = sorted(p.name for p in (tmp_path / "copy" / "thumbs").iterdir())
    assert names == sorted(f"{i}.jpg" for i in [old[1], *new])  # saved before, new, and not the removed one
    copy = Gallery.open(tmp_path / "copy")
    assert copy.thumbnail(old[1]) == Gallery.open(tmp_path / "t").thumbnail(old[1])
    assert Gallery.open(tmp_path / "t").thumbnail(old[0]) is not None  # the first folder is untouched


def test_class_mean_scoring_ranks_labels_by_their_mean_and_survives_save(model, tmp_path, D, capsys):
    from byakugan.ui.cli import main

    # "lone" has one reference right next to the query and four far ones; "tight" has five
    # references all fairly close: nearest picks "lone", class mean picks "tight".
    rng = np.random.default_rng(0)
    q = unit_rows(1, D, seed=3)[0]

    def near(cos, n):
        noise = rng.standard_normal((n, D)).astype(np.float32)
        noise -= (noise @ q)[:, None] * q
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (cos * q + np.sqrt(1 - cos**2) * noise).astype(np.float32)

    _, g = new_gallery(model, tmp_path / "g")
    g.enroll("lone", np.vstack([near(0.95, 1), near(0.05, 4)]))
    g.enroll("tight", near(0.8, 5))
    assert g.search(q[None], k=2)[0].labels[0][0] == "lone"
    with pytest.raises(GalleryError, match="must be one of nearest, mean"):
        g.scoring = "median"
    g.scoring = "mean"
    (res,) = g.search(q[None], k=2)
    assert [lab for lab, _ in res.labels] == ["tight", "lone"]
    m = g.embeddings([r.id for r in g.references("tight")]).mean(0)
    assert res.labels[0][1] == pytest.approx(float(q @ m / np.linalg.norm(m)), abs=1e-5)
    assert res.hits[0].label == "lone"  # hits stay the nearest references
    g.save()
    assert Gallery.open(tmp_path / "g").search(q[None], k=2)[0].labels == res.labels
    g.remove("tight")  # prototypes follow edits
    assert g.search(q[None], k=1)[0].labels[0][0] == "lone"
    assert main(["scoring", str(tmp_path / "g")]) == 0 and capsys.readouterr().out.strip() == "mean"
    assert main(["scoring", str(tmp_path / "g"), "nearest"]) == 0
    assert Gallery.open(tmp_path / "g").scoring == "nearest"
    assert main(["scoring", str(tmp_path / "g"), "best"]) == 2
