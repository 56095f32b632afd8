"""The page's Live tab: its sequence editor and settings through AppTest, and the stream itself in
headless Chromium, whose fake camera plays a generated red video to a gallery of colours."""

import os
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.test_ui import plain

from byakugan.index import Gallery, Pipeline
from byakugan.index.service import GalleryService
from byakugan.index.tracker import TrackerSettings
from byakugan.ui.live import LiveError, LiveState, ice_servers, md, split_steps, tracker_settings
from tests.test_ui import APP, go
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, serve, write_y4m

MODELS = Path(__file__).resolve().parent / "fixtures" / "compat" / "models"
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def solid(colour, seed: int, size=(128, 96)) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-20, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8))


@pytest.fixture()
def colour_gallery(tmp_path, monkeypatch) -> Path:
    """Red and blue, 3 noisy solid pictures each, with the tiny model and no detector: a camera
    that films one colour is one track over the whole frame, recognised at once."""
    monkeypatch.setenv("BYAKUGAN_MODELS_DIR", str(MODELS))  # the gallery names its model "tiny"
    pipe = Pipeline.create("tiny", "none")
    g = pipe.new_gallery(tmp_path / "gallery")
    for n, (label, colour) in enumerate(COLOURS.items()):
        pipe.enroll(g, label, [solid(colour, 10 * n + i) for i in range(3)])
    g.save()
    return tmp_path / "gallery"


class Streamer:
    """Stands in for webrtc_streamer, which needs a real Streamlit server (AppTest has none);
    keeps what the page asked of it."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(state=SimpleNamespace(playing=False, signalling=False))


def live_page(gallery: Path, monkeypatch, streamer=None) -> AppTest:
    import streamlit_webrtc

    monkeypatch.setenv("BYAKUGAN_GALLERY", str(gallery))
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", streamer or Streamer())
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    go(at, "Live")
    return at


def test_ice_servers_steps_and_settings_from_what_is_typed(monkeypatch):
    monkeypatch.delenv("BYAKUGAN_ICE_SERVERS", raising=False)
    assert ice_servers() == []
    assert ice_servers(" stun:s.example:3478 , turn:t.example:3478", "me", "pw") == [
        {"urls": ["stun:s.example:3478"]}, {"urls": ["turn:t.example:3478"], "username": "me", "credential": "pw"}]
    with pytest.raises(LiveError, match=r"^BYAKUGAN_ICE_SERVERS 'http://x': not a STUN or TURN URL"):
        ice_servers("http://x")
    assert split_steps(" red blue  red ") == ["red", "blue", "red"]
    assert split_steps("Uzumaki Naruto, red,,Uzumaki Naruto") == ["Uzumaki Naruto", "red", "Uzumaki Naruto"]
    assert md("a_b *c* :red[x]") == r"a\_b \*c\* \:red\[x\]"  # users' labels shown as typed
    for window in range(1, 20):  # any window makes valid smoothing
        assert tracker_settings(window=window).smoothing.window == window
    assert tracker_settings() == TrackerSettings()
    assert tracker_settings(embed_every=2, max_gap=5.0) == replace(TrackerSettings(), embed_every=2, max_gap=5.0)


def test_live_state_labels_frames_fires_sequences_and_follows_edits(colour_gallery):
    """What the stream's thread does with each frame, without a browser."""
    svc = GalleryService(colour_gallery)
    svc.add_sequence("flag", ["red", "blue"])
    state = LiveState(svc)
    state.configure(tracker_settings(embed_every=1, window=3))  # a vote on every frame: 2 make a label
    red, blue = (np.asarray(solid(COLOURS[c], 7, (160, 120)))[..., ::-1].copy() for c in ("red", "blue"))  # BGR
    for _ in range(6):
        out = state.process(red)
    tracks, events, fps, error = state.snapshot()
    assert [(t.label, t.box) for t in tracks] == [("red", (0, 0, 160, 120))] and error is None and fps > 0
    assert out.shape == red.shape and (out != red).any()  # drawn on
    for _ in range(6):
        state.process(blue)
    tracks, events, _, _ = state.snapshot()
    assert [t.label for t in tracks] == ["blue"] and [(e.name, e.track) for e in events] == [("flag", 0)]

    state.configure(tracker_settings(embed_every=1, window=4))  # new settings, a new tracker that goes on
    state.process(red)
    assert [t.label for t in state.snapshot()[0]] == ["blue"]  # its votes carried: a held label is not dropped
    svc.remove_sequence("flag")  # a gallery edit reaches the running stream too
    for _ in range(4):
        state.process(red)
    for _ in range(4):
        state.process(blue)
    assert [e.name for e in state.snapshot()[1]] == ["flag"]  # only the one fired before
    state.ended()  # the next frame starts a new stream
    tracks, events, fps, _ = state.snapshot()  # its labels gone (not shown as current at the next START), its events kept
    assert tracks == () and fps is None and [e.name for e in events] == ["flag"] and not state.started()
    state.process(red)
    assert state.started()
    assert state.snapshot()[1] == [] and [t.label for t in state.snapshot()[0]] == [None]
    for label in ("red", "blue"):
        svc.remove(label)  # emptied mid-stream: the error, and no labels or frame rate left from before it
    state.process(red)
    tracks, _, fps, error = state.snapshot()
    assert "empty" in error and tracks == () and fps is None


def test_live_page_edits_the_gallerys_sequences(colour_gallery, monkeypatch):
    streamer, prepared = Streamer(), []
    live_pipeline = GalleryService.live_pipeline
    # The model is made ready before the stream exists: streamlit-webrtc kills a stream whose frame takes 10 s.
    monkeypatch.setattr(GalleryService, "live_pipeline", lambda svc: prepared.append(len(streamer.calls)) or live_pipeline(svc))
    at = live_page(colour_gallery, monkeypatch, streamer)
    assert at.header[0].value == "Live" and not at.error and prepared[0] == 0
    asked = streamer.calls[-1]  # no ICE server: works on localhost with no STUN server reachable
    assert asked["rtc_configuration"] == {"iceServers": []} and asked["media_stream_constraints"]["audio"] is False
    assert callable(asked["video_frame_callback"])
    assert any("No sequences yet" in c.value for c in at.caption)
    assert at.expander and at.number_input(key="live_window").value == TrackerSettings().smoothing.window

    at.text_input(key="live_seq_name").input("flag").run()
    at.text_input(key="live_seq_steps").input("red blue red").run()
    at.button(key="live_add_seq").click().run()
    assert not at.exception and not at.error
    assert [plain(s.value) for s in at.success] == ["Added sequence 'flag'."]
    assert any(m.value.startswith("**flag**: red → blue → red") for m in at.markdown)
    assert at.text_input(key="live_seq_name").value == ""  # emptied for the next one
    assert [(s.name, s.steps) for s in Gallery.open(colour_gallery).sequences] == [("flag", ("red", "blue", "red"))]

    at.text_input(key="live_seq_name").input("bad").run()
    at.text_input(key="live_seq_steps").input("red green").run()
    at.button(key="live_add_seq").click().run()
    [error] = [plain(e.value) for e in at.error]  # one line naming the bad step, no traceback
    assert error.startswith("sequence 'bad': step 'green' is not an enrolled label") and "\n" not in error
    assert at.text_input(key="live_seq_steps").value == "red green"  # kept, to correct it
    assert [s.name for s in Gallery.open(colour_gallery).sequences] == ["flag"]

    at.text_input(key="live_seq_name").input("flag").run()  # an existing name: refused unless replaced
    at.text_input(key="live_seq_steps").input("blue red").run()
    at.button(key="live_add_seq").click().run()
    assert [plain(e.value) for e in at.error] == ["sequence 'flag': already exists; remove it first or replace it"]
    at.checkbox(key="live_seq_replace").check().run()
    at.button(key="live_add_seq").click().run()
    assert not at.error and [plain(s.value) for s in at.success] == ["Replaced sequence 'flag'."]
    assert [(s.name, s.steps) for s in Gallery.open(colour_gallery).sequences] == [("flag", ("blue", "red"))]
    assert at.checkbox(key="live_seq_replace").value is False  # not left on for the next name

    at.button(key="live_rm_seq_flag").click().run()
    assert [plain(s.value) for s in at.success] == ["Removed sequence 'flag'."]
    assert list(Gallery.open(colour_gallery).sequences) == []
    from byakugan.ui.cli import main

    assert main(["sequence", str(colour_gallery), "add", "flag", "red"]) == 0  # shown here, then removed elsewhere
    at.run()
    assert main(["sequence", str(colour_gallery), "remove", "flag"]) == 0
    at.button(key="live_rm_seq_flag").click().run()  # its rerun no longer draws the button: answered all the same
    [error] = [plain(e.value) for e in at.error]
    assert error.startswith("sequence 'flag': not in this gallery"), error

    monkeypatch.setenv("BYAKUGAN_ICE_SERVERS", "stun.example.org:3478")  # the scheme left out
    at.run()
    assert [plain(e.value) for e in at.error] == ["BYAKUGAN_ICE_SERVERS 'stun.example.org:3478': not a STUN or TURN URL "
                                           "(such as stun:HOST:PORT or turn:HOST:PORT)"]


def test_live_page_asks_to_enrol_first_on_an_empty_gallery(tmp_path, monkeypatch):
    at = live_page(tmp_path / "new", monkeypatch)
    assert "enrol some images" in at.info[0].value and not at.text_input


@pytest.fixture()
def live_server(colour_gallery, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip("browser test: Debian's chromium is not installed (apt-get install chromium)")
    monkeypatch.delenv("BYAKUGAN_ICE_SERVERS", raising=False)
    yield from serve(["--gallery", str(colour_gallery)])  # a fixture: the server stops even when the test fails


def test_live_stream_in_chromium_labels_the_fake_camera(live_server, tmp_path):
    """Chromium's fake camera plays red frames over WebRTC with no ICE server; the page shows the
    smoothed label, and the frames coming back have the label's box drawn on them."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    video = tmp_path / "red.y4m"
    write_y4m(video, solid(COLOURS["red"], 99), frames=30, size=(320, 240))
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 900}).new_page()
            page.goto(live_server)
            page.get_by_text("Live", exact=True).first.click(timeout=120_000)
            component = page.frame_locator("iframe[title*='webrtc']")
            labelled = page.get_by_text(re.compile(r"^Track \d+: red \d+%$"))
            for attempt in range(3):
                # Now and then (2 of 7 full runs here, one on a quiet machine) the stream never starts: no
                # label, and START still there, or STOP after it. Pressed again, it starts; the cause is
                # not known. What the page said goes in the failure, which a CI log otherwise does not show.
                if component.get_by_role("button", name="STOP").count():
                    component.get_by_role("button", name="STOP").click(timeout=30_000)
                component.get_by_role("button", name="START").click(timeout=60_000)
                try:
                    labelled.wait_for(timeout=60_000)
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        pytest.fail(f"no label after START three times; the page said: {page.inner_text('body')[-1500:]!r}")
            page.get_by_text(re.compile(r"^\d+\.\d frames/s$")).wait_for(timeout=10_000)
            drawn = component.locator("video").evaluate(DRAWN_JS)
            shots = Path(os.environ.get("BYAKUGAN_SCREENSHOTS") or tmp_path)  # docs/screenshots.py
            page.screenshot(path=str(shots / "live.png"))
        finally:
            browser.close()
    assert drawn["green"] > 100, drawn  # the track's box (green for track 0) on the returned frames


# Counts pixels of the box colour Annotator gives track 0 (BGR 80,220,80) in the playing video.
DRAWN_JS = """v => {
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let green = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 170 && d[i] < 140 && d[i + 2] < 140) green++;
  return {green, width: c.width, height: c.height};
}"""


def test_settings_chosen_on_a_page_are_there_on_coming_back(colour_gallery, monkeypatch):
    """Streamlit forgets a widget's value on a run that does not draw it: the Live page's tracker
    settings, the Search page's depth and camera switch and the Enrol page's camera switch came back
    at their defaults after a visit to another page."""
    at = live_page(colour_gallery, monkeypatch)
    at.number_input(key="live_window").set_value(7).run()
    at.number_input(key="live_embed_every").set_value(3).run()
    at.number_input(key="live_max_gap").set_value(4.5).run()
    go(at, "Search")
    at.slider(key="search_k").set_value(9).run()
    at.toggle(key="use_camera").set_value(True).run()
    go(at, "Enrol")
    at.toggle(key="enrol_use_camera").set_value(True).run()
    for page in ("Gallery", "Live"):
        go(at, page)
    assert [at.number_input(key=k).value for k in ("live_window", "live_embed_every", "live_max_gap")] == [7, 3, 4.5]
    go(at, "Search")
    assert at.slider(key="search_k").value == 9 and at.toggle(key="use_camera").value is True
    go(at, "Enrol")
    assert at.toggle(key="enrol_use_camera").value is True
    assert not at.exception and not at.error and not at.warning  # no "set both by default and by the session"
