"""The one atomic file write: beside the target, fsync, rename over it. Readers see old or new, never half."""

from __future__ import annotations

import os
from pathlib import Path


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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path
