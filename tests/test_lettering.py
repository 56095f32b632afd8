"""Labels drawn on pictures keep their letters (ui/lettering.py): no '?' for a name in Cyrillic."""

from pathlib import Path

import numpy as np

from byakugan.index.tracker import Event, FrameResult, TrackState
from byakugan.ui import lettering
from byakugan.ui.video import Annotator


def test_each_letter_is_drawn_by_a_font_that_has_it():
    [(font, text)] = lettering.runs("Жёлтый Ωmega 0.91")  # DejaVu Sans, shipped with matplotlib, has them all
    assert text == "Жёлтый Ωmega 0.91" and font.endswith("DejaVuSans.ttf")
    parts = lettering.runs("綾波 レイ 0.91")
    assert "".join(t for _, t in parts) == "綾波 レイ 0.91"
    for font, text in parts:  # whichever font has the Japanese, the digits and spaces stay in DejaVu Sans
        assert all(lettering._has(font, c) for c in text)
        if any(c.isdigit() or c.isspace() for c in text):
            assert font.endswith("DejaVuSans.ttf")


def test_system_fonts_come_before_matplotlibs_placeholder_font():
    """Last Resort (matplotlib's) has a placeholder box for every letter: a system font that has the
    letter must be found first, wherever matplotlib is installed."""
    import matplotlib

    fonts = lettering._fonts()
    assert fonts[0].endswith("DejaVuSans.ttf")
    ours = Path(matplotlib.get_data_path()).resolve()
    bundled = [ours in Path(f).resolve().parents for f in fonts[1:]]
    assert bundled == sorted(bundled)  # every system font before any other of matplotlib's
    last_resort = [i for i, f in enumerate(fonts) if "lastresort" in f.lower()]
    assert all(i >= len(fonts) - len(last_resort) for i in last_resort)


def test_a_tag_is_its_text_on_a_box():
    a = lettering.tag("Ёж 0.91", 20, (255, 255, 255), (0, 0, 0), pad=3)
    assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8
    assert (a[:3] == 0).all() and (a == 255).any()  # the pad is background; the letters are drawn
    assert not np.array_equal(a, lettering.tag("?? 0.91", 20, (255, 255, 255), (0, 0, 0), pad=3))
    empty = lettering.tag("", 20, (255, 255, 255), (9, 9, 9))
    assert empty.size and (empty == 9).all()


def test_paste_cuts_at_the_frame_edges():
    frame = np.zeros((10, 10, 3), np.uint8)
    lettering.paste(frame, np.full((4, 4, 3), 7, np.uint8), -2, 8)
    assert (frame[8:, :2] == 7).all() and frame.sum() == 7 * 3 * 4


def _frame(label: str, event: str = "") -> np.ndarray:
    result = FrameResult(0.0, 0, (TrackState(0, (20, 60, 80, 80), label, 0.9, label),),
                         (Event(0.0, event, 0),) if event else (), 0.0)
    return Annotator().draw(np.zeros((240, 320, 3), np.uint8), result, fps=12.0)


def test_a_video_draws_labels_and_banners_as_written():
    # OpenCV's own fonts drew every letter outside ASCII as '?'
    assert not np.array_equal(_frame("Ёж"), _frame("??"))
    assert not np.array_equal(_frame("a", "Победа"), _frame("a", "??????"))
    assert _frame("Ёж")[40:60, 20:60].any()  # the label sits above its box


def test_the_label_of_a_box_as_large_as_the_picture_is_drawn_inside_it():
    """Detector none: the box is the whole picture, with no room above or below for its label."""
    from PIL import Image

    from byakugan.embedder.scoring.calibration import Calibration
    from byakugan.index.ranking import Match, Recognition, SearchResult
    from byakugan.ui.widgets import draw_boxes

    img = Image.new("RGB", (200, 150), (0, 0, 0))
    match = Match("gura", 0.9, "gura", 0.5, 0.9, 0.8, 0.5)
    d = Recognition((0, 0, 200, 150), match, SearchResult([], [("gura", 0.9)]), None, True, Calibration.__new__(Calibration))
    out = np.asarray(draw_boxes(img, [d]))
    inside = out[6:30, 6:100]  # under the top edge of the box, where the tag goes
    assert (inside == 255).all(axis=2).any()  # its white letters
    assert (np.abs(inside.astype(int) - (46, 160, 67)).sum(axis=2) == 0).any()  # on the box's green


def test_matplotlibs_own_fonts_are_used_whatever_its_font_list_names(monkeypatch):
    """A font list cached by another matplotlib (a venv since removed) named none of its own fonts:
    DejaVu Sans came from the system, if at all, and Japanese found no font, not even Last Resort."""
    import matplotlib
    from matplotlib import font_manager

    ours = Path(matplotlib.get_data_path()).resolve()
    monkeypatch.setattr(font_manager.fontManager, "ttflist",
                        [f for f in font_manager.fontManager.ttflist if ours not in Path(f.fname).resolve().parents])
    for cached in (lettering._fonts, lettering.font_file):
        cached.cache_clear()
    try:
        assert Path(lettering._fonts()[0]).resolve() == ours / "fonts" / "ttf" / "DejaVuSans.ttf"
        for font, text in lettering.runs("綾波 レイ 0.91"):
            assert all(lettering._has(font, c) for c in text), (font, text)
    finally:
        for cached in (lettering._fonts, lettering.font_file):
            cached.cache_clear()


def test_a_banner_wider_than_the_frame_is_drawn_smaller_not_cut_off():
    import numpy as np

    from byakugan.index.tracker import Event, FrameResult
    from byakugan.ui.video import Annotator

    frame = np.zeros((240, 320, 3), np.uint8)
    events = (Event(1.0, "Rasengan", 0), Event(1.0, "chidori Blade", 0))
    out = Annotator().draw(frame, FrameResult(1.0, 30, (), events, 0.0))
    drawn = np.flatnonzero(out.any(axis=(0, 2)))
    assert drawn.size and drawn[0] > 0 and drawn[-1] < 319  # both ends inside the frame
