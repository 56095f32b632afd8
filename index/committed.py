"""What a gallery folder has committed: the generation its last save wrote, or what is wrong with
its database (damaged, or another program's), read without taking any lock (index.db writes it)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import warnings
from pathlib import Path
from typing import Callable, Optional

from byakugan.embedder.errors import ByakuganWarning

from .errors import GalleryError

DB_FILE = "gallery.db"
VECTORS, CHECKPOINT = re.compile(r"vectors\.\d{6,}\.f32\Z"), re.compile(r"index\.\d{6,}\.faiss\Z")


# SQLite says only "unable to open database file" where its WAL files cannot be made beside the database.
UNWRITABLE = ("in a folder that cannot be written (its permissions, or a read-only disk), which its database needs "
              "to save and even to be read (WAL)")

def reader(f: Path, immutable: Optional[bool] = None, **kw) -> sqlite3.Connection:
    """A connection to the database f that cannot write it. Where its folder cannot be written
    (permissions, a read-only disk) SQLite cannot make the WAL index a reader needs; with no write
    under way there (no WAL file with frames in it) the file is read as immutable, so a gallery on
    read-only media still answers. The path goes as a file: URI with its characters escaped (a
    folder named `a?b` must not open `a`)."""
    f = Path(f).absolute()
    immutable = still(f) if immutable is None else immutable
    return sqlite3.connect(f"{f.as_uri()}?{'immutable=1' if immutable else 'mode=ro'}", uri=True, **kw)


def still(f: Path) -> bool:
    """Whether the database f is read as immutable (reader): its folder unwritable here, no write under way."""
    wal = Path(f).with_name(Path(f).name + "-wal")
    return not os.access(Path(f).parent, os.W_OK) and not (wal.is_file() and wal.stat().st_size)


def stamp(f: Path) -> tuple:
    """What changes when anyone writes the database f: read before and after an immutable read,
    which takes no lock (another user may write a folder this one cannot), to read again if it moved."""
    out = []
    for p in (Path(f), Path(f).with_name(Path(f).name + "-wal"), Path(f).with_name(Path(f).name + "-journal")):
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def exists(directory: Path) -> bool:
    """Whether a save has committed a gallery here, or a database is there that is damaged or
    another program's (never to be taken for an empty folder and written over). A first save that
    died leaves a database with no settings: not a gallery yet, so a first-format gallery beside it
    still opens as one."""
    return version(directory) is not None


def version(directory: Path):
    """The committed state: (generation, commit). Every save raises the generation (not file times:
    two saves within a timestamp's step would look the same) and draws a new random commit, so a
    copy of the folder saved as many times as the original is still told from it (galleries saved
    before commits were drawn give None). None when no save has committed here; a string saying
    what is wrong when the database is unreadable, damaged or another program's."""
    f = directory / DB_FILE
    if not f.is_file():
        return None
    try:
        con = reader(f)
        try:
            tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                # A first save that died: the journal switch writes the file's first page before
                # anything else of a gallery is written (vectors, a checkpoint, a Milvus Lite database).
                if f.stat().st_size == 0 and any(VECTORS.match(p.name) or CHECKPOINT.match(p.name) or p.name == "milvus.db"
                                                 for p in directory.iterdir()):
                    return "unreadable: empty, beside a gallery's files (damaged)"
                return None
            if not {"settings", "refs", "pieces"} <= tables:
                return f"unreadable: not a byakugan gallery's database (its tables: {', '.join(sorted(tables))})"
            n, gen, commit = con.execute("SELECT COUNT(*), MAX(CASE WHEN key = 'generation' THEN value END), "
                                         "MAX(CASE WHEN key = 'commit' THEN value END) FROM settings").fetchone()
            held = n or con.execute("SELECT EXISTS (SELECT 1 FROM refs) OR EXISTS (SELECT 1 FROM pieces)").fetchone()[0]
        finally:
            con.close()
        if not held:  # empty tables: a first save that died, from before saves made them in their transaction
            return None
        if not n:  # references without the settings their commit wrote
            return "unreadable: missing its settings (damaged)"
        read = {}
        for key, v in (("generation", gen), ("commit", commit)):
            try:
                read[key] = json.loads(v) if v is not None else None
            except (TypeError, ValueError) as exc:
                return f"unreadable: damaged (setting {key!r} is not valid JSON: {exc})"
        gen, commit = read["generation"], read["commit"]
        if not isinstance(gen, int) or isinstance(gen, bool):
            return f"unreadable: damaged (its generation is {gen!r}, not a whole number)"
        if not isinstance(commit, (str, type(None))):
            return f"unreadable: damaged (its commit is {commit!r}, not text)"
        return gen, commit
    except (sqlite3.Error, ValueError, TypeError, OSError) as exc:
        if isinstance(exc, sqlite3.OperationalError) and not os.access(directory, os.W_OK):  # "unable to open"
            return f"unreadable: {UNWRITABLE}"
        return f"unreadable: {not_read(exc)}"


def not_read(exc: BaseException) -> str:
    """What a database error says of the file: damage, or a disk that refused (full, or failing):
    "not a readable database" for a full disk sent people after a gallery that was fine."""
    if isinstance(exc, sqlite3.OperationalError) and str(exc) in ("disk I/O error", "database or disk is full"):
        return f"unreadable just now ({exc}: the disk is full or refused a write, not a sign the gallery is damaged)"
    return f"not a readable database ({exc})"


def readable(directory: Path):
    """version(), or GalleryError saying what is wrong with the database."""
    now = version(directory)
    if isinstance(now, str):
        raise GalleryError(f"gallery {directory}: {DB_FILE} is {now.removeprefix('unreadable: ')}; nothing was changed")
    return now


def check_current(directory: Path, state) -> None:
    """GalleryError unless the folder still holds `state` (version(): the one a copy was read at or
    last saved), or nothing committed where nothing was: a copy of another state must not write over
    it, nor a copy of a gallery since removed make it again in part."""
    now = readable(directory)
    # (A first-format folder, gallery.json, has no database yet: its next save writes one.)
    if now is None and state is not None and not (directory / "gallery.json").is_file():  # (thumbnails, say)
        raise GalleryError(f"gallery {directory}: was removed (or moved) since this copy was opened; nothing saved: "
                           "save it to another folder to keep this copy, without the thumbnails the folder held")
    if now is not None and now != state:
        raise GalleryError(f"gallery {directory}: another save changed it since this copy was opened; nothing "
                           "changed: open it again and redo the edit")


def tidy(directory: Path, remove: Callable[[], None]) -> None:
    """Removing, after a commit, the files the new state no longer needs. It may fail (a file made
    immutable, a folder that lost its write permission) with the edit committed all the same: a
    warning then, not an error that would have the user redo an edit that is done."""
    try:
        remove()
    except OSError as exc:
        warnings.warn(f"gallery {directory}: saved, but a file it no longer needs could not be removed "
                      f"({os.fsdecode(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}); "
                      "it only takes space", ByakuganWarning, stacklevel=3)


def snapshot(directory: Path, queries, last: bool = True) -> Optional[list]:
    """Each query's rows, read in one snapshot of the directory's database; None where it was read
    as immutable (a folder this user cannot write: SQLite then takes no lock and BEGIN makes no
    snapshot) and another user wrote it meanwhile, which the file's stamp tells: read again then
    (on the `last` try, GalleryError)."""
    f = directory / DB_FILE
    frozen = still(f)
    before = stamp(f) if frozen else None
    con = reader(f, frozen, timeout=60, isolation_level=None)  # as stamped: decided once
    try:
        con.execute("BEGIN")
        rows = [list(con.execute(q)) for q in queries]
        con.execute("COMMIT")
    except (sqlite3.Error, ValueError) as exc:
        if frozen and not last and stamp(f) != before:
            return None
        raise GalleryError(f"gallery {directory}: {DB_FILE} is {not_read(exc)}") from None
    finally:
        con.close()
    if frozen and stamp(f) != before:
        if not last:
            return None
        raise GalleryError(f"gallery {directory}: {DB_FILE} kept changing while it was read (another user "
                           "writing it); try again")
    return rows
