"""The shared gallery behind the page and the server: concurrent writers lose nothing."""

import threading

import pytest

from byakugan.index import Gallery
from byakugan.index.service import Crop, GalleryService


def test_two_servers_enrolling_at_once_lose_nothing(model, digits, tmp_path):
    # Two services on one folder stand for two server processes (or two page sessions).
    a, b = GalleryService(tmp_path / "g", model), GalleryService(tmp_path / "g", model)
    from byakugan.embedder import load_image

    errors = []

    def enrol(svc, label):
        try:
            for p in digits[label][:4]:
                svc.enroll(label, [Crop(p.name, load_image(p))])
        except Exception as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(a, "1")), threading.Thread(target=enrol, args=(b, "2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Gallery.open(tmp_path / "g").labels() == {"1": 4, "2": 4}
    assert a.labels() == b.labels() == {"1": 4, "2": 4}  # each sees the other's saves


def test_check_warns_about_duplicates_and_confusions(model, digits, tmp_path):
    from byakugan.embedder import load_image

    svc = GalleryService(tmp_path / "g", model)
    svc.enroll("1", [Crop(n, load_image(p)) for n, p in zip("abc", digits["1"][:3])])
    svc.enroll("2", [Crop(n, load_image(p)) for n, p in zip("def", digits["2"][:3])])
    warnings = svc.check("2", [Crop("x", load_image(digits["1"][0]))])
    assert any("near-duplicate of reference 0" in w for w in warnings)
    assert any("closer to '1'" in w and "own class '2'" in w for w in warnings)


def test_check_warns_about_duplicates_within_one_upload_even_into_an_empty_gallery(model, digits, tmp_path):
    from byakugan.embedder import load_image

    svc = GalleryService(tmp_path / "g", model)
    one, other = load_image(digits["1"][0]), load_image(digits["2"][0])
    warnings = svc.check("1", [Crop("a", one), Crop("b", other), Crop("c", one.copy()), Crop("d", one.copy())])
    assert warnings == [w for w in warnings if "in the same upload" in w]
    assert [w.split(":")[0] for w in warnings] == ["c", "d"]  # each copy named once, after the first
    assert all("near-duplicate of a in the same upload" in w for w in warnings)
    assert svc.check("1", [Crop("a", one), Crop("b", other)]) == []


def test_check_warns_about_crops_with_nothing_in_them(model, digits, tmp_path):
    import numpy as np
    from PIL import Image

    from byakugan.embedder import load_image

    svc = GalleryService(tmp_path / "g", model)
    dot, flat = Image.new("RGB", (1, 1), (9, 9, 9)), Image.new("RGB", (300, 200), (250, 250, 250))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert svc.check("1", [Crop("dot", dot)]) == ["dot: only 1x1 pixels, too few to tell a class by"]  # no embedding asked
    svc.enroll("1", [Crop(n, load_image(p)) for n, p in zip("abc", digits["1"][:3])])
    warnings = svc.check("1", [Crop("flat", flat), Crop("noise", noise), Crop("hand", load_image(digits["1"][4]))])
    assert [w for w in warnings if "nothing to tell" in w] == ["flat: one flat colour, nothing to tell a class by"]


def test_a_new_gallery_takes_the_services_detector(model, datasets, tmp_path, monkeypatch):
    from byakugan.embedder import load_image
    from byakugan.embedder.detection.assets import ANIMEFACE_CASCADE

    from .conftest import SHARED

    monkeypatch.setenv(ANIMEFACE_CASCADE.env, str(SHARED / "detectors" / "lbpcascade_animeface.xml"))
    svc = GalleryService(tmp_path / "g", model, detector="anime-face")
    scene = sorted((datasets / "anime-scenes" / "nishikino_maki").glob("*.jpg"))[0]
    crops = svc.crops([("maki.jpg", load_image(scene))])
    assert crops[0].image.size != load_image(scene).size  # cropped to the face
    svc.enroll("maki", crops)
    assert Gallery.open(tmp_path / "g").detector_config["name"] == "anime-face"


def test_an_edit_copies_the_gallery_in_memory_and_readers_keep_theirs(model, digits, tmp_path, monkeypatch):
    """Nobody else saved: an edit copies the gallery held in memory instead of reading the folder
    again (a read costs what the gallery holds); a reader's gallery never changes under it; a save
    by another process is still read."""
    import os

    import numpy as np

    from byakugan.embedder import load_image

    svc = GalleryService(tmp_path / "g", model)
    svc.enroll("1", [Crop(p.name, load_image(p)) for p in digits["1"][:3]])
    before = svc.gallery()
    opened = []
    real_open = Gallery.open.__func__
    monkeypatch.setattr(Gallery, "open", classmethod(lambda cls, path: opened.append(path) or real_open(cls, path)))
    svc.enroll("2", [Crop(p.name, load_image(p)) for p in digits["2"][:3]])
    svc.rename("2", "two")
    assert not opened and svc.labels() == {"1": 3, "two": 3}
    assert before.labels() == {"1": 3} and len(before.vectors) == 3  # the reader's copy is untouched
    db_file = tmp_path / "g" / "gallery.db"
    seen = db_file.stat()
    other = Gallery.open(tmp_path / "g")  # another process edits the folder
    other.enroll("3", other.embeddings([0]))
    other.save()
    os.utime(db_file, ns=(seen.st_atime_ns, seen.st_mtime_ns))  # within one step of a coarse file clock
    svc.remove("1")
    assert len(opened) == 2 and Gallery.open(tmp_path / "g").labels() == {"3": 1, "two": 3}
    q = other.embeddings([0])
    np.testing.assert_allclose(svc.gallery().search(q, 1)[0].hits[0].score, 1.0, atol=1e-5)


def test_an_undo_pressed_twice_puts_the_references_back_once(model, digits, tmp_path):
    import pytest

    from byakugan.embedder import load_image
    from byakugan.index import GalleryError

    svc = GalleryService(tmp_path / "g", model)
    svc.enroll("1", [Crop(n, load_image(p)) for n, p in zip("ab", digits["1"][:2])])
    svc.enroll("2", [Crop("c", load_image(digits["2"][0]))])
    removed = svc.remove("1")
    svc.restore(removed)
    with pytest.raises(GalleryError, match="is back already; nothing to undo"):
        svc.restore(removed)
    assert Gallery.open(tmp_path / "g").labels() == {"1": 2, "2": 1}


def test_a_removal_carries_the_version_its_own_save_left(model, digits, tmp_path, monkeypatch):
    """The page read the version after the edit returned, outside the lock: a save by another
    program in between passed for part of the removal, and Undo stayed offered over it."""
    from byakugan.embedder import load_image
    from byakugan.index import db
    from byakugan.ui.cli import main

    svc = GalleryService(tmp_path / "g", model)
    svc.enroll("1", [Crop(n, load_image(p)) for n, p in zip("ab", digits["1"][:2])])
    svc.enroll("2", [Crop("c", load_image(digits["2"][0]))])
    import contextlib

    from byakugan.index import service

    real = service.store.locked

    @contextlib.contextmanager
    def another_save_once_let_go(path, *args):
        with real(path, *args):
            yield
        if not getattr(another_save_once_let_go, "done", False):  # the edit's lock let go: another program saves,
            another_save_once_let_go.done = True
            assert main(["rename", str(tmp_path / "g"), "2", "two"]) == 0
            svc.gallery()  # and another tab's rerun reads it, before this edit's caller reads anything

    monkeypatch.setattr(service.store, "locked", another_save_once_let_go)
    removed = svc.remove_reference(0)
    assert removed.after is not None and removed.after != svc.version()  # so the page ends the offer of Undo
    assert svc.version() == ("generation", db.version(tmp_path / "g"))


def test_undo_of_one_of_two_identical_references_puts_it_back(model, digits, tmp_path):
    from byakugan.embedder import load_image

    svc = GalleryService(tmp_path / "g", model)
    same = load_image(digits["1"][0])
    svc.enroll("1", [Crop("a", same), Crop("b", same.copy())])  # the same picture twice: only a warning
    svc.enroll("2", [Crop("c", load_image(digits["2"][0]))])
    removed = svc.remove_reference(0)
    svc.restore(removed)
    assert Gallery.open(tmp_path / "g").labels() == {"1": 2, "2": 1}


def test_a_gallery_the_service_made_and_then_lost_is_gone_not_empty(model, digits, tmp_path):
    import shutil

    from byakugan.embedder import load_image
    from byakugan.index.errors import GalleryGoneError

    svc = GalleryService(tmp_path / "g", model)  # no gallery yet: its first enrolment makes it
    assert svc.labels() == {}
    svc.enroll("1", [Crop(n, load_image(p)) for n, p in zip("ab", digits["1"][:2])])
    shutil.rmtree(tmp_path / "g")
    with pytest.raises(GalleryGoneError, match="was moved or removed while this server ran"):
        svc.labels()  # not an empty gallery
    with pytest.raises(GalleryGoneError, match="was moved or removed while this server ran"):
        svc.enroll("2", [Crop("c", load_image(digits["2"][0]))])  # not a new gallery in its place
    assert not (tmp_path / "g").exists()


def test_a_new_label_differing_only_by_case_or_width_is_warned_of(model, digits, tmp_path, capsys):
    from byakugan.embedder import load_image
    from byakugan.index.labels import differing, variants
    from byakugan.ui.cli import main

    assert variants("NARUTO", {"naruto": 3}) == ["naruto"]
    assert variants("\uff2e\uff41\uff52\uff55\uff54\uff4f", {"naruto": 3}) == ["naruto"]  # full width
    assert variants("naruto", {"naruto": 3}) == [] and variants("sasuke", {"naruto": 3}) == []  # itself; another
    assert variants("nar\u200buto", {"Naruto": 1}) == ["Naruto"]  # what draws nothing does not tell them apart
    # Cyrillic а and Greek Ν, Α drawn as Latin letters: alike, and the letter named (it shows as the Latin one)
    assert variants("N\u0430ruto", {"Naruto": 1}) == ["Naruto"] and variants("\u039d\u0391RUTO", {"naruto": 1}) == ["naruto"]
    assert variants("\u041d\u0430\u0440\u0443\u0442\u043e", {"Naruto": 1}) == []  # Наруто: Cyrillic, read as itself
    # Greek or Cyrillic labels told apart only by case are alike, as Latin ones are; no letter named
    assert variants("\u041d\u0410\u0422\u0410\u0428\u0410", {"\u041d\u0430\u0442\u0430\u0448\u0430": 1}) == ["\u041d\u0430\u0442\u0430\u0448\u0430"]
    assert differing("\u041d\u0410\u0422\u0410\u0428\u0410", "\u041d\u0430\u0442\u0430\u0448\u0430") == \
        "differing only by case, width or look-alike letters"
    assert variants("\u0422\u041e\u0420", {"TOP": 1}) == ["TOP"]  # Cyrillic ТОР looks as TOP does
    assert differing("N\u0430ruto", "Naruto") == ("differing only by case, width or look-alike letters "
                                                 "(U+0430 CYRILLIC SMALL LETTER A)")
    svc = GalleryService(tmp_path / "g", model)
    svc.enroll("Naruto", [Crop(n, load_image(p)) for n, p in zip("abc", digits["1"][:3])])
    said = [w for w in svc.check("naruto", [Crop("x", load_image(digits["1"][3]))]) if "case, width or look-alike" in w]
    assert said == ["label 'naruto' is new, but 'Naruto' is enrolled, differing only by case, width or look-alike letters: these go "
                    "into a second class (enrol as 'Naruto' to add to that one)"]
    assert not [w for w in svc.check("Naruto", [Crop("x", load_image(digits["1"][3]))]) if "case, width or look-alike" in w]
    assert main(["enroll", str(tmp_path / "g"), "NARUTO", str(digits["1"][4])]) == 0  # enrolled all the same
    assert "'NARUTO' is new, but 'Naruto' is enrolled" in capsys.readouterr().err
    assert GalleryService(tmp_path / "g", model).labels() == {"NARUTO": 1, "Naruto": 3}


def test_a_rename_into_a_label_differing_only_by_case_or_width_is_said(digit_gallery, tmp_path, capsys):
    import shutil

    from byakugan.index.labels import alike
    from byakugan.ui.cli import main

    assert alike("NARUTO", ["naruto", "NARUTO", "sasuke"]) == ["naruto"] and alike("x", ["y"]) == []
    shutil.copytree(digit_gallery, tmp_path / "g")
    assert main(["rename", str(tmp_path / "g"), "0", "\uff21b"]) == 0  # a full-width A, beside nothing alike: quiet
    assert "warning" not in capsys.readouterr().err
    assert main(["rename", str(tmp_path / "g"), "3", "aB"]) == 0
    assert "'Ａb' is enrolled too, differing from 'aB' only by case, width or look-alike letters" in capsys.readouterr().err
