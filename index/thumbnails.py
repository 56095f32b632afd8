"""A save's thumbnails: written before its commit, taken back if it fails (index.gallery.Gallery.save)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from byakugan.embedder.atomic import write_atomic


class Thumbnails:
    """The thumbnails a save writes (JPEG bytes by reference id) into `folder`: written once the save
    may go ahead, taken back when it then fails, so a later save's reference of the same id never
    shows this one's picture. `new`: the ids that had no thumbnail before (only theirs are taken back).
    A save into another folder also copies, from `copy_from`, the thumbnails of the saved references
    `ids` that have no new one (read one at a time: a large gallery's would not fit in memory).
    `fresh`: the ids the save puts in the folder for the first time; a picture there under one of
    them that is not theirs (a save killed before it could take its own back) is removed."""

    def __init__(self, folder: Path, thumbs: dict[int, bytes], new: set[int],
                 copy_from: Optional[Path] = None, ids: Iterable[int] = (), fresh: Iterable[int] = ()) -> None:
        self.folder, self.thumbs, self.new, self.written = folder, thumbs, new, False
        self.copy_from, self.ids, self.copied, self.fresh = copy_from, ids, [], fresh

    def write(self) -> None:
        copies = [] if self.copy_from is None or self.copy_from.resolve() == self.folder.resolve() else \
            [i for i in self.ids if i not in self.thumbs and (self.copy_from / f"{i}.jpg").is_file()]
        if self.thumbs or copies:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.written = True
            for i, data in self.thumbs.items():
                write_atomic(self.folder / f"{i}.jpg", data, sync_dir=False)
            for i in copies:
                self.copied.append(i)
                write_atomic(self.folder / f"{i}.jpg", (self.copy_from / f"{i}.jpg").read_bytes(), sync_dir=False)
        if self.folder.is_dir():
            copied = set(self.copied)
            self.drop(i for i in self.fresh if i not in self.thumbs and i not in copied)

    def drop(self, ids: Iterable[int]) -> None:
        for i in ids:
            (self.folder / f"{i}.jpg").unlink(missing_ok=True)

    def take_back(self) -> None:
        for i in [*self.thumbs, *self.copied] if self.written else ():
            if i in self.new or i in self.copied:
                (self.folder / f"{i}.jpg").unlink(missing_ok=True)
