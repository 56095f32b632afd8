"""What a QA pass on the page found: a tall picture's preview pushed the Enrol page's rows apart, and an
empty gallery's Gallery page said nothing of what to do."""

import shutil

import numpy as np
from PIL import Image

from byakugan.ui.widgets import preview
from tests.test_page_leftovers import shown
from tests.test_ui import go, plain, start, upload


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


def test_a_failed_setting_goes_back_to_the_gallerys_and_is_not_tried_again_later(tmp_path, monkeypatch, digit_gallery):
    """A ranking that could not be saved (a read-only folder) stayed chosen: every later rerun, whatever
    was clicked, tried it again, and saved it once the folder could be written."""
    from byakugan.index import Gallery
    from tests.test_leftovers_cli_http import unwritable

    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    with unwritable(tmp_path / "gallery"):
        at.radio(key="scoring").set_value("mean").run()
        assert any("its folder is read-only" in e.value for e in at.error)
        assert at.radio(key="scoring").value == "nearest"  # as on disk
        at.radio(key="threshold_mode").set_value("set by hand").run()
        assert not any("read-only" in e.value for e in at.error)  # not tried again
    at.radio(key="threshold_mode").set_value("automatic").run()
    assert Gallery.open(tmp_path / "gallery").scoring == "nearest" and not any("ranked by" in s.value for s in at.success)


def test_a_classs_failed_rename_is_said_in_its_own_panel(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    at.text_input(key='rename_to_"7"').set_value("3").run()  # a label the gallery holds
    at.button(key='rename_btn_"7"').click().run()
    said = [e for e in at.error if "already" in e.value or "3" in e.value]
    assert said and all(e not in at.main.children.values() for e in said)  # not at the page's top
    panel = next(x for x in at.expander if x.label.startswith("7 ·"))
    assert any(e.value == said[0].value for e in panel.error)


def test_removing_a_class_names_the_sequences_it_breaks_and_a_rename_to_its_own_name_is_refused(
        tmp_path, monkeypatch, digit_gallery):
    from byakugan.index import Gallery, editing

    shutil.copytree(digit_gallery, tmp_path / "gallery")
    with editing(tmp_path / "gallery") as g:
        g.sequences.add("count", ["0", "3", "7"])
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    generation = Gallery.open(tmp_path / "gallery").generation
    at.text_input(key='rename_to_"7"').set_value(" 7 ").run()
    at.button(key='rename_btn_"7"').click().run()
    assert "rename '7' -> '7': it has that name already; nothing changed" in [plain(e.value).replace("\u2060", "") for e in at.error]
    assert Gallery.open(tmp_path / "gallery").generation == generation  # nothing saved
    at.checkbox(key='rm_sure_"3"_5').check().run()
    at.button(key='rm_"3"').click().run()
    assert ("Removed '3' (5 reference(s)). Sequence(s) 'count' cannot fire until '3' is enrolled again."
            in [plain(s.value) for s in at.success])


def test_the_enrol_page_says_at_once_that_its_gallery_was_removed(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    shutil.rmtree(tmp_path / "gallery")
    at.run()  # nothing typed yet
    assert [plain(e.value) for e in at.error] == [f"gallery {tmp_path / 'gallery'}: was moved or removed while this server ran; "
                                           "restart it"]
