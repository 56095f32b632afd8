"""Recognition over time: feed frames, get each frame's tracks (a face or hand followed across frames
by box overlap) with smoothed labels, and an event when a track's labels pass through one of the
gallery's sequences. Every frame goes through the one pipeline (Pipeline.regions, then
recognize_regions); `watch`, the page's Live tab and the WebSocket route all use this class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from byakugan.embedder.images import ImageSource, load_image

from .errors import GalleryError
from .gallery import Gallery
from .labels import renames
from .pipeline import Pipeline
from .sequences import SequenceMatcher, is_seconds
from .smoothing import Smoother, SmoothingSettings

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TrackerSettings:
    """iou: box overlap that continues a track; max_jump: failing that, how far a box may move and
    still continue the one left over (centre distance over the track's box diagonal: hands move
    between seals faster than boxes overlap); max_missed: frames a track outlives its last
    detection; embed_every: embed and vote on every n-th frame (detection runs on every frame);
    max_gap: seconds allowed between the steps of a sequence; min_hold: seconds a steady label
    must last to count as a step. Defaults measured by benchmarks/watch.py."""

    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    iou: float = 0.3
    max_jump: float = 3.0
    max_missed: int = 10
    embed_every: int = 3
    max_gap: float = 2.0
    min_hold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.iou <= 1.0:
            raise GalleryError(f"iou {self.iou!r}: must be in (0, 1]")
        if not self.max_jump >= 0:
            raise GalleryError(f"max_jump {self.max_jump!r}: must be 0 or more box diagonals")
        if not (isinstance(self.max_missed, int) and self.max_missed >= 0):
            raise GalleryError(f"max_missed {self.max_missed!r}: must be a whole number of frames, 0 or more")
        if not (isinstance(self.embed_every, int) and not isinstance(self.embed_every, bool) and self.embed_every >= 1):
            raise GalleryError(f"embed_every {self.embed_every!r}: must be a whole number, at least 1")
        if not (is_seconds(self.max_gap) and self.max_gap > 0):
            raise GalleryError(f"max_gap {self.max_gap!r}: must be a positive number of seconds")
        if not (is_seconds(self.min_hold) and self.min_hold >= 0):
            raise GalleryError(f"min_hold {self.min_hold!r}: must be 0 or more seconds")


@dataclass(frozen=True)
class TrackState:
    id: int
    box: Box  # x, y, width, height in frame pixels
    label: Optional[str]  # the smoothed label; None while none is steady
    score: float  # the smoothed label's mean score over the window
    raw: Optional[str]  # this frame's own answer ("unknown" below the threshold; None: not embedded)
    confidence: Optional[float] = None  # the score on the gallery's 0-1 scale (as a search's); None without a label

    def to_dict(self) -> dict:
        return {"id": self.id, "box": list(self.box), "label": self.label, "score": round(self.score, 4), "raw": self.raw,
                "confidence": None if self.confidence is None else round(self.confidence, 4)}

    def said(self) -> str:
        """The label as a person reads it: with its confidence, as searches show it."""
        if not self.label:
            return "not steady yet"
        return f"{self.label} {self.confidence:.0%}" if self.confidence is not None else f"{self.label} {self.score:.2f}"


@dataclass(frozen=True)
class Event:
    t: float
    name: str  # the sequence
    track: int
    kind: str = "sequence"

    def to_dict(self) -> dict:
        return {"t": round(self.t, 3), "event": self.kind, "name": self.name, "track": self.track}


@dataclass(frozen=True)
class FrameResult:
    t: float  # seconds
    frame: int
    tracks: tuple[TrackState, ...]
    events: tuple[Event, ...]
    seconds: float  # time spent on this frame

    def to_dict(self) -> dict:
        return {"t": round(self.t, 3), "frame": self.frame, "tracks": [tr.to_dict() for tr in self.tracks]}


@dataclass
class _Track:
    id: int
    box: Box
    smoother: Smoother
    matcher: SequenceMatcher
    missed: int = 0
    raw: Optional[str] = None


class Tracker:
    """One stream of frames against one gallery. Not shared between streams: it keeps each
    stream's tracks, votes and detector state (make one per camera, video or connection, and
    close it, or use it in a `with` block, when the stream ends)."""

    def __init__(self, pipeline: Pipeline, gallery: Gallery, settings: Optional[TrackerSettings] = None,
                 sequences=None) -> None:
        """sequences: name -> labels; default the gallery's own (Gallery.sequences)."""
        self.pipeline = pipeline.for_video()
        self.gallery = gallery
        self.settings = settings or TrackerSettings()
        self.sequences = {s.name: s.steps for s in gallery.sequences} if sequences is None else dict(sequences)
        self._tracks: list[_Track] = []
        self._lost: list[tuple[float, Box, SequenceMatcher]] = []  # (when, last box, matcher) of tracks lost lately
        self._next_id = 0
        self._frame = 0
        self._calibration = None  # the gallery's (index.confidence), from the last answers
        self._t, self._closed = -math.inf, False  # the last frame's time

    def update(self, frame: ImageSource, t: Optional[float] = None) -> FrameResult:
        """Detect, embed (every embed_every-th frame), follow and smooth one frame taken at t seconds
        (default: the frame's number at 30 frames/s)."""
        start = time.perf_counter()
        if t is not None and not is_seconds(t):
            raise GalleryError(f"t {t!r}: must be a finite number of seconds (or None: the frame's number at 30/s)")
        if t is not None and not t >= max(0.0, self._t):  # its gaps and holds run forwards
            raise GalleryError(f"t {t!r}: earlier than " + (f"the last frame's ({self._t}); times must not go back"
                                                           if t >= 0 else "0; times are seconds from the stream's start"))
        if self._closed:
            raise GalleryError("this tracker is closed (its detector freed): make a new one for another stream")
        n, self._frame = self._frame, self._frame + 1
        t = self._t = n / 30.0 if t is None else float(t)
        img = load_image(frame)
        regions = self.pipeline.regions(img, every=True, fallback=None)
        answers = None
        if n % self.settings.embed_every == 0 and regions:
            answers = self.pipeline.recognize_regions(self.gallery, regions, k=1)
        pairs = _associate([tr.box for tr in self._tracks], [r.box for r in regions], self.settings.iou,
                           self.settings.max_jump)
        seen: list[_Track] = []
        for d, region in enumerate(regions):
            tr = self._tracks[pairs[d]] if d in pairs else self._new_track(region.box, t)
            tr.box, tr.missed = region.box, 0
            tr.raw = answers[d].match.label if answers is not None else None
            if answers is not None:
                m = answers[d].match
                tr.smoother.update(m.label if m.known else None, m.score)
            seen.append(tr)
        events: list[Event] = []
        for tr in self._tracks:
            if tr not in seen:
                tr.missed += 1
                if n % self.settings.embed_every == 0:
                    tr.smoother.update(None)  # nothing seen is a vote for no label
            events += [Event(t, name, tr.id) for name in tr.matcher.update(tr.smoother.label, t)]
        # A hand out of view for a moment comes back as a new track: it takes over the sequences
        # under way of the track lost last where it was (by the same overlap or jump as tracks
        # continue), if that was within max_gap (newest first); a hand elsewhere starts afresh.
        self._lost = [(t, tr.box, tr.matcher) for tr in self._tracks if tr.missed > self.settings.max_missed][::-1] + \
            [lost for lost in self._lost if t - lost[0] <= self.settings.max_gap]
        self._tracks = [tr for tr in self._tracks if tr.missed <= self.settings.max_missed]
        # Raw scores read differently per model and scoring (cohort-normalised ones near 0, fused hand
        # ones past 1): each steady label also on the gallery's calibrated scale, as its answers give it.
        cal = self._calibration = answers[0].calibration if answers else self._calibration
        states = tuple(TrackState(tr.id, tuple(int(v) for v in tr.box), tr.smoother.label, tr.smoother.score, tr.raw,
                                  float(cal.confidence(tr.smoother.score)) if tr.smoother.label and cal else None)
                       for tr in self._tracks if tr.missed == 0)
        return FrameResult(t, n, states, tuple(events), time.perf_counter() - start)

    def take_over(self, old: "Tracker") -> None:
        """Go on with the stream `old` followed (its tracks, their votes, the sequences under way
        and its frame count), as this tracker's gallery and settings have it: after an edit or a
        change of settings, a stream is not reset, and a label held through it is not taken as a
        new step (nor is one renamed meanwhile). Sequences that were removed or changed are dropped
        from the performances under way."""
        s, renamed = self.settings, renames(old.gallery, self.gallery)
        self._tracks, self._lost, self._next_id, self._frame = old._tracks, old._lost, old._next_id, old._frame
        self._t = old._t
        self._calibration = old._calibration  # until this gallery's first answers
        for tr in self._tracks:
            tr.smoother = tr.smoother.carried(s.smoothing, renamed)
        for matcher in [tr.matcher for tr in self._tracks] + [m for _, _, m in self._lost]:
            matcher.follow(self.sequences, renamed, s.max_gap, s.min_hold)
        old._tracks, old._lost = [], []

    def close(self) -> None:
        """Frees the stream's detector (a MediaPipe graph for hands: ~70 MB until closed)."""
        self.pipeline.close()
        self._closed = True

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_track(self, box: Box, t: float) -> _Track:
        recent = next((i for i, (when, lost, _) in enumerate(self._lost) if t - when <= self.settings.max_gap
                       and _associate([lost], [box], self.settings.iou, self.settings.max_jump)), None)
        matcher = self._lost.pop(recent)[2] if recent is not None else \
            SequenceMatcher(self.sequences, self.settings.max_gap, self.settings.min_hold)
        tr = _Track(self._next_id, box, Smoother(self.settings.smoothing), matcher)
        self._next_id += 1
        self._tracks.append(tr)
        return tr


class Renewed:
    """A tracker made again whenever key() changes (a gallery's version, the settings): a running
    stream picks up edits and goes on with its tracks (Tracker.take_over). The old tracker's
    detector (for hands a MediaPipe graph, ~70 MB and its threads) is closed before the new one is
    made, so a stream holds one detector even while it takes over and a limit on streams bounds the
    detectors; should making the new one fail, its tracks wait for the next frame to try again.
    make(key) builds one; one stream, one thread."""

    def __init__(self, key: Callable[[], object], make: Callable[[object], Tracker]) -> None:
        self._key, self._make = key, make
        self._tracker: Optional[Tracker] = None
        self._made_for: object = None
        self._open = False  # whether _tracker's detector is still open

    def ready(self) -> Tracker:
        key = self._key()
        if self._open and key == self._made_for:
            return self._tracker
        old = self._tracker
        self._shut()  # the old detector first; its tracks stay for the new one to take over
        new = self._make(key)
        if old is not None:
            new.take_over(old)  # an edit does not reset the stream
        self._tracker, self._made_for, self._open = new, key, True
        return new

    def update(self, frame: ImageSource, t: Optional[float] = None) -> FrameResult:
        return self.ready().update(frame, t)

    def close(self) -> None:
        """The stream ended: its detector closed and its tracks forgotten (the next frame starts afresh)."""
        self._shut()
        self._tracker = None

    def _shut(self) -> None:
        if self._open:
            self._open = False
            self._tracker.close()


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _associate(tracks: list[Box], found: list[Box], threshold: float, max_jump: float) -> dict[int, int]:
    """detection index -> track index: greedily by the largest overlap first, then what is left by
    the nearest centre within max_jump track diagonals; each used once."""
    if not tracks or not found:
        return {}
    overlap = np.array([[iou(t, f) for t in tracks] for f in found])
    pairs: dict[int, int] = {}
    for flat in np.argsort(-overlap, axis=None):
        d, t = divmod(int(flat), len(tracks))
        if overlap[d, t] < threshold:
            break
        if d not in pairs and t not in pairs.values():
            pairs[d] = t
    jump = np.array([[_jump(t, f) for t in tracks] for f in found])
    for flat in np.argsort(jump, axis=None):
        d, t = divmod(int(flat), len(tracks))
        if jump[d, t] > max_jump:
            break
        if d not in pairs and t not in pairs.values():
            pairs[d] = t
    return pairs


def _jump(track: Box, box: Box) -> float:
    (tx, ty, tw, th), (bx, by, bw, bh) = track, box
    distance = np.hypot(tx + tw / 2 - bx - bw / 2, ty + th / 2 - by - bh / 2)
    return float(distance / max(np.hypot(tw, th), 1.0))


__all__ = ["Event", "FrameResult", "Renewed", "TrackState", "Tracker", "TrackerSettings", "iou"]
