"""The Search page's picture kept while the user visits another page: its results shown again on
coming back, with a line naming it and a button to forget it; a new upload or photo replaces it.
Through AppTest, and once in Chromium."""

import shutil

from tests.test_page_leftovers import open_page, served, shown
from tests.test_ui import go, start, upload
from tests.test_ui_browser import browser  # noqa: F401 (a fixture)


def results(at) -> tuple:
    """What the Search page answered: its verdicts and the top labels (in bold), or () for none."""
    return tuple(s.value for s in at.subheader) + tuple(m.value for m in at.markdown if m.value.startswith("**"))


def kept_line(at) -> list[str]:
    return [shown(c.value) for c in at.caption if "Kept from before" in c.value]


def on_search(tmp_path, monkeypatch, digit_gallery):
    shutil.copytree(digit_gallery, tmp_path / "gallery")
    at = start(tmp_path, monkeypatch)  # opens on Search
    assert at.file_uploader(key="search_upload").value is None and not results(at)
    return at


def test_the_search_picture_and_its_results_are_there_on_coming_back(tmp_path, monkeypatch, digits, digit_gallery):
    at = on_search(tmp_path, monkeypatch, digit_gallery)
    query = digits["3"][7]
    at.file_uploader(key="search_upload").set_value(upload(query)).run()
    answered = results(at)
    assert answered and not kept_line(at)  # the uploader holds it: nothing "kept" to say yet
    for page in ("Enrol", "Gallery"):
        go(at, page)
        go(at, "Search")
        assert at.file_uploader(key="search_upload").value is None  # a new, empty uploader
        assert results(at) == answered, page
        assert kept_line(at) == [f"Kept from before, until another is chosen or it is forgotten: {query.name}"]
        assert len(at.get("image")) >= 2  # the picture itself (boxed) and the thumbnails
    at.button(key="search_forget_kept").click().run()
    assert not at.exception and not results(at) and not kept_line(at)
    go(at, "Export")
    go(at, "Search")  # forgotten stays forgotten
    assert not results(at) and not kept_line(at)


def test_a_new_upload_replaces_the_kept_picture(tmp_path, monkeypatch, digits, digit_gallery):
    at = on_search(tmp_path, monkeypatch, digit_gallery)
    first, second = digits["0"][7], digits["7"][8]
    at.file_uploader(key="search_upload").set_value(upload(first)).run()
    go(at, "Enrol")
    go(at, "Search")
    assert kept_line(at) and first.name in kept_line(at)[0]
    at.file_uploader(key="search_upload").set_value(upload(second)).run()
    answered = results(at)
    assert not at.exception and answered and not kept_line(at)  # the new one is searched, the old one gone
    at.file_uploader(key="search_upload").set_value(None).run()  # and taken out: nothing to search
    assert not results(at) and not kept_line(at)
    at.file_uploader(key="search_upload").set_value(upload(second)).run()
    go(at, "Gallery")
    go(at, "Search")
    assert results(at) == answered and second.name in kept_line(at)[0]


def test_a_photo_taken_is_kept_and_an_upload_outlives_turning_the_camera_on(tmp_path, monkeypatch, digits, digit_gallery):
    at = on_search(tmp_path, monkeypatch, digit_gallery)
    at.file_uploader(key="search_upload").set_value(upload(digits["3"][9])).run()
    answered = results(at)
    at.toggle(key="use_camera").set_value(True).run()  # the uploader is gone: its picture is kept
    assert results(at) == answered and digits["3"][9].name in kept_line(at)[0]
    at.camera_input(key="search_camera").set_value(("shot.jpg", digits["0"][9].read_bytes(), "image/jpeg")).run()
    shot = results(at)
    assert not at.exception and shot and not kept_line(at)
    go(at, "Enrol")
    go(at, "Search")
    assert results(at) == shot and kept_line(at) == ["Kept from before, until another is chosen or it is forgotten: camera.jpg"]


def test_the_search_picture_is_there_on_coming_back_in_chromium(browser, digit_gallery, digits, tmp_path):  # noqa: F811
    query = digits["7"][9]
    with served(["--gallery", str(shutil.copytree(digit_gallery, tmp_path / "g"))]) as url:
        page = open_page(browser, url, "Search", "Search by image")
        page.locator("input[type=file]").set_input_files(str(query))
        page.get_by_text("Raw scores").wait_for(timeout=120_000)
        verdict = page.locator("[data-testid=stHeading] h3").first.inner_text()
        page.get_by_text("Gallery", exact=True).first.click()
        page.get_by_text("Rank labels by").wait_for(timeout=60_000)
        page.get_by_text("Search", exact=True).first.click()
        page.get_by_text("Kept from before").wait_for(timeout=60_000)
        page.get_by_text("Raw scores").wait_for(timeout=120_000)
        assert page.locator("[data-testid=stHeading] h3").first.inner_text() == verdict
        assert query.name in page.get_by_text("Kept from before").inner_text()
        page.get_by_role("button", name="Forget it").click()
        page.get_by_text("Raw scores").wait_for(state="detached", timeout=60_000)
        assert not page.get_by_text("Kept from before").count()
