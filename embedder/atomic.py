"""The one atomic file write: beside the target, fsync, rename over it. Readers see old or new, never half."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ByakuganError


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: os.PathLike | str, data: bytes, sync_dir: bool = True) -> Path:
    """Write `data` to `path` so that a crash leaves either the previous file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # (a read-only folder, where it was never made): the first error is the one to tell
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk fails write or fsync, naming no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def check_writable(path: os.PathLike | str, what: str, folder: bool) -> None:
    """That `path` can be written as a folder (made if missing) or as a file in an existing folder."""
    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        raise ByakuganError(f"{what} {p}: is {'a file' if folder else 'a folder'}; give a {'folder' if folder else 'file'} to write")
    # a missing folder is made with its parents; a file goes into a folder that must exist
    there = next(q for q in (p, *p.absolute().parents) if q.exists()) if folder else p.absolute().parent
    if not there.is_dir():
        raise ByakuganError(f"{what} {p}: {there} {'is a file, not a folder' if there.exists() else 'does not exist'}")
    if not os.access(there, os.W_OK):
        raise ByakuganError(f"{what} {p}: folder {there} is not writable")
