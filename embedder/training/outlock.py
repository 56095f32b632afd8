"""One training at a time into one model folder. Each run checks the folder before its work and saves
into it at the end, minutes or hours later: two runs given the same --out both passed the check,
both said they saved, and the folder held one of their models. The first holds a lock on the folder
for the whole run; a second is refused at once, naming the folder."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from ..errors import ByakuganError

LOCK = ".training.lock"  # a dot file: check_model_out and listings pass over it


@contextlib.contextmanager
def training_into(out: os.PathLike | str) -> Iterator[None]:
    """Held while a run trains into `out`; the lock file goes when the run ends, and so does a
    folder this made where nothing was saved. A folder that cannot be made or locked is left to the
    run's own checks to name (check_model_out)."""
    import fcntl

    d = Path(out)
    made: list[Path] = []  # the folders this made (the model's, and any missing above it), removed if left empty
    for _ in range(3):  # a lock file the run before removed as this opened it: a new one
        try:
            for p in [*reversed(Path(os.path.abspath(d)).parents), Path(os.path.abspath(d))]:
                if not p.is_dir():
                    try:
                        p.mkdir()
                        made.append(p)
                    except FileExistsError:  # another run made it first: this one locks it the same
                        pass
            f = open(d / LOCK, "a")
        except OSError:
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(d / LOCK).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        except OSError as exc:
            f.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ByakuganError(f"out {d}: another training is writing its model there now; wait for it to end, "
                                "or give another folder") from None
        f.close()
    else:
        yield
        return
    with f:
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # still held: a run that opens it now is refused, or finds it gone
                (d / LOCK).unlink()
                for p in reversed(made):
                    if any(p.iterdir()):
                        break
                    p.rmdir()
