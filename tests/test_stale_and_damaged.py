"""A copy of an older state never writes over a newer one; a damaged or foreign gallery.db is never
taken for an empty folder; vectors that would poison every search are refused at the door."""

import sqlite3

import numpy as np
import pytest
from PIL import Image

from byakugan.index import Gallery, GalleryError
from byakugan.index.settings import GallerySettings
from byakugan.ui.cli import main

from .conftest import disk_state

DIM = 8


def unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def folder(tmp_path):
    g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5),
                       tmp_path / "g")
    g.enroll("rock", unit(3, 1))
    g.enroll("paper", unit(3, 2))
    g.save()
    return tmp_path / "g"


def test_a_copy_opened_before_another_save_cannot_undo_its_settings_or_ids(folder):
    a, b = Gallery.open(folder), Gallery.open(folder)
    a.enroll("new", unit(1, 3))
    a.threshold = 0.3
    a.sequences.add("combo", ["rock", "new"])
    a.save()
    before = disk_state(folder)
    for edit in (lambda g: g.remove_reference(0), lambda g: setattr(g, "threshold", 0.9),
                 lambda g: g.rename("rock", "stone"), lambda g: g.remove("paper")):
        edit(b)
        with pytest.raises(GalleryError, match="another save changed it since this copy was opened"):
            b.save()
        assert disk_state(folder) == before  # nothing written, thumbnails included
    g = Gallery.open(folder)  # what the newer save left, and enrolling after it still works
    assert (g.threshold, g.labels(), [s.name for s in g.sequences]) == (0.3, {"new": 1, "paper": 3, "rock": 3}, ["combo"])
    g.enroll("more", unit(2, 4))
    g.save()
    g.save()  # a copy that saved is current again
    assert Gallery.open(folder).labels()["more"] == 2
    a.remove("new")  # a is now the older one
    with pytest.raises(GalleryError, match="another save changed it"):
        a.save()


@pytest.mark.parametrize("damage", ["empty", "no_settings", "foreign"])
def test_a_damaged_or_foreign_database_is_refused_and_nothing_is_written(folder, tmp_path, damage, capsys):
    for extra in ("gallery.db-wal", "gallery.db-shm"):
        (folder / extra).unlink(missing_ok=True)
    db = folder / "gallery.db"
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "no_settings":
        con = sqlite3.connect(db)
        con.execute("DELETE FROM settings")
        con.commit()
        con.close()
    else:
        db.unlink()
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE photos (name TEXT)")
        con.execute("INSERT INTO photos VALUES ('beach.jpg')")
        con.commit()
        con.close()
    before = disk_state(folder)
    want = {"empty": "empty, beside a gallery's files", "no_settings": "missing its settings",
            "foreign": "not a byakugan gallery's database"}[damage]
    with pytest.raises(GalleryError, match=want):
        Gallery.open(folder)
    assert Gallery.exists(folder)  # so nothing creates a new gallery over it
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["enroll", str(folder), "label", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and want in err
    assert disk_state(folder) == before


def test_settings_no_save_writes_are_damage_or_put_right(folder, capsys):
    with sqlite3.connect(folder / "gallery.db") as con:
        con.execute("INSERT OR REPLACE INTO settings VALUES ('scoring', '\"bogus\"')")
    with pytest.raises(GalleryError, match="gallery.db is malformed \\(scoring 'bogus': must be one of nearest, mean"):
        Gallery.open(folder)
    with sqlite3.connect(folder / "gallery.db") as con:  # these two a reader can do without: put right, and said
        con.execute("INSERT OR REPLACE INTO settings VALUES ('scoring', '\"nearest\"')")
        con.execute("INSERT OR REPLACE INTO settings VALUES ('threshold', '5')")  # every search answered "unknown"
        con.execute("INSERT OR REPLACE INTO settings VALUES ('next_id', '0')")  # every enrol failed, "another save changed it"
    assert main(["enroll", str(folder), "more", str(folder / "thumbs" / "nothing.png")]) == 2  # opened; the image is missing
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [f"byakugan: warning: gallery {folder}: its threshold 5 is past any score; the model's, 0.5, is used "
                       "until one is set",
                       f"byakugan: warning: gallery {folder}: its next id 0 was in use; new references take ids from 6"]
    g = Gallery.open(folder)
    assert g.threshold == 0.5 and g.enroll("more", unit(1, 9)) == [6]
    g.save()
    assert Gallery.open(folder).labels()["more"] == 1


def test_vectors_that_would_poison_searches_are_refused(folder):
    g = Gallery.open(folder)
    for bad, why in ((np.full((1, DIM), 1e300), "too large for float32"), (unit(1) * 1000, "length 1000"),
                     (np.zeros((1, DIM), np.float32), "length 0")):
        with pytest.raises(GalleryError, match=why):
            g.enroll("bad", bad)
    assert "bad" not in g.labels()
    with pytest.raises(GalleryError, match="length 0.6; references are embeddings of length 1: normalise it"):
        g.enroll("short", unit(1) * 0.6)  # shorter than 1 is only a fused gallery's hand vector without landmarks
    with pytest.raises(GalleryError, match="too large for float32"):
        g.search(np.full((1, DIM), 1e300), 5)


def test_numbers_are_numbers(folder):
    g = Gallery.open(folder)
    r = g.search(unit(1), 3)[0]
    for k in ("3", 1.5, 0, True):
        with pytest.raises(GalleryError, match="must be a whole number of at least 1"):
            g.search(unit(1), k)
    assert len(g.search(unit(1), np.int64(2))[0].labels) == 2
    for t in ("x", "0.5", True, float("nan"), float("inf")):
        with pytest.raises(GalleryError, match=f"threshold {t!r}"):
            g.match(r, threshold=t)
    assert g.match(r, threshold=np.float32(2.0)).label == "unknown"  # a score threshold, past any cosine
    for t in (True, 2, "0.5"):
        with pytest.raises(GalleryError, match="must be a cosine similarity between -1 and 1"):
            g.threshold = t
    with pytest.raises(GalleryError, match="must be True or False"):
        g.threshold_auto = "yes"
    with pytest.raises(GalleryError, match="reference id 99999: not in gallery"):
        g.embeddings([99999])
    assert g.remove_reference(np.int64(0)).id == 0


def test_a_bundle_is_never_written_inside_its_gallery(folder):
    from byakugan.index.export import export

    before = disk_state(folder)
    with pytest.raises(GalleryError, match="is inside the gallery folder"):
        export(Gallery.open(folder), folder / "sub" / "inside.zip")
    assert disk_state(folder) == before and not (folder / "sub").exists()


def test_the_write_transaction_refuses_an_older_copy_by_itself(folder, monkeypatch):
    from byakugan.index import committed

    a, b = Gallery.open(folder), Gallery.open(folder)
    a.enroll("new", unit(1, 3), images=[Image.new("RGB", (16, 16), "blue")])
    a.save()
    monkeypatch.setattr(committed, "check_current", lambda *_: None)  # a save racing past the check before it
    b.threshold = 0.9
    b.enroll("loser", unit(1, 4), images=[Image.new("RGB", (16, 16), "red")])  # the id "new" took: not its thumbnail
    before = disk_state(folder)
    with pytest.raises(GalleryError, match="another save changed it since this copy was opened"):
        b.save()
    assert disk_state(folder) == before


def test_a_label_stored_in_another_spelling_is_still_found(folder):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "café")
    con = sqlite3.connect(folder / "gallery.db")  # as a gallery made before labels were stored as NFC holds it
    con.execute("UPDATE refs SET label = ? WHERE label = 'rock'", (decomposed,))
    con.commit()
    con.close()
    g = Gallery.open(folder)
    assert decomposed in g.labels()
    assert g.sequences.add("s", ["café", "paper"]).steps[0] == decomposed
    assert len(g.references("café")) == 3 and g.remove(decomposed) == 3


@pytest.mark.parametrize("case", ["empty_tables_beside_a_first_format_gallery", "empty_beside_milvus",
                                  "generation_null"])
def test_what_a_died_first_save_leaves_is_not_damage_and_what_is_damage_is(tmp_path, case):
    if case == "empty_tables_beside_a_first_format_gallery":
        import shutil
        from pathlib import Path

        g = shutil.copytree(Path(__file__).parent / "fixtures" / "compat" / "gallery-plain", tmp_path / "g")
        con = sqlite3.connect(g / "gallery.db")  # a first save killed from before saves made their tables in their transaction
        con.executescript("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                          "CREATE TABLE refs (id INTEGER PRIMARY KEY, label TEXT, source TEXT, added TEXT, row INTEGER);"
                          "CREATE TABLE pieces (start INTEGER PRIMARY KEY, rows INTEGER NOT NULL, sha256 TEXT NOT NULL);")
        con.close()
        assert len(Gallery.open(g).labels()) == 3  # the first-format gallery beside it
        return
    g = tmp_path / "g"
    g.mkdir()
    if case == "empty_beside_milvus":
        (g / "gallery.db").write_bytes(b"")
        (g / "milvus.db").write_bytes(b"vectors of a Milvus Lite gallery")
        want = "empty, beside a gallery's files"
    else:
        con = sqlite3.connect(g / "gallery.db")
        con.executescript("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                          "CREATE TABLE refs (id INTEGER PRIMARY KEY); CREATE TABLE pieces (start INTEGER PRIMARY KEY);"
                          "INSERT INTO settings VALUES ('generation', 'null');")
        con.close()
        want = "its generation is None, not a whole number"
    assert Gallery.exists(g)
    with pytest.raises(GalleryError, match=want):
        Gallery.open(g)
    with pytest.raises(GalleryError, match=want):  # not "already holds a gallery; open it"
        Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5), g)


def test_a_save_that_fails_after_writing_thumbnails_takes_them_back(folder, monkeypatch):
    from byakugan.index import db

    g = Gallery.open(folder)
    before = disk_state(folder)
    g.enroll("new", unit(1, 3), images=[Image.new("RGB", (16, 16), "blue")])
    real = db.write_vectors

    def full_disk(*args, **kwargs):
        raise ValueError("no space left on device")

    monkeypatch.setattr(db, "write_vectors", full_disk)
    with pytest.raises(GalleryError, match="could not be saved .*; nothing changed"):
        g.save()
    assert disk_state(folder) == before  # the thumbnail of the id it meant to add is gone again
    monkeypatch.setattr(db, "write_vectors", real)
    g = Gallery.open(folder)
    (new,) = g.enroll("no picture", unit(1, 4))
    g.save()
    assert Gallery.open(folder).thumbnail(new) is None  # not the failed save's picture


def test_a_folder_that_cannot_be_written_is_still_read(folder):
    """Its database in WAL mode, SQLite cannot make the index a reader needs there: read as immutable."""
    import os
    import shutil
    import subprocess

    if os.geteuid() == 0:  # root writes anywhere a chmod forbids: make the folder immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot make a folder unwritable here (root, and no chattr on this filesystem)")
        undo = ["chattr", "-i", str(folder)]
    else:
        os.chmod(folder, 0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        assert len(Gallery.open(folder)) > 0
    finally:
        subprocess.run(undo, check=True)
    assert len(Gallery.open(folder)) > 0


def test_a_killed_saves_picture_is_not_shown_for_a_later_reference_of_its_id(folder):
    """A save killed after writing its thumbnails never takes them back; the next reference to take
    that id, enrolled without a picture, showed the killed save's."""
    g = Gallery.open(folder)
    (folder / "thumbs").mkdir(exist_ok=True)
    left = folder / "thumbs" / f"{g._meta['next_id']}.jpg"  # noqa: SLF001 (the id the killed save took)
    Image.new("RGB", (16, 16), "red").save(left)
    (new,) = g.enroll("no picture", unit(1, 5))
    g.save()
    assert not left.exists() and Gallery.open(folder).thumbnail(new) is None
    # Saved into a new folder that a killed first save had begun: the same.
    other = folder.parent / "other"
    (other / "thumbs").mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(other / "thumbs" / f"{new}.jpg")
    g.save(other)
    assert Gallery.open(other).thumbnail(new) is None


def test_vectors_without_their_database_are_not_taken_for_a_new_gallery(folder, tmp_path, capsys):
    """A gallery whose gallery.db was deleted read as the leftovers of a first save that died: the
    next enrol made a new gallery over its vector file."""
    (folder / "gallery.db").unlink()
    before = disk_state(folder)
    assert main(["enroll", str(folder), "x", str(tmp_path / "any.jpg")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"byakugan: error: gallery {folder}: holds a gallery's vectors.000001.f32 but no gallery.db (deleted or lost?); "
        "nothing was changed: put gallery.db back, or start the new gallery in another folder")
    assert disk_state(folder) == before
    with pytest.raises(GalleryError, match="no gallery.db"):
        Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5),
                       folder).save()


def test_an_edit_that_committed_is_not_reported_as_failed_when_tidying_after_it_fails(folder, monkeypatch, capsys):
    from pathlib import Path

    g = Gallery.open(folder)
    ids = [r.id for r in g.references("rock")]
    g2 = Gallery.open(folder)
    g2.enroll("blue", unit(1, 6), images=[Image.new("RGB", (16, 16), "blue")])
    g2.save()
    real = Path.unlink

    def immutable(self, missing_ok=False):
        if self.parent.name == "thumbs" or self.suffix == ".f32":
            raise PermissionError(1, "Operation not permitted", str(self))
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", immutable)
    assert main(["remove", str(folder), "blue"]) == 0
    out = capsys.readouterr()
    assert "removed 'blue'" in out.out
    assert out.err.startswith(f"byakugan: warning: gallery {folder}: saved, but a file it no longer needs could not be "
                              f"removed ({folder / 'thumbs'}/") and out.err.count("\n") == 1
    assert main(["reindex", str(folder), "HNSW32"]) == 0  # writes every vector again: the old file cannot go
    assert "could not be removed" in capsys.readouterr().err
    monkeypatch.setattr(Path, "unlink", real)
    g = Gallery.open(folder)
    assert g.labels() == {"rock": 3, "paper": 3} and [r.id for r in g.references("rock")] == ids
