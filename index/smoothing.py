"""A track's label over time: a vote over the last frames, with hysteresis, so a label shows only
once it is steady and a few odd or unknown frames neither flicker it nor bring in another."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Optional

from .errors import GalleryError


MAX_WINDOW = 10_000  # embedded frames: about 17 minutes of a 30 frames/s video embedding every 3rd


@dataclass(frozen=True)
class SmoothingSettings:
    """window: frames voted over; enter: votes a label needs to become the track's label (more than
    half the window, so two labels cannot both hold it); leave: the track's label is dropped when
    its votes fall below this. Votes are counted per embedded frame. Defaults chosen by
    benchmarks/watch.py on generated 15 frames/s sequence videos (with embed_every 3)."""

    window: int = 5
    enter: int = 3
    leave: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.window, int) and not isinstance(self.window, bool) and 1 <= self.window <= MAX_WINDOW):
            raise GalleryError(f"smoothing window {self.window!r}: must be a whole number of frames, 1 to {MAX_WINDOW}")
        if not (isinstance(self.enter, int) and self.window // 2 < self.enter <= self.window):
            raise GalleryError(f"smoothing enter {self.enter!r}: must be more than half the window "
                               f"({self.window // 2 + 1}..{self.window})")
        if not (isinstance(self.leave, int) and 1 <= self.leave <= self.enter):
            raise GalleryError(f"smoothing leave {self.leave!r}: must be between 1 and enter ({self.enter})")


class Smoother:
    """Feed one vote per embedded frame: a label, or None for "unknown" or nothing seen."""

    def __init__(self, settings: SmoothingSettings = SmoothingSettings()) -> None:
        self.settings = settings
        self._votes: deque[tuple[Optional[str], float]] = deque(maxlen=settings.window)
        self.label: Optional[str] = None

    def update(self, label: Optional[str], score: float = 0.0) -> Optional[str]:
        """The steady label after this vote (None while there is none)."""
        self._votes.append((label, float(score)))
        counts = Counter(v for v, _ in self._votes if v is not None)
        best, n = counts.most_common(1)[0] if counts else (None, 0)
        if best != self.label and n >= self.settings.enter:
            self.label = best
        elif self.label is not None and counts.get(self.label, 0) < self.settings.leave:
            self.label = None
        return self.label

    def carried(self, settings: SmoothingSettings, renamed: Optional[dict] = None) -> "Smoother":
        """A smoother under other settings (a longer or shorter window) or labels (`renamed`: old ->
        new) that goes on from this one: its last votes and its steady label kept, the label with at
        least the new settings' `enter` votes (at its mean score), so a label held through the change
        is neither dropped by the new `leave` nor taken up again later as a new one."""
        renamed = renamed or {}
        out = Smoother(settings)
        votes = [(renamed.get(v, v), score) for v, score in self._votes][-settings.window:]
        out.label = renamed.get(self.label, self.label)
        if out.label is not None and (need := settings.enter - sum(v == out.label for v, _ in votes)) > 0:
            others = [i for i, (v, _) in enumerate(votes) if v != out.label]
            dropped = set(others[:max(0, len(votes) + need - settings.window)])  # the oldest others make room
            votes = [(out.label, self.score)] * need + [x for i, x in enumerate(votes) if i not in dropped]
        out._votes.extend(votes)
        return out

    @property
    def score(self) -> float:
        """The mean score of the steady label's votes in the window (0 without one)."""
        scores = [s for v, s in self._votes if v == self.label and v is not None]
        return sum(scores) / len(scores) if scores else 0.0
