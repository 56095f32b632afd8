"""Smoothing and sequences, on their own: votes with hysteresis, and the matcher that fires named
sequences of labels (order, gaps, repeats, overlaps), and sequences stored in galleries and bundles."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.sequences import SequenceMatcher
from byakugan.index.settings import GallerySettings
from byakugan.index.smoothing import Smoother, SmoothingSettings


def run(smoother, votes):
    return [smoother.update(v, 0.9) for v in votes]


def test_a_steady_label_appears_within_the_window_and_flicker_is_suppressed():
    s = Smoother(SmoothingSettings(window=7, enter=4, leave=2))
    out = run(s, ["a"] * 4)
    assert out == [None, None, None, "a"]  # the 4th vote makes it steady
    # Single odd frames and unknown frames neither replace nor drop it.
    assert run(s, ["b", "a", None, "a", "b", None, "a"]) == ["a"] * 7
    assert s.score == pytest.approx(0.9)


def test_hysteresis_a_label_leaves_only_when_its_votes_fall_below_leave():
    s = Smoother(SmoothingSettings(window=5, enter=3, leave=2))
    run(s, ["a"] * 5)
    assert run(s, [None, None, None]) == ["a", "a", "a"]  # 2 votes of 5 left: still held
    assert s.update(None) is None  # 1 vote left
    assert run(s, ["b", "b"]) == [None, None] and s.update("b") == "b"


def test_a_label_switches_to_another_once_that_one_is_steady():
    s = Smoother(SmoothingSettings(window=5, enter=3, leave=1))
    run(s, ["a"] * 5)
    assert run(s, ["b", "b", "b"]) == ["a", "a", "b"]


@pytest.mark.parametrize("kw", [dict(window=0), dict(window=6, enter=3), dict(enter=8), dict(leave=0),
                                dict(leave=5, enter=4), dict(window=2.5)])
def test_bad_smoothing_settings_are_one_line_errors(kw):
    with pytest.raises(GalleryError, match="smoothing"):
        SmoothingSettings(**kw)


def feed(matcher, labels, step=1.0):
    """Each label held for one second (None: nothing steady); the names fired, in order."""
    fired, t = [], 0.0
    for label in labels:
        fired += matcher.update(label, t)
        fired += matcher.update(label, t + 0.5)
        t += step
    return fired


def test_a_sequence_fires_once_in_order_and_never_out_of_order():
    m = SequenceMatcher({"chidori": ("ox", "hare", "monkey")})
    assert feed(m, ["ox", "hare", "monkey"]) == ["chidori"]
    m.reset()
    assert feed(m, ["monkey", "hare", "ox"]) == []
    m.reset()
    assert feed(m, ["ox", "hare", "dog", "monkey"]) == []  # another seal between breaks it
    m.reset()
    assert feed(m, ["ox", None, "hare", None, "monkey"]) == ["chidori"]  # unsteady moments do not


def test_a_gap_longer_than_max_gap_breaks_a_sequence():
    m = SequenceMatcher({"s": ("a", "b")}, max_gap=1.0)
    assert feed(m, ["a", None, None, "b"]) == []  # b begins 2.5 s after a was last held
    m.reset()
    assert feed(m, ["a", None, "b"]) == []  # 1.5 s
    m = SequenceMatcher({"s": ("a", "b")}, max_gap=2.0)
    assert feed(m, ["a", None, "b"]) == ["s"]


def test_repeated_seals_and_overlapping_sequences():
    m = SequenceMatcher({
        "summoning": ("boar", "dog", "bird", "monkey", "ram"),
        "fireball": ("snake", "ram", "monkey", "boar", "horse", "tiger"),
        "double": ("tiger", "tiger"),
    })
    assert feed(m, ["snake", "ram", "monkey", "boar", "horse", "tiger"]) == ["fireball"]
    m.reset()
    # Summoning's last seal starts nothing, then fireball from its own first seal.
    assert feed(m, ["boar", "dog", "bird", "monkey", "ram", "snake", "ram", "monkey", "boar", "horse", "tiger"]) \
        == ["summoning", "fireball"]
    m.reset()
    assert feed(m, ["tiger", "tiger"]) == []  # one steady run is one step
    m.reset()
    assert feed(m, ["tiger", None, "tiger", None, "tiger", None, "tiger"]) == ["double", "double"]
    m.reset()
    # A false start restarts from the position it reached: boar boar dog ... still fires.
    assert feed(m, ["boar", None, "boar", "dog", "bird", "monkey", "ram"]) == ["summoning"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=30))
def test_a_sequence_fires_exactly_when_its_steps_are_consecutive_steady_labels(stream):
    m = SequenceMatcher({"abc": ("a", "b", "c")}, max_gap=10.0)
    fired = feed(m, stream)
    steps = [x for i, x in enumerate(stream) if x is not None and (i == 0 or stream[i - 1] != x)]
    expected = 0
    i = 0
    while i + 3 <= len(steps):
        if steps[i : i + 3] == ["a", "b", "c"]:
            expected, i = expected + 1, i + 3
        else:
            i += 1
    assert fired == ["abc"] * expected


def tiny_gallery(tmp_path):
    settings = GallerySettings({"name": "t", "fingerprint": "f", "dim": 4}, {"name": "none"}, 0.5)
    g = Gallery.create(settings, tmp_path / "g")
    rng = np.random.default_rng(0)
    for label in ("ox", "hare", "monkey"):
        v = rng.standard_normal((2, 4)).astype(np.float32)
        g.enroll(label, v / np.linalg.norm(v, axis=1, keepdims=True))
    return g


def test_sequences_are_stored_checked_renamed_and_saved(tmp_path):
    g = tiny_gallery(tmp_path)
    g.sequences.add("chidori", ["ox", "hare", "monkey"])
    with pytest.raises(GalleryError, match="step 'tiger' is not an enrolled label.*labels: hare, monkey, ox"):
        g.sequences.add("fire", ["ox", "tiger"])
    with pytest.raises(GalleryError, match="already exists"):
        g.sequences.add("chidori", ["ox"])
    with pytest.raises(GalleryError, match="at least one step"):
        g.sequences.add("empty", [])
    with pytest.raises(GalleryError, match="sequence 'nope': not in this gallery"):
        g.sequences.remove("nope")
    g.rename("ox", "bull")
    g.save()
    again = Gallery.open(tmp_path / "g")
    assert [(s.name, s.steps) for s in again.sequences] == [("chidori", ("bull", "hare", "monkey"))]
    again.remove("hare")
    assert again.sequences.get("chidori").missing(again.labels()) == ["hare"]
    again.sequences.remove("chidori")
    again.save()
    assert list(Gallery.open(tmp_path / "g").sequences) == []


def test_a_malformed_sequence_in_the_gallery_is_one_line(tmp_path):
    import sqlite3

    g = tiny_gallery(tmp_path)
    g.save()
    con = sqlite3.connect(tmp_path / "g" / "gallery.db", isolation_level=None)
    con.execute("""INSERT OR REPLACE INTO settings VALUES ('sequences', '{"x": "ox hare"}')""")
    con.close()
    with pytest.raises(GalleryError, match="is malformed.*sequences must map names to lists"):
        Gallery.open(tmp_path / "g")

class Script:
    """A pipeline for the Tracker that 'detects' given boxes with given answers, frame by frame."""

    def __init__(self, frames):
        self.frames, self.n = frames, -1  # each frame: [(box, label or None for unknown)]

    def for_video(self):
        return self

    def close(self):
        pass

    def regions(self, img, every=True, fallback=None):
        from byakugan.index.pipeline import Region

        self.n += 1
        return [Region(box, img) for box, _ in self.frames[self.n]]

    def recognize_regions(self, gallery, regions, k=1, threshold=None):
        from types import SimpleNamespace

        from byakugan.index.ranking import UNKNOWN, Match

        from byakugan.embedder.scoring.calibration import centred

        return [SimpleNamespace(match=Match(label or UNKNOWN, 0.9, label or "x", 0.5), calibration=centred(0.5))
                for _, label in self.frames[self.n]]


def track(frames, **settings):
    from byakugan.index.tracker import Tracker, TrackerSettings

    settings.setdefault("embed_every", 1)
    tracker = Tracker(Script(frames), tiny_gallery_for_tracks(), TrackerSettings(**settings), sequences={})
    return [tracker.update(np.zeros((2, 2, 3), np.uint8), i / 10) for i in range(len(frames))]


def tiny_gallery_for_tracks():
    settings = GallerySettings({"name": "t", "fingerprint": "f", "dim": 4}, {"name": "none"}, 0.5)
    return Gallery.create(settings)


def test_tracks_follow_boxes_by_overlap_then_by_a_short_jump():
    left, right = (0, 0, 100, 100), (500, 0, 100, 100)
    frames = [[(left, "a"), (right, "b")]] * 5 + [[((10, 5, 100, 100), "a"), ((150, 0, 100, 100), "b")]]
    results = track(frames, max_jump=1.0)
    ids = [{tr.id: tr.label for tr in r.tracks} for r in results]
    assert ids[-1] == {0: "a", 2: None}  # the right box jumped 2.5 diagonals: a new track, no label yet
    results = track(frames, max_jump=3.0)
    assert {tr.id: tr.label for tr in results[-1].tracks} == {0: "a", 1: "b"}


def test_a_lost_track_ends_after_max_missed_frames_and_flicker_stays_hidden():
    box = (0, 0, 100, 100)
    frames = [[(box, "a")]] * 4 + [[(box, "b")], [(box, None)], [(box, "a")]] + [[]] * 3 + [[(box, "a")]]
    results = track(frames, max_missed=2, smoothing=SmoothingSettings(window=7, enter=4, leave=2))
    assert [r.tracks[0].label if r.tracks else "-" for r in results] == \
        [None, None, None, "a", "a", "a", "a", "-", "-", "-", None]
    assert results[-1].tracks[0].id == 1  # the first track ended while nothing was seen


def test_a_matcher_follows_edited_sequences_and_keeps_the_performances_still_wanted():
    m = SequenceMatcher({"keep": ("a", "b", "c"), "change": ("a", "b", "d"), "gone": ("a", "b", "e")})
    assert m.update("a", 0.0) == [] and m.update("b", 1.0) == []
    m.follow({"keep": ("a", "b", "c"), "change": ("a", "b", "c"), "new": ("b", "c")})
    # "change" was edited under way (now also a, b, c): dropped, not fired; "new" starts from the next step seen
    assert m.update("c", 2.0) == ["keep"]
    m.update("e", 3.0)
    assert "gone" not in m.sequences


def test_a_hand_out_of_view_for_a_moment_keeps_its_sequence_and_may_repeat_a_step():
    """rock, the hand gone long enough for its track to end, rock again: a new track, the same
    performance ("rock rock" fires; before, the new track started from nothing)."""
    from byakugan.index.tracker import Tracker, TrackerSettings

    box = (0, 0, 100, 100)
    frames = [[(box, "a")]] * 5 + [[]] * 6 + [[(box, "a")]] * 5 + [[]] * 6 + [[(box, "b")]] * 5
    settings = TrackerSettings(embed_every=1, max_missed=2, max_gap=2.0, smoothing=SmoothingSettings(window=3, enter=2, leave=1))
    tracker = Tracker(Script(frames), tiny_gallery_for_tracks(), settings, sequences={"aa": ("a", "a"), "aab": ("a", "a", "b")})
    results = [tracker.update(np.zeros((2, 2, 3), np.uint8), i / 10) for i in range(len(frames))]
    events = [(e.name, e.track) for r in results for e in r.events]
    assert events == [("aa", 1), ("aab", 2)] and results[-1].tracks[0].id == 2  # three tracks, one performance
    slow = Tracker(Script(frames), tiny_gallery_for_tracks(), TrackerSettings(**{**settings.__dict__, "max_gap": 0.2}),
                   sequences={"aa": ("a", "a")})
    assert not [e for i in range(len(frames)) for e in slow.update(np.zeros((2, 2, 3), np.uint8), i / 10).events]


def test_a_lost_sequence_goes_on_only_where_its_hand_was():
    """Two hands gone at once come back each to its own sequence; a hand elsewhere starts afresh."""
    from byakugan.index.tracker import Tracker, TrackerSettings

    left, right, far = (0, 0, 100, 100), (1000, 0, 100, 100), (2000, 0, 100, 100)
    settings = TrackerSettings(embed_every=1, max_missed=2, max_jump=1.0, smoothing=SmoothingSettings(window=3, enter=2, leave=1))
    both = [[(left, "a"), (right, "c")]] * 5 + [[]] * 4 + [[(left, "b"), (right, "d")]] * 5
    elsewhere = [[(left, "a")]] * 5 + [[]] * 4 + [[(far, "b")]] * 5
    for frames, want in ((both, {"ab", "cd"}), (elsewhere, set())):
        tracker = Tracker(Script(frames), tiny_gallery_for_tracks(), settings,
                          sequences={"ab": ("a", "b"), "cd": ("c", "d"), "ad": ("a", "d"), "cb": ("c", "b")})
        fired = {e.name for i in range(len(frames)) for e in tracker.update(np.zeros((2, 2, 3), np.uint8), i / 10).events}
        assert fired == want


def test_times_and_settings_that_are_not_seconds_are_named():
    for bad in ("2", float("nan"), True, None):
        with pytest.raises(GalleryError, match="max_gap .*: must be a positive number of seconds"):
            SequenceMatcher({"s": ("a", "b")}, max_gap=bad)
    m = SequenceMatcher({"s": ("a", "b")}, max_gap=2, min_hold=np.float32(0))
    for bad in (float("nan"), "1", None, -math.inf):
        with pytest.raises(GalleryError, match="t .*: must be a finite number of seconds"):
            m.update("a", bad)
    assert m.update("a", 0) == [] and m.update("b", np.float64(1.0)) == ["s"]


def test_a_tracker_takes_only_finite_seconds_before_any_work():
    from byakugan.index.tracker import Tracker, TrackerSettings

    script = Script([[((0, 0, 10, 10), "a")]] * 2)
    tracker = Tracker(script, tiny_gallery_for_tracks(), TrackerSettings(embed_every=1), sequences={})
    for bad in (float("nan"), "1", True):
        with pytest.raises(GalleryError, match="t .*: must be a finite number of seconds"):
            tracker.update(np.zeros((2, 2, 3), np.uint8), bad)
    assert script.n == -1  # nothing detected for a refused frame
    assert len(tracker.update(np.zeros((2, 2, 3), np.uint8), 0.0).tracks) == 1 and script.n == 0


def test_a_tracker_refuses_times_that_go_back_or_below_zero_and_frames_after_close():
    from byakugan.index.tracker import Tracker, TrackerSettings

    script = Script([[((0, 0, 10, 10), "a")]] * 3)
    tracker = Tracker(script, tiny_gallery_for_tracks(), TrackerSettings(embed_every=1), sequences={})
    with pytest.raises(GalleryError, match=r"t -1: earlier than 0; times are seconds from the stream's start"):
        tracker.update(np.zeros((2, 2, 3), np.uint8), -1)
    tracker.update(np.zeros((2, 2, 3), np.uint8), 1.5)
    with pytest.raises(GalleryError, match=r"t 1.2: earlier than the last frame's \(1.5\); times must not go back"):
        tracker.update(np.zeros((2, 2, 3), np.uint8), 1.2)
    assert script.n == 0  # nothing detected for a refused frame
    tracker.update(np.zeros((2, 2, 3), np.uint8), 1.5)  # the same time again is not going back
    tracker.close()
    with pytest.raises(GalleryError, match="this tracker is closed"):
        tracker.update(np.zeros((2, 2, 3), np.uint8), 2.0)


def _handed_over(frames_before, frames_after, before, after, settings_before, settings_after, seqs_before, seqs_after):
    """Events of a stream whose tracker is made again between two runs of frames (Renewed does
    so on an edit of the gallery or a change of settings)."""
    from byakugan.index.tracker import Tracker

    first = Tracker(Script(frames_before), before, settings_before, sequences=seqs_before)
    events = [e.name for i in range(len(frames_before)) for e in first.update(np.zeros((2, 2, 3), np.uint8), i / 10).events]
    second = Tracker(Script(frames_after), after, settings_after, sequences=seqs_after)
    second.take_over(first)
    return events + [e.name for i in range(len(frames_after))
                     for e in second.update(np.zeros((2, 2, 3), np.uint8), (len(frames_before) + i) / 10).events]


def test_a_gesture_held_through_a_change_of_settings_is_not_counted_again():
    """The page's tracker settings changed mid-stream: the stream goes on, its held rock one step."""
    from byakugan.index.tracker import TrackerSettings

    box = (0, 0, 100, 100)
    held = [[(box, "a")]] * 8
    g = tiny_gallery_for_tracks()
    one = TrackerSettings(embed_every=1, smoothing=SmoothingSettings(window=3, enter=2, leave=1))
    other = TrackerSettings(embed_every=1, max_gap=5.0, smoothing=SmoothingSettings(window=9, enter=5, leave=2))
    assert _handed_over(held, held, g, g, one, other, {"r": ("a",)}, {"r": ("a",)}) == ["r"]
    # a much longer window (its leave past the votes carried) and an unknown frame: still one step
    longer = TrackerSettings(embed_every=1, smoothing=SmoothingSettings(window=30, enter=16, leave=6))
    noisy = [[(box, "a")]] * 2 + [[(box, None)]] + [[(box, "a")]] * 20
    assert _handed_over(held, noisy, g, g, one, longer, {"r": ("a",)}, {"r": ("a",)}) == ["r"]
    # and the stream is not frozen: a new step after the change still fires
    then = held + [[(box, "b")]] * 8
    assert _handed_over(held, then, g, g, one, other, {"rb": ("a", "b")}, {"rb": ("a", "b")}) == ["rb"]


def test_a_gesture_renamed_while_held_is_not_counted_again():
    """`byakugan rename G "flat hand" paper` mid-step: the held label is the renamed one, not a new step,
    and a sequence under way goes on under the new name."""
    from byakugan.index.labels import renames
    from byakugan.index.tracker import TrackerSettings

    box = (0, 0, 100, 100)
    before = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": 4}, {"name": "none"}, 0.5))
    before.enroll("flat hand", np.eye(4, dtype=np.float32)[:2])
    before.enroll("fist", np.eye(4, dtype=np.float32)[2:])
    after = before.clone()
    after.rename("flat hand", "paper")
    assert renames(before, after) == {"flat hand": "paper"} and renames(before, before) == {}
    partly = after.clone()
    partly.remove_reference(partly.references("paper")[0].id)  # renamed, and one of its references removed
    assert renames(before, partly) == {"flat hand": "paper"}
    settings = TrackerSettings(embed_every=1, smoothing=SmoothingSettings(window=3, enter=2, leave=1))
    held = _handed_over([[(box, "flat hand")]] * 8, [[(box, "paper")]] * 8, before, after, settings, settings,
                        {"p": ("flat hand",)}, {"p": ("paper",)})
    assert held == ["p"]
    under_way = _handed_over([[(box, "fist")]] * 8, [[(box, "paper")]] * 8, before, after, settings, settings,
                             {"fp": ("fist", "flat hand")}, {"fp": ("fist", "paper")})
    assert under_way == ["fp"]
