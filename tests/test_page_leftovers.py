"""The page's loose ends: labels that look like links or Markdown shown as typed, uploads kept while
the user visits another page, transparent pictures previewed as they are embedded, long file names
cut in the middle; and, in Chromium, an upload over the limit and a download of a removed gallery
said in view."""

import contextlib
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.test_ui import go, start, upload
from tests.test_ui_browser import browser, serve  # noqa: F401 (a fixture)

ODD = ["http://x.y", "www.x.y <b>x</b>", "a.b@c.de [a](b)", "**bold** a &amp; b :material/star:",
       ":material_home: :streamlit: -> <=", "- item", "1. one"]


def shown(text: str) -> str:
    """What a reader sees of the page's Markdown: escapes undone, the invisible joiners and isolates gone."""
    return re.sub(r"[\u2060\u2068\u2069]", "", re.sub(r"\\(.)", r"\1", text))


def rewritten(text: str) -> list[str]:
    """What Streamlit's Markdown would still rewrite after parsing (escapes do not reach there): addresses
    made links (GFM, as mdast-util-gfm-autolink-literal finds them), pictures, arrows."""
    text = re.sub(r"\\(.)", r"\1", text)  # the parsed text, joiners kept
    found = []
    for m in re.finditer(r"(https?://|www(?=\.))([-.\w]+)", text, re.IGNORECASE):
        before = text[m.start() - 1] if m.start() else " "
        parts = (m[2] if m[1].lower().startswith("http") else "www" + m[2]).split(".")
        if (before.isspace() or not before.isalnum() and before != "\u2060") and len(parts) > 1:
            found.append(m.group())
    found += [m.group() for m in re.finditer(r"[-.\w+]+@[-\w]+(?:\.[-\w]+)+", text)]
    found += re.findall(r":material_\w+:|:material/|:streamlit:", text)
    found += [m[2] for m in re.finditer(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(?=\s|$)", text)]
    return found


def texts(at) -> list[str]:
    """Every piece of Markdown the page drew: messages, captions, headings, widget labels, tooltips."""
    out = []
    for kind in ("markdown", "caption", "subheader", "header", "success", "info", "warning", "error", "text"):
        found = getattr(at, kind)
        out += [e.value for e in found if kind != "text"] + [e.proto.help for e in found if getattr(e.proto, "help", "")]
    for kind in ("expander", "checkbox", "button"):
        out += [e.label for e in getattr(at, kind)]
    out += [img.caption for el in at.get("image") for img in el.proto.imgs if img.caption]
    return out


def enrol_as(at, label, files):
    at.text_input(key="enrol_label").input(label).run()
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(p) for p in files]).run()
    at.button(key="enrol_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [shown(s.value) for s in at.success] == [f"Enrolled {len(files)} image(s) as {label!r}."]
    return texts(at)


def test_labels_that_look_like_links_or_markdown_are_shown_as_typed(tmp_path, monkeypatch, digits):
    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    seen = []
    for n, label in enumerate(ODD):
        seen += enrol_as(at, label, digits[str(n % 10)][:2])
    go(at, "Gallery")
    seen += texts(at)
    classes = [shown(e.label) for e in at.expander if "reference(s)" in e.label]
    assert sorted(classes) == sorted(f"{label} · 2 reference(s)" for label in ODD)
    at.checkbox(key='rm_sure_"http://x.y"_2').check().run()
    at.button(key='rm_"http://x.y"').click().run()  # a notice and Undo, both naming it
    seen += texts(at)
    assert "Removed 'http://x.y' (2 reference(s))." in [shown(s.value) for s in at.success]
    go(at, "Search")
    at.file_uploader(key="search_upload").set_value(upload(digits["4"][5])).run()
    seen += texts(at)
    assert not at.exception
    assert sum(m.value.startswith("**") for m in at.markdown) == 5  # the top labels, in bold
    for text in seen:
        assert not rewritten(text), (text, rewritten(text))
    for label in ODD:  # each is somewhere, literally
        assert any(label in shown(t) for t in seen), label


def test_an_upload_is_kept_while_the_user_visits_another_page(tmp_path, monkeypatch, digits):
    from byakugan.index import Gallery

    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    at.text_input(key="enrol_label").input("5").run()
    files = digits["5"][:2]
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(p) for p in files]).run()
    assert at.button(key="enrol_button").label == "Enrol 2 image(s) as '5'"
    go(at, "Gallery")
    go(at, "Enrol")  # the uploader is a new, empty one: its files were kept
    assert at.button(key="enrol_button").label == "Enrol 2 image(s) as '5'"
    [kept] = [shown(c.value) for c in at.caption if "Kept from before" in c.value]
    assert all(p.name in kept for p in files)
    # the same file uploaded again counts once; a new one is added to those kept
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value(
        [upload(files[0]), upload(digits["5"][2])]).run()
    assert at.button(key="enrol_button").label == "Enrol 3 image(s) as '5'"
    at.button(key="enrol_forget_kept").click().run()  # forgotten: only what the uploader holds
    assert at.button(key="enrol_button").label == "Enrol 2 image(s) as '5'"
    go(at, "Search")
    go(at, "Enrol")
    at.button(key="enrol_button").click().run()
    assert [shown(s.value) for s in at.success] == ["Enrolled 2 image(s) as '5'."]
    assert Gallery.open(tmp_path / "gallery").labels() == {"5": 2}
    assert not [c for c in at.caption if "Kept from before" in c.value]  # enrolled: nothing kept any more
    assert at.button(key="enrol_button").label.startswith("Enrol (add")


@pytest.fixture()
def media(monkeypatch) -> dict:
    """The bytes of each picture the page shows, by the id in its URL."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored, load = {}, MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):
        stored[file_id := load(self, data, mimetype, kind, filename)] = data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return stored


def shown_pictures(at, media) -> list[Image.Image]:
    return [Image.open(io.BytesIO(media[img.url.rsplit("/", 1)[1].split(".")[0]])).convert("RGB")
            for el in at.get("image") for img in el.proto.imgs]


def test_a_transparent_picture_is_previewed_as_it_is_embedded(tmp_path, monkeypatch, digits, media):
    from byakugan.embedder.images import load_image

    rgba = np.zeros((96, 128, 4), np.uint8)
    rgba[:, 64:] = (200, 30, 30, 255)  # left half see-through (its colour black), right half red
    Image.fromarray(rgba, "RGBA").save(png := tmp_path / "half.png")
    embedded = np.asarray(load_image(png))
    assert (embedded[:, :64] == 255).all()  # as the pipeline loads it: on white
    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    at.text_input(key="enrol_label").input("half").run()
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(png)]).run()
    [preview] = shown_pictures(at, media)
    same = np.asarray(Image.fromarray(embedded).resize(preview.size), int)  # shown 96 pixels wide
    assert np.abs(np.asarray(preview, int) - same).mean() < 3  # what is embedded, white and all
    note = "Transparent parts are shown on white, as the model sees them."
    assert note in [c.value for c in at.caption]
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(digits["1"][0])]).run()
    assert note not in [c.value for c in at.caption]  # an opaque picture: nothing to say
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(png)]).run()
    at.button(key="enrol_button").click().run()
    go(at, "Search")
    at.file_uploader(key="search_upload").set_value(upload(png)).run()
    assert not at.exception and note in [c.value for c in at.caption]


def test_short_cuts_a_name_in_the_middle_keeping_letters_whole():
    from byakugan.ui.widgets import short

    assert short("IMG_1121.jpg") == "IMG_1121.jpg"
    assert short("a-very-long-file-name-that-goes-on.png") == "a-very-…s-on.png"  # the end (and extension) kept
    assert short("IMG_20240101_0001.jpg", 10) != short("IMG_20240101_0002.jpg", 10)
    assert short("/some/folder/x.jpg") == "x.jpg"
    accent = "cafe\u0301" * 6 + ".jpg"  # é as e + a combining accent
    cut = short(accent)
    assert "…" in cut and not cut.split("…")[1].startswith("\u0301") and not cut.split("…")[0].endswith("e")
    wide = short("日本語のとても長いファイルの名前です.png")  # CJK letters take two columns each
    assert wide == "日本語…です.png"
    family = "👨\u200d👩\u200d👧"
    cut = short(family * 10 + ".png")
    assert family in cut and set(cut.replace(family, "")) == set("….png")  # never a person cut from the family


def test_long_file_names_are_cut_in_the_middle_and_whole_in_the_tooltip(tmp_path, monkeypatch, digits):
    from byakugan.ui.widgets import md, short

    name = "a-photo-of-the-sign-for-three-taken-in-the-evening-light-number-0001.jpg"
    shutil.copy(digits["3"][0], long := tmp_path / name)
    at = start(tmp_path, monkeypatch)
    go(at, "Enrol")
    at.text_input(key="enrol_label").input("3").run()
    next(w for w in at.file_uploader if w.key.startswith("enrol_upload")).set_value([upload(long)]).run()
    [caption] = [img.caption for el in at.get("image") for img in el.proto.imgs]  # under its preview
    assert shown(caption) == short(name, 12)
    assert [m.proto.help for m in at.markdown if m.value.startswith("What will be enrolled")] == [md(name)]
    at.button(key="enrol_button").click().run()
    go(at, "Gallery")
    [caption] = [c for c in at.caption if "…" in c.value]
    assert shown(caption.value) == "#0 " + short(name, 12) and not caption.proto.wrap  # one line
    assert at.button(key="rm_ref_0").help == f"Reference 0: {md(name)}"
    go(at, "Search")
    at.file_uploader(key="search_upload").set_value(upload(digits["3"][1])).run()
    [line] = [t for t in at.text if "reference 0" in t.value]
    assert line.value.endswith("reference 0  " + short(name, 40)) and line.proto.help == md(name)


@contextlib.contextmanager
def served(args: list[str]):
    """`byakugan ui` with these arguments, stopped (and checked gone) however the test ends."""
    running = serve(args)
    url = next(running)
    try:
        yield url
    finally:
        next(running, None)  # on past its yield: stop the server


def open_page(browser, url, name: str, marker: str):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_text("Search by image").wait_for(timeout=180_000)  # the first run loads the model
    page.get_by_text(name, exact=True).first.click()
    page.get_by_text(marker).first.wait_for(timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')", timeout=180_000)
    return page


MARKDOWN = ":is([data-testid=stMarkdownContainer], [data-testid=stCaptionContainer])"


def test_labels_in_chromium_are_shown_as_typed(browser, model, digits, tmp_path):  # noqa: F811
    from tests.conftest import new_gallery

    pipe, g = new_gallery(model, tmp_path / "odd")
    for n, label in enumerate(ODD):
        pipe.enroll(g, label, digits[str(n)][:2])
    g.save()
    with served(["--gallery", str(tmp_path / "odd")]) as url:
        page = open_page(browser, url, "Gallery", "Answer “unknown” below")
        classes = page.locator(f"[data-testid=stExpander] summary {MARKDOWN}")
        page.wait_for_function(f"document.querySelectorAll('[data-testid=stExpander]').length == {len(ODD)}", timeout=60_000)
        assert sorted(shown(t) for t in classes.all_inner_texts()) == sorted(f"{label} · 2 reference(s)" for label in ODD)
        assert not page.locator(f"{MARKDOWN} :is(a[href^=http], a[href^=mailto], span[role=img], img)").count()
        page.get_by_text("Search", exact=True).first.click()
        page.get_by_text("Search by image").wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(digits["1"][5]))
        page.get_by_text("Raw scores").wait_for(timeout=120_000)
        tops = page.locator(f"{MARKDOWN} strong").all_inner_texts()  # the top labels, in bold
        assert len(tops) == 5 and all(shown(t) in ODD for t in tops), tops
        verdict = page.locator("[data-testid=stHeading] h3").first.inner_text()
        assert re.fullmatch(r"(.+|unknown) · \d+%", shown(verdict)) and shown(verdict).rsplit(" · ", 1)[0] in ODD + ["unknown"]
        assert not page.locator(f"{MARKDOWN} :is(a[href^=http], a[href^=mailto], span[role=img], img)").count()
        assert not page.locator("[data-testid=stHeading] :is(a[href^=http], a[href^=mailto])").count()


def test_an_upload_over_the_limit_is_said_in_view(browser, digit_gallery, tmp_path):  # noqa: F811
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), np.uint8)).save(big)  # 1.9 MB
    with served(["--gallery", str(shutil.copytree(digit_gallery, tmp_path / "g")), "--max-upload-mb", "1"]) as url:
        page = open_page(browser, url, "Enrol", "Enrol a character or gesture")
        page.locator("input[type=file]").first.set_input_files(str(big))
        said = page.get_by_role("alert").filter(has_text="File must be 1.0MB or smaller.")
        said.wait_for(timeout=60_000)
        box = said.bounding_box()  # Streamlit's own: 1x1 pixel, for screen readers, the words in a tooltip
        assert box["width"] > 100 and box["height"] > 8, box
        page.screenshot(path=str(tmp_path / "oversize.png"))


def test_a_download_after_the_gallery_folder_was_removed_says_so(browser, digit_gallery, tmp_path):  # noqa: F811
    gallery = shutil.copytree(digit_gallery, tmp_path / "g")
    with served(["--gallery", str(gallery)]) as url:
        page = open_page(browser, url, "Export", "Build the bundle")
        page.get_by_role("button", name="Build the bundle").click()
        download = page.get_by_role("button", name="Download bundle (.zip)")
        download.wait_for(timeout=300_000)
        shutil.rmtree(gallery)
        download.click()
        page.get_by_text(f"gallery {gallery}: was moved or removed while this server ran; restart it").wait_for(timeout=60_000)
