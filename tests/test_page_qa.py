"""What a QA pass on the page found: a big gallery's Gallery page took 25 s a rerun (Streamlit draws a
closed panel's pictures all the same), a tall picture's preview pushed the Enrol page's rows apart, and
an empty gallery's Gallery page said nothing of what to do."""

import shutil

import numpy as np
from PIL import Image

from byakugan.ui import acting
from byakugan.ui.widgets import preview
from tests.test_page_leftovers import shown
from tests.test_ui import go, start, upload


def removes(at) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith("rm_ref_")]


def test_a_big_gallery_draws_pictures_only_in_the_classes_open(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")  # 15 references: "big" beyond 10 here
    monkeypatch.setattr(acting, "LAZY_OVER", 10)
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert not at.exception and not removes(at)  # every class closed: no picture drawn
    assert sorted(shown(e.label) for e in at.expander if "reference(s)" in e.label) == [
        f"{d} · 5 reference(s)" for d in ("0", "3", "7")]
    at.session_state['class_"3"'] = True  # the user opens class 3
    at.run()
    assert not at.exception and len(removes(at)) == 5
    at.button(key=removes(at)[0]).click().run()  # an edit there keeps it open, drawn
    assert not at.exception and len(removes(at)) == 4
    assert [shown(s.value) for s in at.success][0].startswith("Removed reference")


def test_a_small_gallery_draws_every_class(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert not at.exception and len(removes(at)) == 15


def test_a_class_with_many_references_shows_the_first_until_show_all(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    monkeypatch.setattr(acting, "PER_CLASS", 2)
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert len(removes(at)) == 6  # two of each class
    more = at.button(key='all_btn_"7"')
    assert more.label == "Show all 5 (the first 2 are shown)"
    more.click().run()
    assert not at.exception and len(removes(at)) == 9
    go(at, "Search")
    go(at, "Gallery")  # still all, on coming back
    assert len(removes(at)) == 9


def test_a_tall_picture_is_previewed_no_taller_than_wide(tmp_path, monkeypatch):
    tall = Image.fromarray(np.full((2000, 100, 3), 200, np.uint8))
    small = preview(tall)
    assert small.width == small.height <= 192 and small.mode == "RGBA"
    assert small.getchannel("A").getextrema() == (0, 255)  # see-through sides, the picture opaque
    wide = Image.new("RGB", (300, 100))
    assert preview(wide) is wide  # as wide as tall or wider: as it is
    path = tmp_path / "tall.png"
    tall.save(path)
    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(path)]).run()
    assert not at.exception and not at.error and at.get("image")


def test_an_empty_gallery_page_says_what_to_do(tmp_path, monkeypatch):
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert not at.exception
    assert [i.value for i in at.info] == ["The gallery is empty: enrol some images on the Enrol page first."]
