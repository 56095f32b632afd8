"""References per label, kept up to date by every edit: what a search needs of them without
counting a million labels again."""

from __future__ import annotations

from collections import Counter

import numpy as np


class LabelCounts(Counter):
    """References per label, with how many labels have each count kept as edits go: a search needs
    the largest class, and counting afresh over a million labels cost more than the search itself.
    (Built from a mapping, Counter fills itself past __setitem__: the sizes are counted on first use.)"""

    _sizes: Counter | None = None  # count -> how many labels have it
    _largest: int | None = None
    _typical: int | None = None

    def largest(self) -> int:
        if self._largest is None:
            self._largest = max(self.sizes(), default=0)
        return self._largest

    def largest_except(self, labels) -> int:
        """The largest count among the labels not in `labels` (0 when none is left)."""
        gone = Counter(self[lab] for lab in set(labels) if lab in self)
        return max((n for n, many in self.sizes().items() if many > gone.get(n, 0)), default=0)

    def typical(self) -> int:
        """The count that 9 labels in 10 do not exceed: how large a class a search should expect."""
        if self._typical is None:
            seen, total = 0, sum(self.sizes().values())
            for n in sorted(self.sizes()):
                seen += self.sizes()[n]
                if seen >= 0.9 * total:
                    self._typical = n
                    break
            else:
                self._typical = 0
        return self._typical

    def sizes(self) -> Counter:
        if self._sizes is None:
            self._sizes = Counter(n for n in self.values() if n > 0)
        return self._sizes

    def _resize(self, old: int, new: int) -> None:
        if self._sizes is not None:
            if old > 0:
                self._sizes[old] -= 1
                if not self._sizes[old]:
                    del self._sizes[old]
            if new > 0:
                self._sizes[new] += 1
        self._largest = self._typical = None

    def __setitem__(self, label, n) -> None:
        self._resize(self.get(label, 0), n)
        super().__setitem__(label, n)

    def __delitem__(self, label) -> None:
        self._resize(self.get(label, 0), 0)
        super().__delitem__(label)

    def pop(self, label, *default):
        if label in self:
            self._resize(self[label], 0)
        return super().pop(label, *default)


class Members:
    """The reference ids of labels, found on first need among the references as they stand at one
    revision of the gallery: a search that leaves a large class out of its second request names
    its 3,000 references to the index, and edits are far rarer than searches."""

    def __init__(self, refs, revision: int = 0) -> None:
        self.refs, self.revision, self._ids = refs, revision, {}

    @classmethod
    def current(cls, kept: "Members | None", refs, revision: int) -> "Members":
        """kept, while it was made for these references at this revision; else a new one."""
        return kept if kept is not None and kept.refs is refs and kept.revision == revision else cls(refs, revision)

    def of(self, labels) -> np.ndarray:
        wanted = set(labels) - self._ids.keys()
        if wanted:  # one pass over the references for every label not asked for before
            found: dict = {lab: [] for lab in wanted}
            for i, r in self.refs.items():
                if r.label in found:
                    found[r.label].append(i)
            self._ids.update({lab: np.array(ids, np.int64) for lab, ids in found.items()})
        return np.concatenate([np.zeros(0, np.int64)] + [self._ids[lab] for lab in labels])
