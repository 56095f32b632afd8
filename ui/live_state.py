"""One session's live stream as the page's Live tab holds it: frames in (the stream's thread),
tracks, events and the frame rate out (the page's script), under one lock."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional

import numpy as np

from byakugan.embedder.errors import ByakuganError
from byakugan.index.service import GalleryService
from byakugan.index.tracker import Event, Renewed, TrackerSettings, TrackState
from byakugan.ui.video import Annotator

FPS_FRAMES = 30  # the frame rate is measured over this many processed frames
EVENTS_KEPT = 20  # the newest events listed under the stream (and after it stops, until the next starts)


class LiveState:
    """One session's stream, shared by the stream's thread (process) and the page's script
    (settings in, snapshot out), under one lock. The tracker is made in the stream's thread,
    again whenever the gallery on disk or the settings change, so edits reach a running stream."""

    def __init__(self, svc: GalleryService) -> None:
        self.svc = svc
        self.lock = threading.Lock()
        self.settings = TrackerSettings()
        # A new tracker whenever the gallery on disk or the settings change (made in the stream's thread).
        self._stream = Renewed(lambda: (svc.version(), self.settings), lambda key: svc.tracker(key[1]))
        self._annotator = Annotator()
        self._clock = time.monotonic()
        self._fresh = True
        self._times: deque[float] = deque(maxlen=FPS_FRAMES)
        self.tracks: tuple[TrackState, ...] = ()
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.fps: Optional[float] = None
        self.error: Optional[str] = None

    def configure(self, settings: TrackerSettings) -> None:
        with self.lock:
            self.settings = settings

    def process(self, bgr: np.ndarray) -> np.ndarray:
        """The frame with its tracks, labels, frame rate and banner drawn. Runs in the stream's
        one worker thread; the lock is held only to read settings and publish results, so the
        page's script never waits for a model to load or a frame to be processed."""
        with self.lock:
            now = time.monotonic()
            if self._fresh:  # a new stream: no tracks, votes or events carried over, its times from 0
                self._fresh, self._annotator, self._clock = False, Annotator(), now
                self._stream.close()
                self._times.clear()
                self.events.clear()
                self.tracks, self.fps = (), None
            clock = self._clock
        try:
            result = self._stream.update(np.ascontiguousarray(bgr[:, :, ::-1]), now - clock)
        except Exception as exc:  # shown by the page as one line; a new tracker is tried next frame
            self._stream.close()
            with self.lock:
                if self._fresh:  # ended meanwhile
                    return bgr
                self.error = str(exc) if isinstance(exc, ByakuganError) else f"internal error ({type(exc).__name__})"
                self.tracks, self.fps = (), None  # not the last frame's labels beside the error, as if still current
                self._times.clear()
            return bgr
        with self.lock:
            if self._fresh:  # the stream ended while this frame was processed: nothing of it shown as current
                return bgr
            self.error = None
            self._times.append(now)
            if len(self._times) > 1:
                self.fps = (len(self._times) - 1) / max(1e-6, self._times[-1] - self._times[0])
            self.tracks = result.tracks
            self.events.extend(result.events)
            return self._annotator.draw(bgr, result, self.fps)

    def ended(self) -> None:
        """The camera stopped (STOP, the page closed, the connection dropped). Its labels and frame
        rate go (a new START must not show them as current before its first frame); its events stay
        to read until the next stream's first frame."""
        with self.lock:
            self._fresh = True
            self.tracks, self.fps, self.error = (), None, None

    def started(self) -> bool:
        """Whether the stream now playing has had its first frame (its tracks and events are its own)."""
        with self.lock:
            return not self._fresh

    def snapshot(self) -> tuple[tuple[TrackState, ...], list[Event], Optional[float], Optional[str]]:
        with self.lock:
            return self.tracks, list(self.events), self.fps, self.error
