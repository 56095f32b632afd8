"""Atomic persistence of a gallery directory.

Layout: `gallery.json` (metadata, the only file ever replaced in place) names the current index
file `index.<generation>.faiss`. A save writes the new index under a new name, then replaces
gallery.json with os.replace. A crash at any point leaves gallery.json naming a complete index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Iterator

from byakugan.embedder.atomic import write_atomic

from .errors import GalleryError

__all__ = ["META_FILE", "LOCK_FILE", "load", "locked", "save", "write_atomic"]

META_FILE = "gallery.json"
LOCK_FILE = ".lock"
FORMAT = "byakugan-gallery"
FORMAT_VERSION = 1


def save(directory: Path, meta: dict, blob: bytes) -> None:
    """Write the serialised vector store as a new index file, then gallery.json naming it."""
    directory.mkdir(parents=True, exist_ok=True)
    generation = int(meta.get("generation", 0)) + 1
    index_name = f"index.{generation:06d}.faiss"
    write_atomic(directory / index_name, blob)
    new_meta = dict(meta, format=FORMAT, version=FORMAT_VERSION, generation=generation,
                    index_file=index_name, index_sha256=hashlib.sha256(blob).hexdigest())
    write_atomic(directory / META_FILE, (json.dumps(new_meta, indent=1, ensure_ascii=False) + "\n").encode())
    meta.update(new_meta)
    for old in directory.glob("index.*.faiss"):
        if old.name != index_name:
            old.unlink(missing_ok=True)


def load(directory: Path) -> tuple[dict, bytes]:
    """gallery.json and the checked bytes of the index file it names."""
    meta_path = directory / META_FILE
    if not directory.exists():
        raise GalleryError(f"gallery {directory}: does not exist (create one with `byakugan enroll`)")
    if not meta_path.is_file():
        raise GalleryError(f"gallery {directory}: not a gallery ({META_FILE} missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"gallery {directory}: {META_FILE} is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise GalleryError(f"gallery {directory}: {META_FILE} is not a byakugan gallery")
    if meta.get("version") != FORMAT_VERSION:
        raise GalleryError(
            f"gallery {directory}: format version {meta.get('version')!r} is not supported (this byakugan reads {FORMAT_VERSION})"
        )
    index_path = directory / meta["index_file"]
    try:
        blob = index_path.read_bytes()
    except OSError as exc:
        raise GalleryError(f"gallery {directory}: index file {meta['index_file']} unreadable ({exc.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != meta["index_sha256"]:
        raise GalleryError(f"gallery {directory}: index file {meta['index_file']} does not match its checksum (damaged)")
    return meta, blob


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-save cycle, so two writers never lose each other's changes."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
