"""Atomic persistence of a gallery directory.

Layout: `gallery.json` (metadata, the only file ever replaced in place) names the current index
file `index.<generation>.faiss`. A save writes the new index under a new name, then replaces
gallery.json with os.replace. A crash at any point leaves gallery.json naming a complete index.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, TypeVar

from byakugan.embedder.atomic import fsync_dir, write_atomic

from .archive import MANIFEST, archive_kind
from .errors import GalleryError, ReadOnlyGalleryError
from .thumbnails import Thumbnails  # noqa: F401 (index.gallery saves through store.Thumbnails)

__all__ = ["META_FILE", "LOCK_FILE", "load", "locked", "save", "write_atomic"]

T = TypeVar("T")
META_FILE = "gallery.json"
LOCK_FILE = ".lock"
THUMBS, COHORT = "thumbs", "cohort.safetensors"  # also written into a gallery folder
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


def load(directory: Path, read: Callable[[BinaryIO], T], attempts: int = 5) -> tuple[dict, T]:
    """gallery.json and read(the index file it names), once its checksum is verified (read raises
    ValueError for bytes it cannot read). The file is
    hashed and read in pieces from one open handle: no copy of it in memory beside what read()
    builds (a whole copy took the peak to 3x the vectors), and a save that removes it meanwhile
    cannot pull it away.

    Readers take no lock: a save that lands between reading gallery.json and its index file
    removes that file, so the read starts again from the new gallery.json.
    """
    for attempt in range(attempts):
        meta = _read_meta(directory)
        try:
            f = open(directory / meta["index_file"], "rb")
        except FileNotFoundError:
            if attempt + 1 < attempts and _read_meta(directory).get("generation") != meta.get("generation"):
                continue  # replaced under us: read the new state
            raise GalleryError(f"gallery {directory}: index file {meta['index_file']} is missing") from None
        except OSError as exc:
            raise GalleryError(f"gallery {directory}: index file {meta['index_file']} unreadable ({exc.strerror})") from None
        with f:
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            if digest.hexdigest() != meta["index_sha256"]:
                raise GalleryError(f"gallery {directory}: index file {meta['index_file']} does not match its checksum (damaged)")
            f.seek(0)
            try:
                return meta, read(f)
            except ValueError as exc:  # read()'s own reason the bytes are not what it reads
                raise GalleryError(f"gallery {directory}: index file {meta['index_file']} is not a readable index "
                                   f"({exc})") from None
    raise GalleryError(f"gallery {directory}: changed {attempts} times while being read; try again")


def _read_meta(directory: Path) -> dict:
    meta_path = directory / META_FILE
    if not directory.exists():
        raise GalleryError(f"gallery {directory}: does not exist (create one with `byakugan enroll`, or Pipeline.new_gallery in Python)")
    bundle = "an exported bundle, not a gallery folder: `byakugan serve`, `byakugan watch` or bundle.load() opens it"
    if not directory.is_dir():
        raise GalleryError(f"gallery {directory}: is " + (bundle if archive_kind(directory) else "a file, not a gallery folder"))
    if not meta_path.is_file():
        raise GalleryError(f"gallery {directory}: is " + (bundle if (directory / MANIFEST).is_file() else
                                                          f"not a gallery (neither gallery.db nor {META_FILE} in it)"))
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"gallery {directory}: {META_FILE} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise GalleryError(f"gallery {directory}: {META_FILE} unreadable ({exc.strerror})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GalleryError(f"gallery {directory}: {META_FILE} is not a byakugan gallery")
    if meta.get("version") != FORMAT_VERSION:
        raise GalleryError(
            f"gallery {directory}: format version {meta.get('version')!r} is not supported (this byakugan reads {FORMAT_VERSION})"
        )
    if not isinstance(meta.get("index_file"), str) or not isinstance(meta.get("index_sha256"), str) \
            or "/" in meta["index_file"] or meta["index_file"].startswith("."):
        raise GalleryError(f"gallery {directory}: {META_FILE} is malformed (index_file and index_sha256 must name a file in the folder)")
    return meta


# The folders whose lock each thread holds: a nested edit of one is refused instead of waiting on
# its own thread. Per thread, as threads of one program each wait for the lock like other programs.
class _Holding(threading.local):
    def __init__(self) -> None:  # run once in each thread that uses it
        self.folders: set[str] = set()


_HOLDING = _Holding()


@contextlib.contextmanager
def locked(directory: Path, waiting: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Exclusive lock for a read-modify-save cycle, so two writers never lose each other's changes.
    Holding it, the leftovers of writers killed mid-save are removed. A folder the lock made is
    removed again when nothing was saved in it (a first enrolment that failed leaves no stray folder).
    waiting: called once if another writer holds it (a reindex may take minutes), before waiting."""
    import fcntl

    if directory.exists() and not directory.is_dir():
        raise GalleryError(f"gallery {directory}: is a file, not a gallery folder")
    key = os.path.realpath(directory)
    if key in _HOLDING.folders:  # flock by another open of the file: this thread would wait for itself forever
        raise GalleryError(f"gallery {directory}: this thread already holds its lock (an edit inside another edit of "
                           "the same gallery); make the change through the outer edit's gallery")
    if directory.is_symlink() and not directory.exists():  # mkdir would fail on it as if another writer removed it
        raise GalleryError(f"gallery {directory}: is a link to {os.readlink(directory)}, which does not exist")
    # A folder this user may not write in is named as such: the lock file it cannot make was told as
    # "cannot be created or locked (Operation not permitted)", and with one there already the edit
    # failed later, on its database. (Its permissions, chattr +i, or a disk mounted read-only.)
    if directory.is_dir() and not os.access(directory, os.W_OK):
        raise ReadOnlyGalleryError(f"gallery {directory}: its folder is read-only (not writable by this user, or on a read-only "
                           "disk), and an edit must write there; nothing was changed (edit a writable copy, "
                           "or get write access to the folder)")
    if file := next((p for p in directory.parents if p.exists() and not p.is_dir()), None):
        raise GalleryError(f"gallery {directory}: {file} is a file, not a folder")
    for _ in range(100):  # a folder another writer keeps removing (below) is made again, up to a point
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:  # made here, by this call (not another writer's): removed again if nothing is saved
                directory.mkdir()
                made = True
            except FileExistsError:
                made = False
            except FileNotFoundError:  # beside a folder that is there: a place no folder can be made (/proc)
                raise OSError(errno.EACCES, "no folder can be made there") from None
            f = open(directory / LOCK_FILE, "a")
        except FileNotFoundError:  # removed by a writer that made it, between the mkdir and the open
            continue
        except OSError as exc:
            raise GalleryError(f"gallery {directory}: cannot be created or locked ({exc.strerror})") from None
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                    waiting = None
                fcntl.flock(f, fcntl.LOCK_EX)
            # the folder may have been removed, as below, while this waited: lock it afresh
            current = os.stat(directory / LOCK_FILE).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            current = False
        except BaseException:  # interrupted while waiting (Ctrl-C, kill); another writer may be using the folder
            f.close()
            raise
        if current:
            break
        f.close()
    else:
        raise GalleryError(f"gallery {directory}: cannot be locked (its folder went away 100 times while being locked)")
    with f:
        _HOLDING.folders.add(key)
        try:
            clean_leftovers(directory)
            yield
        finally:
            _HOLDING.folders.discard(key)
            with contextlib.suppress(OSError):  # still holding the lock: no other writer is in it
                if made and os.listdir(directory) == [LOCK_FILE]:
                    (directory / LOCK_FILE).unlink()
                    directory.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_leftovers(directory: Path) -> list[Path]:
    """Remove the temporary files of writers that no longer run (killed mid-save); call it holding
    the lock. (An index file written by a save that died is replaced by the next save.)"""
    removed = []
    for p in [*directory.glob(".*.tmp-*"), *directory.glob(f"{THUMBS}/.*.tmp-*")]:
        if not owned(p):
            continue
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def check_new(path) -> None:
    """Refuse to start a gallery in a file, or in a folder holding anything but a gallery's own
    leftovers (a lock, thumbnails, index or temporary files of a first save that died)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise GalleryError(f"gallery {path}: is a file, not a gallery folder")
    if p.is_dir() and not (p / META_FILE).is_file() and not (p / "gallery.db").is_file():
        if not all(owned(x) for x in p.iterdir()):
            raise GalleryError(f"gallery {path}: folder exists, is not empty and is not a gallery; refusing to use it")
        # A first save makes gallery.db before it writes any vector: vectors without it are a gallery
        # whose database was lost, which a new gallery would write over.
        if lost := next((x.name for x in p.iterdir() if x.name[:1] != "." and (x.name.endswith((".f32", ".faiss"))
                                                                              or x.name == "milvus.db")), None):
            raise GalleryError(f"gallery {path}: holds a gallery's {lost} but no gallery.db (deleted or lost?); nothing "
                               "was changed: put gallery.db back, or start the new gallery in another folder")


def check_save_target(target: Path, same: bool, holds_gallery: bool) -> None:
    """Before a gallery saves to `target` (same: the folder it was opened from or last saved to;
    holds_gallery: a committed gallery is there): never over another gallery or a folder of other
    things, and a folder that cannot be made is one line."""
    if not same:
        check_new(target)  # a first save that died left only a gallery's own files: those are fine
        if holds_gallery:
            raise GalleryError(f"gallery {target}: already holds another gallery; save to a new folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GalleryError(f"gallery {target}: cannot make the folder ({exc.strerror or exc})") from None


def owned(p: Path) -> bool:
    """Whether a folder entry is one a gallery writes (so a first save that died leaves nothing foreign)."""
    name = p.name
    if name.startswith(".") and ".tmp-" in name:
        name = name[1 : name.index(".tmp-")]
    return (name in (META_FILE, LOCK_FILE, COHORT, THUMBS, "gallery.db", "gallery.db-wal", "gallery.db-shm", "backup-v1",
                     "milvus.db")  # index.milvus: a Milvus Lite database
            or any(name.startswith(a) and name.endswith(b) for a, b in
                   (("index.", ".faiss"), ("vectors.", ".f32")))
            or (p.parent.name == THUMBS and name.endswith(".jpg")))


def alive(pid: int) -> bool:
    """Whether a process of this machine with that id runs (a writer or an export that was killed does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retire(directory: Path, backup: str, keep) -> None:
    """This format's files (gallery.json and the index it named), moved into `backup` once a save
    in the second format (index.db) has committed; `keep` is a checkpoint of that save."""
    old = directory / META_FILE
    if not old.is_file():
        return
    (directory / backup).mkdir(exist_ok=True)
    for p in [*directory.glob("index.*.faiss"), old]:
        if p.name != keep:
            p.replace(directory / backup / p.name)
    fsync_dir(directory)
