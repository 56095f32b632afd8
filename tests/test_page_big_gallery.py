"""The Gallery page of a gallery of many classes: a page of classes at a time, found by name, a big class's
first rows until "Show all", and the class just edited shown wherever its new name puts it."""

import numpy as np
import pytest
from PIL import Image

from byakugan.ui.classes import CLASSES_SHOWN, REFERENCES_SHOWN, matching
from tests.conftest import new_gallery
from tests.test_ui import go, start
from tests.test_ui_browser import browser, serve  # noqa: F401  (browser: a fixture)

CLASSES = 30


@pytest.fixture(scope="module")
def big(model, tmp_path_factory):
    """30 classes ("class 00" …), the first with 40 references and the others 2, random vectors."""
    path = tmp_path_factory.mktemp("big") / "gallery"
    _, g = new_gallery(model, path)
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        n = 40 if c == 0 else 2
        v = rng.normal(size=(n, g.dim)).astype("float32")
        pictures = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        g.enroll(f"class {c:02d}", v / np.linalg.norm(v, axis=1, keepdims=True), [f"{c}_{i}.jpg" for i in range(n)], pictures)
    g.save()
    return path


def classes(at) -> list[str]:
    return [e.label.split(" · ")[0] for e in at.expander if " · " in e.label]


def removes(at) -> int:
    return sum(1 for b in at.button if b.key and b.key.startswith("rm_ref_"))


@pytest.fixture()
def page(big, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(big, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)
    go(at, "Gallery")
    return at


def test_a_page_of_classes_at_a_time_and_a_big_class_by_its_first_rows(page):
    at = page
    assert classes(at) == [f"class {c:02d}" for c in range(CLASSES_SHOWN)]
    assert removes(at) == REFERENCES_SHOWN + 2 * (CLASSES_SHOWN - 1)  # not the 40 of class 00
    pager = at.selectbox(key="gallery_page")
    assert len(pager.options) == 3 and pager.options[0] == "class 00 … class 11  (1–12 of 30)"
    pager.set_value(2).run()
    assert classes(at) == [f"class {c:02d}" for c in range(24, 30)]
    at.selectbox(key="gallery_page").set_value(0).run()  # an element is of the run it was read from
    at.button(key='all_refs_"class 00"').click().run()
    assert not at.exception and removes(at) == 40 + 2 * (CLASSES_SHOWN - 1)


def test_the_find_box_narrows_the_classes_and_says_when_none_match(page):
    at = page
    at.text_input(key="gallery_find").input("ＣＬＡＳＳ 2").run()  # any case, any width
    assert classes(at) == [f"class {c:02d}" for c in range(20, 30)]
    assert at.selectbox(key="gallery_page").options == ["class 20 … class 29  (1–10 of 10 whose name holds 'ＣＬＡＳＳ 2' (30 in all))"]
    at.text_input(key="gallery_find").input("nobody").run()
    assert classes(at) == [] and [i.value for i in at.info] == ["No class name holds 'nobody'."]
    go(at, "Search")
    go(at, "Gallery")  # what was typed is kept across pages
    assert at.text_input(key="gallery_find").value == "nobody"


def test_a_renamed_class_is_shown_open_where_its_new_name_puts_it(page):
    at = page
    at.text_input(key="gallery_find").input("class 0").run()
    at.text_input(key='rename_to_"class 03"').input("zz last").run()
    at.button(key='rename_btn_"class 03"').click().run()
    assert not at.exception and not at.error
    assert at.text_input(key="gallery_find").value == ""  # 'class 0' would hide it: the find box is emptied
    assert "zz last" in classes(at) and at.selectbox(key="gallery_page").value == 2
    assert [e.label for e in at.expander if e.label.startswith("zz last")] == ["zz last · 2 reference(s)"]
    opened = [e for e in at.expander if e.label.startswith("zz last")][0]
    assert opened.proto.expanded
    at.selectbox(key="gallery_page").set_value(0).run()  # paging away afterwards is not undone
    assert classes(at)[0] == "class 00"
    at.run()
    assert classes(at)[0] == "class 00"
    # Typed with a combining accent (as macOS types it), stored composed (NFC): still followed to its page.
    at.text_input(key='rename_to_"class 04"').input("zze\u0301 last").run()
    at.button(key='rename_btn_"class 04"').click().run()
    assert not at.exception and "zz\u00e9 last" in classes(at) and at.selectbox(key="gallery_page").value == 2


def test_a_narrower_find_or_a_removal_never_leaves_an_empty_page(page):
    at = page
    at.selectbox(key="gallery_page").set_value(2).run()
    at.text_input(key="gallery_find").input("class 1").run()
    assert classes(at) == [f"class {c:02d}" for c in range(10, 20)]


def test_matching_folds_case_and_width():
    assert matching(["Naruto", "ＮＡＲＵＴＯ", "Sasuke"], " nar ") == ["Naruto", "ＮＡＲＵＴＯ"]


def test_finding_a_class_in_chromium(browser, big, tmp_path):
    import shutil

    gallery = shutil.copytree(big, tmp_path / "g")
    server = serve(["--gallery", str(gallery)])
    url = next(server)
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url)
        page.get_by_text("Search by image").wait_for(timeout=180_000)
        page.get_by_text("Gallery", exact=True).click()
        find = page.get_by_placeholder("part of its name")
        find.wait_for(timeout=180_000)
        page.get_by_text("class 11 · 2 reference(s)").wait_for(timeout=60_000)
        assert page.get_by_text("class 12 · 2 reference(s)").count() == 0  # on the next page
        find.fill("ss 2")
        find.press("Enter")
        page.get_by_text("class 29 · 2 reference(s)").wait_for(timeout=60_000)
        page.get_by_text("class 11 · 2 reference(s)").wait_for(state="detached", timeout=60_000)
        page.get_by_text("class 00 · 40 reference(s)").wait_for(state="detached", timeout=60_000)
    finally:
        next(server, None)
