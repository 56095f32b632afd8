"""What a QA pass on the page found: a tall picture's preview pushed the Enrol page's rows apart, and an
empty gallery's Gallery page said nothing of what to do."""

import shutil

import numpy as np
from PIL import Image

from byakugan.ui.widgets import preview
from tests.test_page_leftovers import shown
from tests.test_ui import go, start, upload


def removes(at) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith("rm_ref_")]


def test_a_small_gallery_draws_every_class(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    assert not at.exception and len(removes(at)) == 15


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
