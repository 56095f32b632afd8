"""Galleries whose vectors live in Milvus (index.milvus), through pymilvus and Milvus Lite: the same
answers as FAISS on the same references, and the same save semantics."""

import json
import shutil
import math
import subprocess
import sys

import numpy as np
import pytest

from byakugan.index import Gallery, GalleryError
from byakugan.index.settings import GallerySettings
from byakugan.ui.cli import main

from .conftest import unit_rows

D = 32
LABELS = [f"c{i}" for i in range(12)]


def settings() -> GallerySettings:
    return GallerySettings(model={"name": "test", "fingerprint": "0" * 16, "dim": D}, detector={"name": "none"},
                           threshold=0.5)


def clustered(n_per: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Unit vectors around one centre per label, so labels can be told apart."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(len(LABELS), D, seed=100)
    x = np.repeat(centres, n_per, axis=0) + 0.25 * rng.standard_normal((len(LABELS) * n_per, D)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [lab for lab in LABELS for _ in range(n_per)]


def fill(g: Gallery, x: np.ndarray, labels: list[str]) -> None:
    for lab in LABELS:
        rows = [i for i, a in enumerate(labels) if a == lab]
        g.enroll(lab, x[rows], sources=[f"{lab}-{i}.png" for i in rows])


def answers(g: Gallery, q: np.ndarray, k: int = 3):
    res = g.search(q, k=k)
    return [r.labels[0][0] for r in res], np.array([[h.score for h in r.hits] for r in res]), \
        [[h.id for h in r.hits] for r in res]


@pytest.fixture()
def pair(tmp_path):
    """A FAISS gallery and a Milvus Lite gallery of the same 60 references, both saved."""
    x, labels = clustered(5, seed=1)
    out = []
    for name, store in (("faiss", "faiss"), ("lite", "milvus-lite")):
        g = Gallery.create(settings(), tmp_path / name, store=store)
        fill(g, x, labels)
        g.save()
        out.append(g)
    return out


def test_same_top1_as_faiss_then_save_open_search_again(pair, tmp_path):
    faiss_g, lite = pair
    q, _ = clustered(3, seed=2)
    want, want_s, want_ids = answers(faiss_g, q)
    got, got_s, got_ids = answers(lite, q)
    assert got == want and got_ids == want_ids
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    reopened = Gallery.open(tmp_path / "lite")
    assert reopened.vectors.spec == "milvus-lite" and len(reopened) == 60
    again, again_s, _ = answers(reopened, q)
    assert again == want
    np.testing.assert_allclose(again_s, want_s, atol=1e-5)
    np.testing.assert_allclose(reopened.embeddings([3, 40]), faiss_g.embeddings([3, 40]), atol=1e-6)
    st = json.loads(__import__("sqlite3").connect(tmp_path / "lite" / "gallery.db")
                    .execute("SELECT value FROM settings WHERE key = 'storage'").fetchone()[0])
    assert st["backend"] == "milvus" and st["uri"] == "milvus.db" and st["index"] == "FLAT"
    assert not list((tmp_path / "lite").glob("vectors.*.f32"))  # no vector file beside it


def test_unsaved_edits_are_searched_but_not_kept(pair, tmp_path):
    _, lite = pair
    new = lite.enroll("new", unit_rows(2, D, seed=7))
    lite.remove("c0")
    q = lite.embeddings(new[:1])
    assert lite.search(q, k=1)[0].labels[0] == ("new", pytest.approx(1.0, abs=1e-5))  # pending, merged exactly
    assert "c0" not in {h.label for h in lite.search(q, k=20)[0].hits}  # pending removal hidden
    reopened = Gallery.open(tmp_path / "lite")
    assert "new" not in reopened.labels() and reopened.labels()["c0"] == 5 and len(reopened) == 60
    assert reopened.search(q, k=1)[0].labels[0][0] != "new"


def test_removal_and_rename_persist(pair, tmp_path):
    faiss_g, lite = pair
    for g in (faiss_g, lite):
        g.remove("c1")
        g.remove_reference(0)
        g.rename("c2", "renamed")
        g.save()
    reopened = Gallery.open(tmp_path / "lite")
    assert reopened.labels() == Gallery.open(tmp_path / "faiss").labels()
    assert "c1" not in reopened.labels() and reopened.labels()["renamed"] == 5 and len(reopened) == 54
    q, _ = clustered(2, seed=3)
    assert answers(reopened, q)[0] == answers(faiss_g, q)[0]
    assert 0 not in reopened.vectors.ids() and reopened.vectors._count() == 54  # deleted from Milvus too
    assert not reopened.vectors._hidden  # and their record cleared once they were


def test_crash_between_milvus_upsert_and_sqlite_commit_keeps_the_last_state(pair, tmp_path, monkeypatch):
    from byakugan.index import db

    _, lite = pair
    q, _ = clustered(2, seed=4)
    before = answers(Gallery.open(tmp_path / "lite"), q)
    added = lite.enroll("late", q[:3])  # the queries themselves: they would win every search if visible
    lite.remove("c3")

    def die(*a, **k):
        raise SystemExit("killed after the upsert, before the commit")

    real = lite.vectors.stage

    def stage_then_die(*a, **k):
        real(*a, **k)
        die()

    monkeypatch.setattr(lite.vectors, "stage", stage_then_die)
    with pytest.raises(SystemExit):
        lite.save()
    monkeypatch.undo()
    reopened = Gallery.open(tmp_path / "lite")  # Milvus holds the upserted rows; the commit never named them
    assert "late" not in reopened.labels() and reopened.labels()["c3"] == 5
    after = answers(reopened, q)
    assert after[0] == before[0] and after[2] == before[2]
    reopened.enroll("other", unit_rows(1, D, seed=8))  # reuses the ids of the lost save; replaces its rows
    reopened.save()
    final = Gallery.open(tmp_path / "lite")
    assert final.labels()["other"] == 1 and "late" not in final.labels() and len(final) == 61
    assert final.vectors._count() == 61
    assert added[0] in final.vectors.ids() and final.references()[-1].label == "other"
    assert db.exists(tmp_path / "lite")


def test_export_builds_a_faiss_bundle(pair, tmp_path):
    from byakugan.index.vectors import FlatStore

    faiss_g, lite = pair
    blob = lite.vectors.to_bytes()  # what export writes as index.faiss
    flat = FlatStore.from_bytes(blob)
    q, _ = clustered(2, seed=5)
    s, i = flat.search(q, 3)
    fs, fi = faiss_g.vectors.search(q, 3)
    assert (i == fi).all()
    np.testing.assert_allclose(s, fs, atol=1e-5)


def test_bad_store_and_reindex_are_one_line(tmp_path):
    with pytest.raises(GalleryError, match=r"^--store 'mongo': not a vector store; valid: faiss, milvus-lite or milvus://HOST:PORT$"):
        Gallery.create(settings(), tmp_path / "x", store="mongo")
    with pytest.raises(GalleryError, match=r"Milvus server milvus://127.0.0.1:9: could not connect"):
        Gallery.create(settings(), tmp_path / "y", store="milvus://127.0.0.1:9")
    g = Gallery.create(settings(), tmp_path / "z", store="milvus-lite")
    g.enroll("a", unit_rows(2, D))
    with pytest.raises(GalleryError, match=r"index IVF4,PQ8: a Milvus gallery takes Flat, HNSWn or IVFn,Flat"):
        g.reindex("IVF4,PQ8")
    assert not (tmp_path / "z").exists()  # nothing written before save()


def test_cli_store_milvus_lite_end_to_end(tiny_images, tmp_path, capsys):
    g = tmp_path / "g"
    for n, img in enumerate(tiny_images):
        assert main(["enroll", str(g), f"label{n}", str(img), "--store", "milvus-lite"]) == 0
    assert (g / "milvus.db").is_dir()
    capsys.readouterr()
    assert main(["search", str(g), str(tiny_images[1]), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)[0]["detections"][0]["match"]
    assert m["nearest"] == "label1" and m["score"] > 0.999
    assert main(["enroll", str(g), "x", str(tiny_images[0]), "--store", "faiss"]) == 2
    assert "keeps its vectors in milvus-lite, not faiss" in capsys.readouterr().err
    assert main(["reindex", str(g), "HNSW16"]) == 0
    assert "3 references in a HNSW16 index; recall@1 by label against exact search 1.000" in \
        capsys.readouterr().out
    assert main(["export", str(g), str(tmp_path / "b.zip")]) == 0
    from byakugan.index import bundle

    assert bundle.load(tmp_path / "b.zip").search(tiny_images[2], k=1)[0]["match"]["nearest"] == "label2"


def test_cli_bad_store_exit_2_one_line(tiny_images, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "byakugan.ui.cli", "enroll", str(tmp_path / "g"), "a",
                           str(tiny_images[0]), "--store", "milvus-light"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("byakugan: error: --store 'milvus-light': not a vector store; valid: faiss, milvus-lite")
    assert not (tmp_path / "g").exists()


def test_faiss_galleries_never_import_pymilvus(pair, tmp_path):
    code = ("import sys, numpy as np; from byakugan.index import Gallery; "
            f"g = Gallery.open({str(tmp_path / 'faiss')!r}); g.search(np.ones((1, g.dim), np.float32), 1); "
            "print(sorted(m for m in ('pymilvus', 'milvus_lite', 'grpc') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_removed_rows_left_in_milvus_by_a_crash_after_the_commit_stay_hidden(pair, tmp_path, monkeypatch):
    _, lite = pair
    gone = [r.id for r in lite.references("c4")]
    q = lite.embeddings(gone[:2])
    real = lite.vectors._call
    monkeypatch.setattr(lite.vectors, "committed", lambda con, next_id: None)  # dies right after the commit
    lite.remove("c4")
    lite.save()
    monkeypatch.undo()
    reopened = Gallery.open(tmp_path / "lite")
    assert sorted(reopened.vectors._hidden) == gone  # recorded, still in Milvus
    assert real("query", filter=f"id in {gone}", output_fields=["id"])
    assert "c4" not in {h.label for r in reopened.search(q, k=10) for h in r.hits}
    reopened.enroll("x", unit_rows(1, D, seed=11))
    reopened.save()  # deletes them before its own commit
    assert not real("query", filter=f"id in {gone}", output_fields=["id"])
    assert not Gallery.open(tmp_path / "lite").vectors._hidden


def test_a_milvus_lite_gallery_made_by_one_command_is_searched_by_the_next(tiny_images, tmp_path):
    """Each CLI command is a new process: Milvus Lite hands it the collection released, to be loaded."""
    g = tmp_path / "g"
    cli = [sys.executable, "-m", "byakugan.ui.cli"]
    made = subprocess.run([*cli, "enroll", str(g), "red", str(tiny_images[0]), "--store", "milvus-lite"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    found = subprocess.run([*cli, "search", str(g), str(tiny_images[0]), "--json"], capture_output=True, text=True,
                           timeout=300)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["detections"][0]["match"]["nearest"] == "red"
    assert "Exception" not in found.stderr  # pymilvus's own log lines stay out of the output


@pytest.mark.parametrize("factory, index, per", [("HNSW16", "HNSW", 5), ("IVF2,Flat", "IVF_FLAT", 10)])
def test_reindex_moves_the_vectors_to_a_new_collection_indexed_so_and_drops_the_old_a_save_later(
        tmp_path, factory, index, per):
    x, labels = clustered(per, seed=1)
    faiss_g, lite = Gallery.create(settings(), tmp_path / "faiss"), Gallery.create(settings(), tmp_path / "lite",
                                                                                   store="milvus-lite")
    for g in (faiss_g, lite):
        fill(g, x, labels)
        g.save()
    q, _ = clustered(3, seed=2)
    want = answers(faiss_g, q)
    old = lite.vectors.collection
    assert math.isnan(lite.reindex(factory))  # built by the save: measured after it
    assert answers(lite, q)[0] == want[0]  # pending: searched exactly until then
    lite.save()
    client = lite.vectors.client
    assert lite.vectors.factory == factory and old in client.list_collections()  # readers may still use it
    assert client.describe_index(lite.vectors.collection, index_name="vector")["index_type"] == index
    reopened = Gallery.open(tmp_path / "lite")
    assert reopened.vectors.factory == factory and len(reopened) == len(x) and reopened.vectors.retiring == [old]
    assert answers(reopened, q)[0] == want[0]
    st = json.loads(__import__("sqlite3").connect(tmp_path / "lite" / "gallery.db")
                    .execute("SELECT value FROM settings WHERE key = 'storage'").fetchone()[0])
    assert st["index"] == index and st["factory"] == factory and st["retiring"] == [old]
    assert reindex_recall(reopened) == pytest.approx(1.0)
    reopened.rename("c0", "renamed")
    reopened.save()  # the next save drops it
    assert old not in client.list_collections() and Gallery.open(tmp_path / "lite").vectors.retiring == []
    reopened.reindex("Flat")
    reopened.save()
    assert Gallery.open(tmp_path / "lite").vectors.factory == "Flat"


def reindex_recall(g) -> float:
    from byakugan.index.reindex import label_recall

    return label_recall(g.vectors, {r.id: r.label for r in g.references()})


def test_collections_a_reindex_or_a_crash_left_behind_are_dropped(pair, tmp_path, monkeypatch):
    _, lite = pair
    first = lite.vectors.collection
    lite.reindex("HNSW16")
    lite.reindex("Flat")  # twice before a save: the first collection is still the one to retire
    lite.save()
    assert lite.vectors.retiring == [first]
    client = lite.vectors.client
    monkeypatch.setattr(client, "drop_collection", lambda **kw: (_ for _ in ()).throw(RuntimeError("killed")))
    lite.enroll("x", unit_rows(1, D, seed=9))
    lite.save()  # committed, but the drop failed: still recorded
    monkeypatch.undo()
    reopened = Gallery.open(tmp_path / "lite")
    assert reopened.vectors.retiring == [first] and first in client.list_collections()
    reopened.reindex("HNSW16")
    real = reopened.vectors.stage

    def stage_then_die(*a, **k):
        real(*a, **k)
        raise SystemExit("killed after filling the new collection, before the commit")

    monkeypatch.setattr(reopened.vectors, "stage", stage_then_die)
    with pytest.raises(SystemExit):
        reopened.save()
    monkeypatch.undo()
    again = Gallery.open(tmp_path / "lite")
    assert again.vectors.factory == "Flat" and len(again) == 61
    again.enroll("y", unit_rows(1, D, seed=10))
    again.save()  # drops the collection retired before and the one the dead save filled
    assert client.list_collections() == [again.vectors.collection]


def test_a_damaged_milvus_lite_database_is_refused_before_milvus_lite_touches_it(tiny_images, tmp_path):
    """Milvus Lite falls back to a collection's previous manifest and deletes the files only the lost
    one named (references a save committed); a missing database it would make anew, empty."""
    cli = [sys.executable, "-m", "byakugan.ui.cli"]
    g = tmp_path / "g"
    for label, image in (("red", tiny_images[0]), ("blue", tiny_images[1])):  # two saves: a previous manifest
        made = subprocess.run([*cli, "enroll", str(g), label, str(image), "--store", "milvus-lite"],
                              capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr
    [manifest] = (g / "milvus.db" / "collections").glob("*/manifest.json")
    files = sorted(p for p in (g / "milvus.db").rglob("*") if p.is_file() and p != manifest)
    manifest.rename(manifest.with_suffix(".kept"))
    for broken in ("missing", "garbage"):
        if broken == "garbage":
            manifest.write_text("{not json")
        r = subprocess.run([*cli, "labels", str(g)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "manifest.json is missing or unreadable (damaged)" in r.stderr, r.stderr
        assert sorted(p for p in (g / "milvus.db").rglob("*") if p.is_file() and p not in (manifest,
                      manifest.with_suffix(".kept"))) == files  # nothing deleted or written
    manifest.with_suffix(".kept").replace(manifest)
    shutil.rmtree(g / "milvus.db")
    r = subprocess.run([*cli, "labels", str(g)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "milvus.db is missing or not a folder (damaged)" in r.stderr, r.stderr
    assert not (g / "milvus.db").exists()


@pytest.mark.parametrize("text", ["[]", '{"partitions": []}'])
def test_a_manifest_that_is_json_but_not_milvus_lites_is_damage_too(tiny_images, tmp_path, text):
    from byakugan.index.milvus_spec import check_lite

    manifest = tmp_path / "milvus.db" / "collections" / "c" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"partitions": {}, "version": 3}')
    check_lite(tmp_path, "c")  # an object whose partitions are an object: what Milvus Lite reads
    manifest.write_text(text)
    with pytest.raises(GalleryError, match="manifest.json is missing or unreadable"):
        check_lite(tmp_path, "c")


def test_a_gallery_made_again_where_one_was_deleted_in_the_same_process_saves(tmp_path):
    """The process keeps one Milvus Lite client per database; the one of a deleted folder held its
    deleted files, and the first save of a new gallery there failed."""
    x, labels = clustered(3, seed=5)
    for round_ in range(2):
        g = Gallery.create(settings(), tmp_path / "g", store="milvus-lite")
        fill(g, x, labels)
        g.save()
        assert Gallery.open(tmp_path / "g").labels() == {lab: 3 for lab in LABELS}
        shutil.rmtree(tmp_path / "g")


def test_a_gallery_made_again_where_one_was_moved_away_in_the_same_process_saves(tmp_path):
    x, labels = clustered(3, seed=6)
    g = Gallery.create(settings(), tmp_path / "g", store="milvus-lite")
    fill(g, x, labels)
    g.save()
    (tmp_path / "g").rename(tmp_path / "moved")
    g = Gallery.create(settings(), tmp_path / "g", store="milvus-lite")
    fill(g, x[::-1].copy(), labels[::-1])
    g.save()
    assert Gallery.open(tmp_path / "g").labels() == {lab: 3 for lab in LABELS}


def test_a_milvus_lite_gallery_that_cannot_be_written_says_so_not_that_another_process_holds_it(pair, tmp_path):
    """Milvus Lite writes its database even to read it: the folder named, not 'another may hold it'."""
    from tests.test_leftovers_cli_http import unwritable

    with unwritable(tmp_path / "lite" / "milvus.db"):
        with pytest.raises(GalleryError, match=r"milvus.db is in a folder that cannot be written .*; use a writable "
                                               r"copy of the folder \(`cp -r`\): no command can read it where it is$"):
            answers(Gallery.open(tmp_path / "lite"), clustered(1, 9)[0][:1])
