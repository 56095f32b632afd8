"""What Gallery.enroll takes beside its vectors, checked before anything changes: one source name,
and optionally one image, per vector; each image is made a thumbnail first, so that an unreadable
one changes nothing."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from byakugan.embedder.images import ImageSource, thumbnail_jpeg

from .errors import GalleryError

THUMB_SIZE = 128


def one_each(what: str, given: Sequence, n: int, of: str = "vectors") -> list:
    """`given` as a list of n items; a string is one name, not a list of its characters."""
    if isinstance(given, (str, bytes)) or not hasattr(given, "__len__"):
        raise GalleryError(f"{what} {given!r}: must be a list, one for each of the {n} {of}")
    if len(given) != n:
        raise GalleryError(f"enroll: {len(given)} {what} for {n} {of}; give one for each")
    return list(given)


def sources_of(sources: Optional[Sequence], n: int) -> list[str]:
    """Where each vector came from, as text: a file name that is not UTF-8 kept readable (escaped)."""
    if sources is None:
        return ["<embedding>"] * n
    out = one_each("sources", sources, n)
    for s in out:
        if not isinstance(s, (str, os.PathLike)):
            raise GalleryError(f"sources: {s!r} is not a name (text or a path)")
    return [os.fspath(s).encode("utf-8", "backslashreplace").decode("utf-8") for s in out]


def thumbnails_of(images: Optional[Sequence[ImageSource]], n: int) -> Optional[list[bytes]]:
    return None if images is None else [thumbnail_jpeg(im, THUMB_SIZE) for im in one_each("images", images, n)]
