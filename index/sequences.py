"""Named sequences of a gallery's labels (a jutsu's hand seals), and the matcher that fires them.

A gallery keeps its sequences with its labels (Gallery.sequences, saved in gallery.json and in
exported bundles). A SequenceMatcher follows one track's smoothed labels (index.smoothing) and
fires a sequence when its steps come in order, each within `max_gap` seconds of the last.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional

from .errors import GalleryError, NotInGalleryError
from .labels import check_label_in, find, shown, some

MAX_STEPS = 64


@dataclass(frozen=True)
class Sequence:
    name: str
    steps: tuple[str, ...]

    def missing(self, labels: Mapping[str, int]) -> list[str]:
        """Steps whose label is no longer enrolled (removed after the sequence was made)."""
        return sorted({s for s in self.steps if s not in labels})


class SequenceBook:
    """The sequences stored in a gallery's metadata (`store`: name -> list of labels), checked
    against its labels (`labels()`) when one is added."""

    def __init__(self, store: dict, labels: Callable[[], Mapping[str, int]], read_only: bool = False) -> None:
        self._store, self._labels, self._read_only = store, labels, read_only

    def __iter__(self) -> Iterator[Sequence]:
        return iter([Sequence(n, tuple(s)) for n, s in sorted(self._store.items())])

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, name: object) -> bool:
        return find(name, self._store) is not None

    def get(self, name: str) -> Sequence:
        if (found := find(name, self._store)) is None:
            known = ", ".join(sorted(self._store)) or "none"
            raise NotInGalleryError(f"sequence {shown(name)}: not in this gallery (sequences: {known})")
        return Sequence(found, tuple(self._store[found]))

    def add(self, name: str, steps: list[str], replace: bool = False) -> Sequence:
        """A new sequence of enrolled labels, in order (a label may come more than once)."""
        self._writable()
        try:
            name = check_label_in(name, self._store)
        except GalleryError as exc:  # the same rules as a label, named for what was given
            raise GalleryError(f"sequence name{str(exc)[len('label'):]}") from None
        if name in self._store and not replace:
            raise GalleryError(f"sequence {name!r}: already exists; remove it first or replace it")
        if not steps:
            raise GalleryError(f"sequence {name!r}: needs at least one step (a label of the gallery)")
        if len(steps) > MAX_STEPS:
            raise GalleryError(f"sequence {name!r}: {len(steps)} steps; at most {MAX_STEPS}")
        labels = self._labels()
        found = [find(s, labels) for s in steps]  # any spelling the label was enrolled with
        for s, f in zip(steps, found):
            if f is None:
                raise GalleryError(f"sequence {name!r}: step {shown(s)} is not an enrolled label (labels: {some(labels)})")
        steps = found
        self._store[name] = list(steps)
        return Sequence(name, tuple(steps))

    def remove(self, name: str) -> Sequence:
        self._writable()
        seq = self.get(name)
        del self._store[seq.name]
        return seq

    def rename_label(self, old: str, new: str) -> None:
        """Keeps sequences naming a label in step with its new name."""
        for name, steps in self._store.items():
            self._store[name] = [new if s == old else s for s in steps]

    def _writable(self) -> None:
        if self._read_only:
            raise GalleryError("this gallery comes from an exported bundle; edit sequences in its gallery folder")


def check_sequences(raw: object) -> dict[str, list[str]]:
    """Stored sequences as gallery.json or a bundle holds them; ValueError when malformed."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(n, str) and isinstance(s, list) and s
                                            and all(isinstance(x, str) for x in s) for n, s in raw.items()):
        raise ValueError("sequences must map names to lists of labels")
    return {n: list(s) for n, s in raw.items()}


@dataclass
class _Partial:
    name: str
    done: int  # steps matched so far


def is_seconds(x) -> bool:
    """A finite number (not a bool): NaN compares false everywhere and would stall every sequence silently."""
    # math.isfinite cannot take a whole number past float's range (10**400): compared instead
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and \
        (abs(x) <= sys.float_info.max if isinstance(x, numbers.Integral) else math.isfinite(x))


class SequenceMatcher:
    """Follows one track's stable labels. `update(label, t)` each frame (None: no stable label);
    returns the names of the sequences completed at this frame (each fires once per completion).

    A step is a stable label held for min_hold seconds: shorter ones (a hand passing through
    another seal) are ignored, and the same label twice needs a gap between. A different step
    that is not the next one breaks a partial match; frames without a stable label do not, but
    the next step must begin within max_gap seconds of the last one's end. Every sequence is
    followed from every position at once, so overlapping and repeating sequences fire too.
    """

    def __init__(self, sequences: Mapping[str, tuple[str, ...]] | list[Sequence], max_gap: float = 2.0,
                 min_hold: float = 0.0) -> None:
        if not is_seconds(max_gap) or not max_gap > 0:
            raise GalleryError(f"max_gap {max_gap!r}: must be a positive number of seconds")
        if not is_seconds(min_hold) or not min_hold >= 0:
            raise GalleryError(f"min_hold {min_hold!r}: must be 0 or more seconds")
        items = sequences.items() if isinstance(sequences, Mapping) else [(s.name, s.steps) for s in sequences]
        self.sequences = {n: tuple(s) for n, s in items}
        self.max_gap, self.min_hold = float(max_gap), float(min_hold)
        self.reset()

    def update(self, label: Optional[str], t: float) -> list[str]:
        if not is_seconds(t):
            raise GalleryError(f"t {t!r}: must be a finite number of seconds")
        if label != self._current:
            self._current, self._since, self._counted = label, t, False
        if label is None:
            return []
        if self._counted:
            self._last_seen = t
            return []
        if t - self._since < self.min_hold:
            return []
        self._counted = True
        in_time = self._last_seen is not None and self._since - self._last_seen <= self.max_gap
        self._last_seen = t
        kept: list[_Partial] = []
        for p in self._partials if in_time else []:
            if self.sequences[p.name][p.done] == label:
                kept.append(_Partial(p.name, p.done + 1))
        kept += [_Partial(n, 1) for n, steps in self.sequences.items() if steps[0] == label]
        kept = list({(p.name, p.done): p for p in kept}.values())
        fired = sorted({p.name for p in kept if p.done == len(self.sequences[p.name])})
        # A completed sequence starts again from nothing: it fires once per performance.
        self._partials = [p for p in kept if p.name not in fired]
        return fired

    def follow(self, sequences: Mapping[str, tuple[str, ...]], renamed: Optional[Mapping[str, str]] = None,
               max_gap: Optional[float] = None, min_hold: Optional[float] = None) -> None:
        """Follow these sequences from now on (the gallery's were edited, or the stream's settings):
        a performance under way goes on where its sequence is unchanged (but for labels `renamed`,
        old -> new, which the label held is renamed by too), and is dropped where it was removed or
        changed; max_gap and min_hold, where given, apply from now on."""
        renamed = dict(renamed or {})
        new = {n: tuple(s) for n, s in sequences.items()}
        self._partials = [p for p in self._partials
                          if new.get(p.name) == tuple(renamed.get(x, x) for x in self.sequences[p.name])]
        self.sequences = new
        self._current = renamed.get(self._current, self._current)
        self.max_gap = self.max_gap if max_gap is None else float(max_gap)
        self.min_hold = self.min_hold if min_hold is None else float(min_hold)

    def reset(self) -> None:
        self._partials: list[_Partial] = []
        self._current: Optional[str] = None
        self._since = 0.0  # when the current stable label began
        self._counted = False  # whether it has been taken as a step
        self._last_seen: Optional[float] = None  # when the last step's label was last held
