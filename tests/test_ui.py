"""The Streamlit page through AppTest: enrol (files, camera), search (known, unknown, nothing
detected), manage, export (never stale), bad uploads, first start offline."""

import re
import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


def upload(path):
    return (path.name, path.read_bytes(), "image/jpeg")


def start(tmp_path, monkeypatch, **env) -> AppTest:
    """The page on a new gallery under tmp_path, with these BYAKUGAN_* settings."""
    monkeypatch.setenv("BYAKUGAN_GALLERY", str(tmp_path / "gallery"))
    for key, value in env.items():
        monkeypatch.setenv(f"BYAKUGAN_{key.upper()}", value)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    return at


@pytest.fixture()
def app(tmp_path, monkeypatch):
    return start(tmp_path, monkeypatch)


def choose(at, label, files):
    """Type a label and upload files on the Enrol page, without enrolling them yet."""
    at.text_input(key="enrol_label").input(label).run()
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(p) for p in files]).run()


def plain(text: str) -> str:
    """What the page shows: its messages escape Markdown in the users' own text (md)."""
    return re.sub(r"\\(.)", r"\1", text)


def go(at, page):
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception


def enrol(at, label, files):
    choose(at, label, files)
    warnings = [plain(w.value) for w in at.warning]
    at.button(key="enrol_button").click().run()
    assert not at.exception and not at.error
    assert [plain(s.value) for s in at.success] == [f"Enrolled {len(files)} image(s) as {label!r}."]
    return warnings


def search(at, path):
    at.file_uploader(key="search_upload").set_value(upload(path)).run()
    assert not at.exception
    return at.subheader[0].value  # "label · 87%" or "unknown · 12%"


def test_enrol_three_digits_then_search_reads_the_right_label(app, digits, tmp_path):
    assert "gallery is empty" in app.info[0].value
    go(app, "Enrol")
    for label in ("0", "3", "7"):
        enrol(app, label, digits[label][:5])
    go(app, "Search")
    verdicts = {label: search(app, digits[label][6]) for label in ("0", "3", "7")}
    right = [lab for lab, text in verdicts.items() if text.split(" · ")[0] == lab]
    assert len(right) >= 2, verdicts  # chance is 1 in 3
    for text in verdicts.values():  # one calibrated confidence, in per cent
        assert re.fullmatch(r"(0|3|7|unknown) · \d{1,3}%", text), text
    assert any(re.fullmatch(r"\*\*[037]\*\* \d{1,3}%", m.value) for m in app.markdown)  # the top labels
    assert app.get("progress")  # confidence bars
    assert any("unknown below" in c.value for c in app.caption)
    from byakugan.index import Gallery

    assert Gallery.exists(tmp_path / "gallery")


def test_enrol_warns_about_near_duplicates(app, digits):
    go(app, "Enrol")
    enrol(app, "4", digits["4"][:3])
    warnings = enrol(app, "4", [digits["4"][0]])
    # judged by the raw cosine and named by its file, whatever the gallery's score scale
    assert any(w.startswith(f"{digits['4'][0].name}: near-duplicate of reference 0") for w in warnings)


def test_bad_uploads_show_a_message_not_a_traceback(app, digits):
    go(app, "Enrol")
    enrol(app, "4", digits["4"][:2])
    go(app, "Search")
    app.file_uploader(key="search_upload").set_value(("broken.jpg", b"\xff\xd8 nope", "image/jpeg")).run()
    assert not app.exception
    assert [plain(e.value) for e in app.error] == ["broken.jpg: not an image (format not recognised)"]


def test_uploads_over_the_limit_are_refused(tmp_path, monkeypatch, digits):
    at = start(tmp_path, monkeypatch, max_upload_mb="0")
    go(at, "Enrol")
    choose(at, "9", [digits["9"][0]])
    assert not at.exception
    assert plain(at.error[0].value).endswith("MB is over the 0 MB limit")
    assert at.button(key="enrol_button").disabled


def test_gallery_page_manages_classes(app, digits, tmp_path):
    from byakugan.index import Gallery

    go(app, "Enrol")
    enrol(app, "1", digits["1"][:3])
    enrol(app, "2", digits["2"][:2])
    go(app, "Gallery")
    assert [e.label for e in app.expander if "·" in e.label] == ["1 · 3 reference(s)", "2 · 2 reference(s)"]
    app.text_input(key='rename_to_"1"').input("one").run()
    app.button(key='rename_btn_"1"').click().run()
    assert "Renamed '1' to 'one'." in [plain(s.value) for s in app.success]
    assert app.session_state["editing"] == "one"  # the class being edited stays open
    app.button(key="rm_ref_1").click().run()  # the button under that picture
    assert "Removed reference 1 from 'one'." in [plain(s.value) for s in app.success]
    assert Gallery.open(tmp_path / "gallery").labels() == {"one": 2, "2": 2}
    app.button(key="undo_remove").click().run()  # put back: same vector, source and thumbnail, a new id
    assert "Put back 1 reference(s) of 'one'." in [plain(s.value) for s in app.success]
    g = Gallery.open(tmp_path / "gallery")
    assert g.labels() == {"one": 3, "2": 2} and g.references("one")[-1].source == digits["1"][1].name
    assert g.thumbnail(g.references("one")[-1].id) is not None
    assert not app.get("button") or "undo_remove" not in [b.key for b in app.button]
    app.button(key=f"rm_ref_{g.references('one')[-1].id}").click().run()
    assert app.button(key='rm_"2"').disabled  # removing a class needs the box ticked first
    app.checkbox(key='rm_sure_"2"_2').check().run()
    app.button(key='rm_"2"').click().run()
    assert not app.exception
    g = Gallery.open(tmp_path / "gallery")
    assert g.labels() == {"one": 2} and sorted(r.id for r in g.references()) == [0, 2]
    app.button(key="undo_remove").click().run()  # a whole class comes back too
    assert Gallery.open(tmp_path / "gallery").labels() == {"one": 2, "2": 2}


def test_another_tabs_edits_are_not_undone_or_removed_unseen(app, digits, tmp_path):
    from byakugan.index import Gallery
    from byakugan.ui.cli import main

    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    enrol(app, "2", digits["2"][:2])
    go(app, "Gallery")
    app.checkbox(key='rm_sure_"2"_2').check().run()  # "Remove all 2 reference(s) of '2'" ticked here...
    assert main(["enroll", str(tmp_path / "gallery"), "2", str(digits["2"][2])]) == 0  # ... one more added elsewhere
    app.button(key='rm_"2"').click().run()
    assert Gallery.open(tmp_path / "gallery").labels() == {"1": 2, "2": 3}  # not removed with what it never showed
    assert [plain(e.value) for e in app.error] == [
        "label '2' holds 3 reference(s) now, not the 2 shown (edited in another tab or program since); nothing removed"]
    assert 'rm_sure_"2"_3' in [c.key for c in app.checkbox] and not app.checkbox(key='rm_sure_"2"_3').value
    app.button(key="rm_ref_0").click().run()  # removed here: Undo is offered ...
    assert "undo_remove" in [b.key for b in app.button]
    assert main(["rename", str(tmp_path / "gallery"), "1", "one"]) == 0  # ... until another edit
    app.run()
    assert "undo_remove" not in [b.key for b in app.button]
    assert any("no longer offered: the gallery was edited since (here, in another tab" in plain(i.value) for i in app.info)
    assert Gallery.open(tmp_path / "gallery").labels() == {"one": 1, "2": 3}


def test_a_blank_query_is_answered_and_said_to_be_blank(app, digits, tmp_path):
    from PIL import Image

    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    go(app, "Search")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(dot := tmp_path / "dot.png")
    search(app, dot)
    assert [plain(w.value) for w in app.warning] == [
        "This picture is blank (only 1x1 pixels, too few to tell a class by): answered unknown, whatever it looks most like."]
    search(app, digits["1"][3])
    assert not app.warning


def test_what_was_typed_on_a_page_is_there_on_coming_back(app, digits):
    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    app.text_input(key="enrol_label").input("half typed").run()
    go(app, "Gallery")
    app.text_input(key='rename_to_"1"').input("uno").run()
    go(app, "Search")
    go(app, "Enrol")
    assert app.text_input(key="enrol_label").value == "half typed"
    go(app, "Gallery")
    assert app.text_input(key='rename_to_"1"').value == "uno"


def test_a_label_written_right_to_left_keeps_its_place_in_the_line(app, digits):
    go(app, "Enrol")
    enrol(app, "שלום", digits["1"][:2])
    enrol(app, "a", digits["2"][:1])
    go(app, "Gallery")
    assert [e.label for e in app.expander if "·" in e.label] == ["a · 1 reference(s)", "\u2068שלום\u2069 · 2 reference(s)"]


def test_labels_that_spell_another_widgets_key_do_not_break_the_page(app, digits):
    go(app, "Enrol")
    for label, n in (("a", 2), ("sure_a_2", 1), ("ref_0", 1), ("btn_x", 1), ("x", 1)):
        enrol(app, label, digits[str(n + 1)][:n])
    go(app, "Gallery")  # "rm_sure_a_2", "rm_ref_0" and "rename_btn_x" were each two widgets' keys
    assert not app.error and len([e for e in app.expander if "·" in e.label]) == 5


def test_a_name_typed_for_a_class_is_not_kept_for_a_later_one(app, digits):
    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    go(app, "Gallery")
    app.text_input(key='rename_to_"1"').input("one").run()
    app.button(key='rename_btn_"1"').click().run()
    app.text_input(key='rename_to_"one"').input("1").run()
    app.button(key='rename_btn_"one"').click().run()
    assert app.text_input(key='rename_to_"1"').value == ""  # not the "one" typed before for the first class 1


def test_threshold_is_automatic_or_set_on_the_confidence_scale(app, digits, tmp_path):
    from byakugan.index import Gallery

    go(app, "Enrol")
    enrol(app, "1", digits["1"][:3])
    go(app, "Gallery")  # one class: no stranger for the references to be told from, and the page says so
    assert any("the model's, as the references cannot choose one: needs 2 classes" in c.value for c in app.caption)
    go(app, "Enrol")
    enrol(app, "2", digits["2"][:3])
    go(app, "Gallery")
    g = Gallery.open(tmp_path / "gallery")
    assert g.threshold_auto and app.radio(key="threshold_mode").value == "automatic"
    # 6 true-match scores (3 per class, each reference against the rest of its class) are too few yet
    assert any("the model's until the gallery has 10 true-match scores (two classes of five references); it has 6"
               in c.value for c in app.caption)
    assert "Confidence is calibrated on this gallery's own references." in [c.value for c in app.caption]
    app.radio(key="threshold_mode").set_value("set by hand").run()
    app.slider(key="threshold_pct").set_value(80).run()
    app.button(key="save_threshold").click().run()
    assert "Unknown below 80% confidence now." in [plain(s.value) for s in app.success]
    g = Gallery.open(tmp_path / "gallery")
    assert not g.threshold_auto and g.threshold > 0.0 and app.slider(key="threshold_pct").value == 80
    assert app.button(key="save_threshold").disabled  # saving without a change cannot move it
    raw = app.text_input(key="threshold")
    assert raw.value == f"{g.threshold:.4f}"  # the raw box shows it too
    raw.set_value("-0.5").run()  # below every reference's best score against the other class: said, as a warning
    app.button(key="save_raw_threshold").click().run()
    assert any("100% of the references' best scores against a class not theirs reach it" in w.value
               and "that is most of them" in w.value for w in app.warning)
    for typed in ("1e309", "5", "nan", "high"):  # refused where typed, and Save cannot store another value
        app.text_input(key="threshold").set_value(typed).run()
        assert f"{typed!r} is not a number from -1 to 1" in [e.value for e in app.error]
        assert app.button(key="save_raw_threshold").disabled
    app.text_input(key="threshold").set_value("0.95").run()
    app.button(key="save_raw_threshold").click().run()
    assert Gallery.open(tmp_path / "gallery").threshold == 0.95
    assert any("0% of the references' best scores" in c.value for c in app.caption) and not any(
        "most of them" in w.value for w in app.warning)
    # the slider shows the saved threshold, not the 80% it showed before: one click on Save would have undone it
    assert app.slider(key="threshold_pct").value != 80 and app.button(key="save_threshold").disabled
    go(app, "Enrol")
    enrol(app, "1", digits["1"][3:5])
    enrol(app, "2", digits["2"][3:5])
    go(app, "Gallery")
    app.radio(key="threshold_mode").set_value("automatic").run()
    assert "The gallery's own references choose the threshold now." in [plain(s.value) for s in app.success]
    assert any(re.fullmatch(r"Unknown below \d+% confidence \(now(, held down to the best score a reference reaches against another "
                                r"class)?; raw threshold -?[0-9.]+\)\.", c.value) for c in app.caption)
    assert Gallery.open(tmp_path / "gallery").threshold_auto
    app.radio(key="scoring").set_value("mean").run()
    assert not app.exception and Gallery.open(tmp_path / "gallery").scoring == "mean"


def test_enrol_from_the_camera(app, digits, tmp_path):
    from byakugan.index import Gallery

    go(app, "Enrol")
    app.text_input(key="enrol_label").input("8").run()
    app.toggle(key="enrol_use_camera").set_value(True).run()
    assert app.camera_input  # AppTest cannot take a picture: the shots go in as the camera would hand them
    for n, path in enumerate(digits["8"][:3]):
        app.session_state["enrol_shots"][f"shot{n}"] = FakeShot(path)
    app.run()
    assert app.button(key="enrol_button").label == "Enrol 3 image(s) as '8'"
    app.button(key="enrol_button").click().run()
    assert [plain(s.value) for s in app.success] == ["Enrolled 3 image(s) as '8'."]
    assert app.button(key="enrol_button").label.startswith("Enrol (add")
    assert Gallery.open(tmp_path / "gallery").labels() == {"8": 3}
    app.button(key="to_search").click().run()
    assert app.sidebar.radio(key="page").value == "Search"


class FakeShot:
    """What st.camera_input returns, enough for the page: name, size, getvalue()."""

    def __init__(self, path):
        self.name, self._data = path.name, path.read_bytes()
        self.size = len(self._data)

    def getvalue(self):
        return self._data


def test_search_with_nothing_detected_answers_on_the_whole_picture(tmp_path, monkeypatch, digits):
    # An anime-face gallery of hands: the cascade finds no face in them, so enrolment and search
    # both take the whole picture, and the page says so instead of showing nothing.
    at = start(tmp_path, monkeypatch, detector="anime-face")
    go(at, "Enrol")
    choose(at, "3", digits["3"][:3])
    captions = [plain(img.caption) for el in at.get("image") for img in el.proto.imgs if img.caption]
    assert captions == [f"{p.name} · no face: whole picture" for p in digits["3"][:3]], captions
    at.button(key="enrol_button").click().run()
    go(at, "Search")
    verdict = search(at, digits["3"][7])
    assert "No face found in the picture: searched the whole picture instead." in [i.value for i in at.info]
    assert re.fullmatch(r"(3|unknown) · \d{1,3}%", verdict)


def test_unknown_reads_unknown_with_its_nearest(app, digits):
    go(app, "Enrol")
    enrol(app, "0", digits["0"][:3])
    enrol(app, "5", digits["5"][:3])
    go(app, "Gallery")
    app.radio(key="threshold_mode").set_value("set by hand").run()
    app.slider(key="threshold_pct").set_value(99).run()
    app.button(key="save_threshold").click().run()
    go(app, "Search")
    assert search(app, digits["9"][0]).startswith("unknown · ")
    assert any("but below the threshold" in c.value and "unknown below 99%" in c.value for c in app.caption)


def test_first_start_offline_with_no_cache(tmp_path, monkeypatch, digits):
    # Nothing may come from the network on first use: the cascade, the verifier and the models ship.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    at = start(tmp_path, monkeypatch, detector="anime-face-verified")
    assert not at.error
    go(at, "Enrol")
    go(at, "Search")
    assert "gallery is empty" in at.info[0].value


def test_export_page_downloads_a_loadable_bundle_never_a_stale_one(app, digits, tmp_path):
    from byakugan.index import bundle

    go(app, "Enrol")
    enrol(app, "5", digits["5"][:2])
    enrol(app, "6", digits["6"][:2])
    go(app, "Export")
    app.button(key="build_bundle").click().run()
    assert not app.exception and app.get("download_button")
    (tmp_path / "b.zip").write_bytes(app.session_state["bundle"][1])
    assert bundle.load(tmp_path / "b.zip").labels() == {"5": 2, "6": 2}
    go(app, "Gallery")
    app.checkbox(key='rm_sure_"6"_2').check().run()
    app.button(key='rm_"6"').click().run()
    go(app, "Export")  # the old bundle is gone; building again gives the edited gallery
    assert not app.get("download_button")
    assert "The gallery changed since the bundle was built: build it again." in [i.value for i in app.info]
    app.button(key="build_bundle").click().run()
    (tmp_path / "c.zip").write_bytes(app.session_state["bundle"][1])
    assert bundle.load(tmp_path / "c.zip").labels() == {"5": 2}


def test_a_click_on_what_another_tab_removed_or_renamed_since_is_answered(app, digits, tmp_path):
    """The click's rerun no longer draws that button: a plain button's click was dropped unseen."""
    from byakugan.index import Gallery
    from byakugan.ui.cli import main

    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    enrol(app, "2", digits["2"][:2])
    go(app, "Gallery")
    gallery = str(tmp_path / "gallery")
    assert main(["remove", gallery, "--id", "0"]) == 0
    app.button(key="rm_ref_0").click().run()
    assert not app.exception and [plain(e.value) for e in app.error] == [f"reference id 0: not in gallery {gallery}"]
    app.text_input(key='rename_to_"2"').input("two").run()
    assert main(["rename", gallery, "2", "deux"]) == 0
    app.button(key='rename_btn_"2"').click().run()
    assert [plain(e.value) for e in app.error] == [f"label '2': not in gallery {gallery} (labels: 1, deux)"]
    assert Gallery.open(gallery).labels() == {"1": 1, "deux": 2}
    app.run()  # the error was for that click
    assert not app.error and [e.label for e in app.expander if "·" in e.label] == ["1 · 1 reference(s)", "deux · 2 reference(s)"]


def test_a_setting_saved_in_another_tab_is_not_undone_by_this_one(tmp_path, monkeypatch, digits):
    """Each rerun compared the radios' own values with the gallery and saved them: a tab that had
    not touched the threshold or the ranking put back what it last showed."""
    from byakugan.index import Gallery

    a = start(tmp_path, monkeypatch)
    go(a, "Enrol")
    enrol(a, "1", digits["1"][:3])
    enrol(a, "2", digits["2"][:3])
    go(a, "Gallery")
    b = AppTest.from_file(APP, default_timeout=300)
    b.run()
    go(b, "Gallery")
    other = next(s for s in ("nearest", "mean") if s != Gallery.open(tmp_path / "gallery").scoring)
    b.radio(key="scoring").set_value(other).run()
    b.radio(key="threshold_mode").set_value("set by hand").run()
    b.slider(key="threshold_pct").set_value(80).run()
    b.button(key="save_threshold").click().run()
    g = Gallery.open(tmp_path / "gallery")
    assert g.scoring == other and not g.threshold_auto
    a.text_input(key='rename_to_"1"').input("x").run()  # any rerun of the other tab
    g = Gallery.open(tmp_path / "gallery")
    assert g.scoring == other and not g.threshold_auto, "the other tab undid them"
    assert a.radio(key="scoring").value == other and a.radio(key="threshold_mode").value == "set by hand"


def test_file_names_are_shown_as_named_not_as_markdown_or_turned_around():
    from byakugan.ui.widgets import md

    assert md("abc\u202egnp.jpg: not an image") == r"abc\\u202egnp.jpg\: not an image"  # the override shown, not obeyed
    assert md("**evil** :red[x] $x$.jpg") == r"\*\*evil\*\* \:red\[x\] \$x\$.jpg"


def test_labels_are_shown_as_typed_not_as_markdown(app, digits):
    go(app, "Enrol")
    enrol(app, "**b** :red[x]", digits["1"][:2])
    go(app, "Gallery")
    assert app.expander[0].label.startswith(r"\*\*b\*\* \:red\[x\]")


def test_a_gallery_damaged_while_the_page_runs_is_one_line_on_every_page(app, tmp_path, digits):
    go(app, "Enrol")
    enrol(app, "1", digits["1"][:2])
    with open(tmp_path / "gallery" / "gallery.db", "r+b") as f:
        f.write(b"not a database at all" * 10)
    for page in ("Search", "Gallery", "Live", "Export"):
        go(app, page)  # no exception, no traceback
        assert [plain(e.value) for e in app.error] and "gallery" in plain(app.error[0].value)


def test_a_fault_of_ours_is_one_line_and_its_traceback_goes_to_the_log(app, monkeypatch, caplog):
    from byakugan.index.service import GalleryService

    monkeypatch.setattr(GalleryService, "gallery", lambda self: 1 / 0)
    with caplog.at_level("ERROR", logger="byakugan.ui"):
        go(app, "Gallery")  # no exception for AppTest: nothing reaches Streamlit's traceback display
    assert [plain(e.value) for e in app.error] == [
        "Internal error (ZeroDivisionError) on the Gallery page; nothing half-done was saved. "
        "The details are in the log of the server running this page."]
    assert "the Gallery page failed" in caplog.text and "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    go(app, "Search")
    assert not app.error


def test_a_new_gallery_of_anime_faces_takes_the_anime_model_and_says_why(app, datasets, tmp_path):
    from byakugan.index import Gallery

    go(app, "Gallery")
    assert any("model picked by the first images enrolled" in c.value for c in app.caption)
    faces = sorted((datasets / "anime-onepiece" / "lufei").glob("*.jpg"))[:5]
    go(app, "Enrol")
    enrol(app, "luffy", faces)
    assert Gallery.open(tmp_path / "gallery").model_name == "anime-finetuned"
    go(app, "Gallery")
    assert any(re.search(r"model anime-finetuned \(picked by the first images enrolled: \d of 5 images look like anime faces\)", c.value) for c in app.caption)


def test_the_enrol_page_says_which_model_a_new_gallery_will_take_before_enrolling(app, datasets):
    go(app, "Enrol")
    choose(app, "luffy", sorted((datasets / "anime-onepiece" / "lufei").glob("*.jpg"))[:3])
    assert any(re.search(r"A new gallery: these will be embedded with model anime-finetuned \(\d of 3 images look like "
                         r"anime faces\); it keeps it\.", c.value) for c in app.caption)
    enrol(app, "luffy", sorted((datasets / "anime-onepiece" / "lufei").glob("*.jpg"))[3:6])
    choose(app, "luffy", sorted((datasets / "anime-onepiece" / "lufei").glob("*.jpg"))[6:8])
    assert not any("A new gallery" in c.value for c in app.caption)  # decided: nothing more to say


def test_a_confidence_past_the_gallerys_reach_is_told_as_saved():
    """QA: a 99% asked of a gallery whose scores reach 68% at most saved the end of the range while
    the notice said 99%."""
    from types import SimpleNamespace

    from byakugan.ui.threshold import confidence_said

    cal = SimpleNamespace(confidence=lambda raw: 0.68 if raw >= 2.0 else 0.5 + raw / 10)
    assert confidence_said(99, cal, 2.0) == ("99% is past what this gallery's scores reach (raw threshold 2.0000, the "
                                             "end of their range): unknown below 68% confidence now.")
    assert confidence_said(60, cal, 1.0) == "Unknown below 60% confidence now."


def test_a_picture_far_wider_than_tall_is_shown_not_an_internal_error(app, digits, tmp_path):
    """Shown 96 or 480 pixels wide, a strip was less than a pixel tall: Streamlit's resize raised."""
    import numpy as np
    from PIL import Image

    from byakugan.ui.widgets import at_width

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 3000, 3), dtype=np.uint8)).save(strip := tmp_path / "strip.png")
    Image.fromarray(rng.integers(0, 255, (20, 20000, 3), dtype=np.uint8)).save(wide := tmp_path / "wide.png")
    assert at_width(Image.open(strip), 96).size == (3000, 63)
    square = Image.open(digits["1"][0])
    assert at_width(square, 96) is square
    go(app, "Enrol")
    enrol(app, "banner", [strip, digits["1"][0]])
    go(app, "Search")
    search(app, wide)
    go(app, "Gallery")  # (every class's thumbnails are drawn, its expander open or not)
    assert not app.exception and any(e.label.startswith("banner") for e in app.expander)


def test_a_rename_into_a_label_differing_only_by_case_is_said_on_the_page(app, digits):
    go(app, "Enrol")
    enrol(app, "one", digits["1"][:2])
    enrol(app, "2", digits["2"][:2])
    go(app, "Gallery")
    app.text_input(key='rename_to_"2"').input("ONE").run()
    app.button(key='rename_btn_"2"').click().run()
    assert ("Renamed '2' to 'ONE'. 'one' is enrolled too, differing only by case, width or look-alike letters: another class."
            in [plain(s.value) for s in app.success])


def test_two_confidences_that_would_read_alike_get_a_decimal():
    from byakugan.ui.widgets import percents

    assert percents(0.1604, 0.1631) == ("16.0%", "16.3%")
    assert percents(0.44, 0.16) == ("44%", "16%") and percents(0.5, 0.5) == ("50%", "50%")
