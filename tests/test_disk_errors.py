"""A disk that refuses (full, failing) is not a damaged gallery: the error says which it is."""

import sqlite3

import pytest

from byakugan.index import Gallery, GalleryError
from byakugan.ui.cli import main

from .conftest import disk_state, unit_rows
from .test_milvus import settings


@pytest.mark.parametrize("said", ["disk I/O error", "database or disk is full"])
def test_a_disk_that_refuses_is_not_called_damage(tmp_path, monkeypatch, capsys, said):
    g = Gallery.create(settings(), tmp_path / "g")
    g.enroll("a", unit_rows(3, settings().model["dim"], seed=1))
    g.save()
    before = disk_state(tmp_path / "g")

    def refused(*_, **__):
        raise sqlite3.OperationalError(said)

    monkeypatch.setattr(sqlite3, "connect", refused)
    with pytest.raises(GalleryError) as err:
        Gallery.open(tmp_path / "g")
    assert f"gallery.db is unreadable just now ({said}: the disk is full or refused a write" in str(err.value)
    assert "not a readable database" not in str(err.value)
    assert main(["labels", str(tmp_path / "g")]) == 2
    assert "not a sign the gallery is damaged" in capsys.readouterr().err
    monkeypatch.undo()
    assert disk_state(tmp_path / "g") == before and Gallery.open(tmp_path / "g").labels() == {"a": 3}


def test_a_damaged_database_is_still_called_so(tmp_path):
    g = Gallery.create(settings(), tmp_path / "g")
    g.enroll("a", unit_rows(3, settings().model["dim"], seed=1))
    g.save()
    (tmp_path / "g" / "gallery.db").write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryError, match="not a readable database"):
        Gallery.open(tmp_path / "g")


def _gallery(path, labels=("a",), seed=1):
    g = Gallery.create(settings(), path)
    for i, label in enumerate(labels):
        g.enroll(label, unit_rows(3, settings().model["dim"], seed=seed + i))
    return g


def test_a_saves_clean_up_spares_files_of_a_later_generation(tmp_path):
    """A program saving without the folder's lock may write its next generation's files between
    another save's commit and that save's clean-up: those are not the clean-up's to remove."""
    g = _gallery(tmp_path / "g")
    g.reindex("HNSW8")
    g.save()
    later, older = tmp_path / "g" / "index.999999.faiss", tmp_path / "g" / "vectors.000000.f32"
    later.write_bytes(b"being written"), older.write_bytes(b"no one's")
    g.remove_reference(g.references()[0].id)
    g.enroll("b", unit_rows(2, settings().model["dim"], seed=7))
    g.save()  # HNSW cannot remove: a new checkpoint, the old one removed
    assert later.read_bytes() == b"being written" and not older.exists()
    assert len(list((tmp_path / "g").glob("index.*.faiss"))) == 2
    assert Gallery.open(tmp_path / "g").labels() == {"a": 2, "b": 2}


def test_a_new_gallery_saved_where_another_was_made_meanwhile_is_refused_under_the_lock(tmp_path, monkeypatch):
    from byakugan.index import store

    first, second = _gallery(tmp_path / "g", ("first",)), _gallery(tmp_path / "g", ("second",), seed=5)
    real = store.check_save_target

    def then_the_other_saves(*args):  # the folder was free when checked; the other program saves right after
        real(*args)
        monkeypatch.setattr(store, "check_save_target", real)
        first.save()

    monkeypatch.setattr(store, "check_save_target", then_the_other_saves)
    with pytest.raises(GalleryError, match="another gallery was saved there meanwhile; nothing changed"):
        second.save()
    assert Gallery.open(tmp_path / "g").labels() == {"first": 3}


def test_a_vector_file_gone_before_a_save_is_one_line_and_a_missing_checkpoint_is_named(tmp_path):
    g = _gallery(tmp_path / "g")
    g.reindex("HNSW8")
    g.save()
    checkpoint = next((tmp_path / "g").glob("index.*.faiss"))
    checkpoint.rename(tmp_path / "aside")
    with pytest.raises(GalleryError, match=f"{checkpoint.name}, which gallery.db names, is missing"):
        Gallery.open(tmp_path / "g")
    (tmp_path / "aside").rename(checkpoint)
    g = Gallery.open(tmp_path / "g")
    next((tmp_path / "g").glob("vectors.*.f32")).unlink()
    g.enroll("b", unit_rows(2, settings().model["dim"], seed=7))
    with pytest.raises(GalleryError, match="could not be saved .*No such file or directory.*; nothing changed"):
        g.save()
