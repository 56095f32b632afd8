"""A gallery folder's second format: a save costs what it adds.

- `gallery.db` (SQLite, WAL) holds the settings, one row per reference (its label, source and
  the row of its vector) and the checksums of the vector file's pieces.
- `vectors.<generation>.f32` holds the vectors, float32 rows, appended to and never rewritten in
  place. Enrolling appends rows and inserts references; removing deletes references (their rows
  become garbage, dropped when the file is compacted: garbage beyond both `COMPACT_MIN` rows and
  the live ones); renaming is one UPDATE.
- `index.<generation>.faiss`, only for index types that cannot be built quickly from the vectors
  (HNSW, IVF): as of `checkpoint_rows` rows, an HNSW index's graph and the order of its vectors,
  or an IVF index's centroids and each reference's list (index.checkpoint: the vectors are in the
  vector file, and opening puts each row where the checkpoint says); written again when the index
  type changed, more than `TAIL_MAX` rows were added since, or (HNSW, which cannot remove) rows
  were removed; opening adds the rows after it. A checkpoint of the first kind (the whole index,
  as galleries saved before format 3 kept it) is read as before.

Crash safety: the writer holds SQLite's write lock for the whole save; every byte a commit names
is written and synced before it commits. Rows a killed writer appended after the committed end are
cut off by the next save. Readers read one snapshot and only the rows it names, so appends never
disturb them; when a compaction or checkpoint deleted a file their snapshot named, they read again.
A first-format folder (gallery.json) is read as before and written in this format by its next
save, its old files moved to `backup-v1/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from byakugan.embedder.atomic import write_atomic

from .errors import GalleryError
from .ranking import Reference
from .store import retire as retire_first_format
from .vectorfile import live_blocks, write_vectors
from . import checkpoint as checkpoints, vectorfile
from .committed import CHECKPOINT, DB_FILE, UNWRITABLE, VECTORS, exists, not_read, readable, reader, snapshot, tidy, version  # noqa: F401 (exists: the folder's API)
from .quantised import PQStore
from .vectors import FlatStore

BACKUP = "backup-v1"
# of gallery.db (the first format, gallery.json, was 1); 3: HNSW checkpoints without the vectors.
# A gallery.db of format 2 reads as it is and is written as 3 by its next save.
FORMAT_VERSION, READS = 3, (2, 3)
COMPACT_MIN = 1024
TAIL_MAX = 1000  # rows an HNSW checkpoint may lag: about 1 s of graph building when opening
SCHEMA = (  # created inside the first save's transaction: a save that died leaves no half a gallery
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refs (id INTEGER PRIMARY KEY, label TEXT NOT NULL, source TEXT NOT NULL, "
    "added TEXT NOT NULL, row INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pieces (start INTEGER PRIMARY KEY, rows INTEGER NOT NULL, sha256 TEXT NOT NULL)")
MISTYPED = ("SELECT COUNT(*) FROM refs WHERE typeof(label) != 'text' OR typeof(source) != 'text' "
            "OR typeof(added) != 'text' OR typeof(row) != 'integer'")
NOT_SETTINGS = ("references", "storage", "index_file", "index_sha256")
SNAPSHOT = ("SELECT key, value FROM settings", "SELECT id, label, source, added, row FROM refs ORDER BY row", MISTYPED,
            "SELECT start, rows, sha256 FROM pieces ORDER BY start")


def _connect(directory: Path) -> sqlite3.Connection:
    """A writer's connection (readers read through committed.snapshot: no schema, no journal switch,
    so they never wait for a lock)."""
    try:
        con = sqlite3.connect(directory / DB_FILE, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con
    except sqlite3.Error as exc:
        if isinstance(exc, sqlite3.OperationalError) and not os.access(directory, os.W_OK):  # SQLite: "unable to open"
            raise GalleryError(f"gallery {directory}: {DB_FILE} is {UNWRITABLE}") from None
        raise GalleryError(f"gallery {directory}: {DB_FILE} is {not_read(exc)}") from None


def _settings(directory: Path, rows) -> dict:
    """The settings rows as values; a row that is not JSON is named (another program wrote it, or damage)."""
    meta = {}
    for key, value in rows:
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"gallery {directory}: {DB_FILE}: setting {str(key)[:40]!r} is not valid JSON ({exc}); "
                               "another program wrote it, or the file is damaged: restore it from a copy") from None
    return meta


def load(directory: Path, attempts: int = 5):
    """(meta with its "references" list, the vector store) as the last committed save left them."""
    readable(directory)  # damaged, or another program's: said before anything is read
    for attempt in range(attempts):
        if (rows := snapshot(directory, SNAPSHOT, last=attempt + 1 == attempts)) is None:
            continue  # written meanwhile by another user, under an immutable read: read again
        meta, refs, mistyped, pieces = _settings(directory, rows[0]), rows[1], rows[2][0][0], rows[3]
        if meta.get("version") not in READS:  # a later format may store what this code would misread
            raise GalleryError(f"gallery {directory}: format version {meta.get('version')!r} is not one this byakugan "
                               f"reads ({' or '.join(map(str, READS))}); it was saved by another version")
        try:
            st = meta.pop("storage")
            if mistyped:
                raise ValueError(f"{mistyped} references are not (id, label, source, added, row) of the right types")
            if not isinstance(st, dict):
                raise TypeError("storage is not an object")
            if st.get("backend") == "milvus":  # the vectors are in Milvus (index.milvus), not in files
                from .milvus import MilvusStore
                store = MilvusStore.opened(directory, st, [r[0] for r in refs], meta["next_id"])
            elif not (VECTORS.match(st["vectors"]) and (st["checkpoint"] is None or CHECKPOINT.match(st["checkpoint"]))):
                raise ValueError("file names outside the folder")
            else:
                store = _read(directory, st, refs, pieces)
        except FileNotFoundError as exc:
            if attempt + 1 < attempts:
                continue  # a save compacted or checkpointed under us: read the new state
            raise GalleryError(f"gallery {directory}: {Path(exc.filename or '?').name}, which {DB_FILE} names, is "
                               "missing") from None
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise GalleryError(f"gallery {directory}: {DB_FILE} is malformed ({exc})") from None
        except (OSError, MemoryError, RuntimeError, AssertionError) as exc:
            raise GalleryError(f"gallery {directory}: its vector files are not readable "
                               f"({type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''})") from None
        meta["references"] = [Reference(i, lab, s, a) for i, lab, s, a, _ in refs]  # typed: MISTYPED found none
        return meta, store
    raise GalleryError(f"gallery {directory}: changed {attempts} times while being read; try again")


def _read(directory: Path, st: dict, refs: list, pieces: list) -> FlatStore:
    dim, first, slots = int(st["dim"]), 0, None
    if st["checkpoint"]:
        with open(directory / st["checkpoint"], "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != st["checkpoint_sha256"]:
                raise GalleryError(f"gallery {directory}: {st['checkpoint']} does not match its checksum (damaged)")
            f.seek(0)
            whole = checkpoints.holds_vectors(f.read(32))  # else a graph or lists, the vectors in the vector file
            f.seek(0)
            try:
                store, slots = (FlatStore.read(f), None) if whole else checkpoints.read(f.read(), st["factory"], dim)
            except ValueError as exc:
                raise GalleryError(f"gallery {directory}: {st['checkpoint']} is not a readable index ({exc})") from None
        coded = isinstance(store, PQStore)  # IVF-PQ: codes in the checkpoint, exact vectors read from the file
        first = int(st["checkpoint_rows"]) if whole or coded else 0  # else every live row from the vector file
        if (whole or coded) and store.removes_in_place:  # references removed since the checkpoint was written
            live = {i for i, _, _, _, _ in refs}
            store.remove([i for i in store.ids().tolist() if i not in live])
    else:
        store = FlatStore.empty(dim, st["factory"])
    ends = [0] + [start + rows for start, rows, _ in pieces]
    if [start for start, _, _ in pieces] != ends[:-1] or ends[-1] != int(st["rows"]) or not 0 <= first <= ends[-1] \
            or (directory / st["vectors"]).stat().st_size < ends[-1] * dim * 4:
        raise GalleryError(f"gallery {directory}: {st['vectors']} is shorter than {DB_FILE} says, or its pieces "
                           "do not follow each other (damaged)")
    rows_ids = np.array([(row, i) for i, _, _, _, row in refs if row >= first], np.int64).reshape(-1, 2)
    rows_ids = rows_ids[np.argsort(rows_ids[:, 0], kind="stable")]
    with open(directory / st["vectors"], "rb") as f:
        blocks = live_blocks(directory / st["vectors"], f, pieces, rows_ids, first, dim)
        if st["checkpoint"] is None and st["factory"] == "Flat":
            store = FlatStore.filled(dim, rows_ids[:, 1], (v for _, v in blocks))
        elif slots is not None:  # a graph or lists: each live row where the checkpoint puts it
            listed = rows_ids[rows_ids[:, 0] < int(st["checkpoint_rows"]), 1]
            if not np.isin(listed, slots[:, 0]).all():  # every row the checkpoint covers has its place
                raise GalleryError(f"gallery {directory}: {st['checkpoint']} lacks some references (damaged)")
            try:
                # an IVF list takes a FAISS call per block: fewer, larger ones; HNSW copies each piece into place
                checkpoints.fill(store, slots, rows_ids[:, 1],
                                 batched(blocks, 16 * vectorfile.PIECE_ROWS) if store.ivf is not None else blocks)
            except ValueError as exc:
                raise GalleryError(f"gallery {directory}: {st['checkpoint']} and {st['vectors']} disagree ({exc}; damaged)") from None
        else:  # small pieces are added together: each add is a FAISS call with its own overhead
            for ids, v in batched(blocks, vectorfile.PIECE_ROWS):
                store.add(ids, v)
    if len(store) != len(refs):
        raise GalleryError(f"gallery {directory}: holds {len(store)} vectors but lists {len(refs)} references (damaged)")
    if isinstance(store, PQStore):  # the rows its codes stand for are read from the file: checked here first
        every = np.array(sorted((row, i) for i, _, _, _, row in refs), np.int64).reshape(-1, 2)
        if not np.array_equal(np.sort(store.ids()), np.sort(every[:, 1])):  # as many, but not the same ones
            raise GalleryError(f"gallery {directory}: {st['checkpoint']} does not list its references (damaged)")
        with open(directory / st["vectors"], "rb") as f:
            for _ in live_blocks(directory / st["vectors"], f, [p for p in pieces if p[0] < first], every, 0, dim):
                pass
        store.attach(directory / st["vectors"], every)
    return store


def whole_index(path: Path) -> bool:
    """Whether a checkpoint file holds the whole index, vectors included (as format 2 wrote them)."""
    with open(path, "rb") as f:
        return checkpoints.holds_vectors(f.read(32))


def batched(blocks, rows: int):
    """(ids, vectors) blocks joined into blocks of at least `rows` rows (the last may be shorter):
    fewer, larger FAISS calls, at one such block's memory."""
    batch: list = []
    for ids, v in blocks:
        batch.append((ids, np.array(v)))  # live_blocks reuses its buffer
        if sum(len(i) for i, _ in batch) >= rows:
            yield np.concatenate([i for i, _ in batch]), np.concatenate([x for _, x in batch])
            batch.clear()
    if batch:
        yield np.concatenate([i for i, _ in batch]), np.concatenate([x for _, x in batch])


def save(directory: Path, meta: dict, refs: Mapping[int, Reference], store, added: Sequence[int],
         removed: Sequence[int], renamed: Sequence[tuple[str, str]], rebuild: bool, same: bool = True,
         first: Optional[Callable[[], None]] = None, undo: Optional[Callable[[], None]] = None) -> None:
    """Write what changed since the last save (added ids, removed ids, renamed labels), or
    everything when `rebuild`, the folder is new to this format, or compaction is due. same: the
    folder is the one `meta` was read from or last saved to; it must still hold that generation.
    first: files the save needs beside the database (thumbnails), written holding its write lock
    once the generation is checked, before anything else; undo: called when the save then fails."""
    directory.mkdir(parents=True, exist_ok=True)
    con = _connect(directory)
    try:
        con.execute("BEGIN IMMEDIATE")  # one writer at a time, from here to the commit
        for statement in SCHEMA:
            con.execute(statement)
        now = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM settings WHERE key IN "
                                                          "('storage', 'generation', 'commit')")}
        old = now.get("storage")
        if not same and "generation" in now:  # made there since this save checked the folder was free
            raise GalleryError(f"gallery {directory}: another gallery was saved there meanwhile; nothing changed: save to a new folder")
        if same and "generation" in now and (now["generation"], now.get("commit")) != (meta.get("generation"), meta.get("commit")):
            # Its settings row (next id, threshold, sequences) and its edits are of another state (a newer
            # one, or a copy put in its place): written, they would undo its settings and take ids it gave.
            raise sqlite3.IntegrityError(f"generation {now['generation']}, this copy's {meta.get('generation')}" + (
                " but another copy's" if now["generation"] == meta.get("generation") else ""))
        if first is not None:  # under the write lock: other savers wait (up to the busy timeout) while it writes
            first()
        # Past both this object's generation and the folder's: new file names never replace one in use.
        gen = max(int(meta.get("generation", 0)), int(now.get("generation", 0))) + 1
        milvus = getattr(store, "backend", "") == "milvus"
        full = old is None or rebuild or int(old["dim"]) != store.dim or not milvus and \
            int(old["rows"]) - (len(refs) - len(added)) > max(COMPACT_MIN, len(refs))
        if milvus:  # index.milvus: new vectors upserted before this commit, removed ones deleted after it
            (st, new_rows), new_pieces = store.stage(con, directory, old, refs if full else added, removed, full), []
        else:  # files: append the new vectors (or write them all), and an HNSW checkpoint when due
            last = None if full else con.execute("SELECT start, rows, sha256 FROM pieces ORDER BY start DESC LIMIT 1").fetchone()
            st, new_rows, new_pieces = write_vectors(directory, old, store, refs if full else added, gen, full, last)
            st.update(dim=store.dim, factory=store.factory, checkpoint=None, checkpoint_rows=0)
            if store.factory != "Flat" and not full and old.get("checkpoint"):
                st.update({k: old[k] for k in ("checkpoint", "checkpoint_sha256", "checkpoint_rows")})
            stale = removed and not store.removes_in_place  # an IVF checkpoint drops removed ids when opened
            if store.factory != "Flat" and (full or stale or st["checkpoint"] is None or old.get("factory") != store.factory
                                            or st["rows"] - int(st["checkpoint_rows"]) > TAIL_MAX
                                            or whole_index(directory / st["checkpoint"])):  # format 2's: vectors twice
                blob = checkpoints.write(store)
                name = write_atomic(directory / f"index.{gen:06d}.faiss", blob).name
                st.update(checkpoint=name, checkpoint_sha256=hashlib.sha256(blob).hexdigest(), checkpoint_rows=st["rows"])
        settings = {k: v for k, v in meta.items() if k not in NOT_SETTINGS}
        settings.update(format="byakugan-gallery", version=FORMAT_VERSION, generation=gen, commit=secrets.token_hex(8),
                        storage=st)
        con.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                        [(k, json.dumps(v, ensure_ascii=False)) for k, v in settings.items()])
        if full:
            con.execute("DELETE FROM refs")
            con.execute("DELETE FROM pieces")
        else:
            con.executemany("DELETE FROM refs WHERE id = ?", [(int(i),) for i in removed])
            con.executemany("UPDATE refs SET label = ? WHERE label = ?", [(new, old_) for old_, new in renamed])
        con.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?)",
                        [(i, refs[i].label, refs[i].source, refs[i].added, row) for i, row in new_rows.items()])
        con.executemany("INSERT OR REPLACE INTO pieces VALUES (?, ?, ?)", new_pieces)
        con.execute("COMMIT")
        if milvus:
            store.committed(con, meta["next_id"])
    except sqlite3.IntegrityError as exc:  # ids this copy means to add were taken by a save since it was opened
        raise GalleryError(f"gallery {directory}: another save changed it since this copy was opened ({exc}); "
                           "nothing changed: open it again and redo the edit") from None
    except (sqlite3.Error, OSError, KeyError, TypeError, ValueError) as exc:  # OSError: a full disk, a file gone
        raise GalleryError(f"gallery {directory}: could not be saved ({exc}); nothing changed") from None
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
            if undo is not None:
                undo()
        con.close()
    if isinstance(store, PQStore):  # committed: its exact vectors are now read from the file
        try:
            store.saved(directory / st["vectors"], new_rows, full)
        except (OSError, ValueError) as exc:
            raise GalleryError(f"gallery {directory}: saved, but this copy cannot read its vectors again ({exc}); "
                               "open the gallery again") from None
    meta.update(settings)
    meta.pop("storage", None)

    def old_files() -> None:
        retire_first_format(directory, BACKUP, keep=st.get("checkpoint"))
        for p in [*directory.glob("vectors.*.f32"), *directory.glob("index.*.faiss")]:
            # One no reader of the new state needs, older than it: not one a save begun since is writing.
            if p.name not in (st.get("vectors"), st.get("checkpoint")) and _generation(p.name) < gen:
                p.unlink(missing_ok=True)

    tidy(directory, old_files)


def _generation(name: str) -> int:  # vectors.000012.f32 and index.000012.faiss: 12 (another name: kept)
    return int(part) if (part := name.split(".")[1] if name.count(".") == 2 else "").isdigit() else 1 << 62
