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
