"""The vector file of a gallery folder (index.db): float32 rows, appended in pieces that each
carry a SHA-256 in gallery.db, read back piece by piece."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from byakugan.embedder.atomic import fsync_dir

from .errors import GalleryError

PIECE_ROWS = 1024  # rows per checksummed piece: opening reads and checks one piece at a time


def live_blocks(path: Path, f, pieces: list, rows_ids: np.ndarray, first: int, dim: int):
    """(ids, vectors) of each piece's rows that references still name, in row order, each piece
    checked against its checksum. The vectors may be a view of one buffer that the next piece
    overwrites (opening holds one piece beside the index, not two): copy what you keep."""
    buffer = bytearray()
    for start, rows, digest in pieces:
        if start + rows <= first:
            continue
        if len(buffer) < rows * dim * 4:
            buffer = bytearray(rows * dim * 4)
        data = memoryview(buffer)[: rows * dim * 4]
        f.seek(start * dim * 4)
        if f.readinto(data) != len(data) or hashlib.sha256(data).hexdigest() != digest:
            raise GalleryError(f"gallery {path.parent}: {path.name} does not match its checksum (damaged)")
        lo, hi = np.searchsorted(rows_ids[:, 0], [start, start + rows])
        if hi > lo:
            at, block = rows_ids[lo:hi], np.frombuffer(data, np.float32).reshape(rows, dim)
            yield at[:, 1], block if hi - lo == rows else block[at[:, 0] - start]


def write_vectors(directory: Path, old, store, ids, gen: int, full: bool, last):
    """Append the vectors of ids to the vector file after its `last` piece (or write a new file
    holding them, when full); returns (storage settings, {id: row}, pieces to insert or replace).
    A small last piece is extended rather than followed (one piece per save would make opening a
    gallery of many small saves read thousands of pieces)."""
    ids, dim, prefix = [int(i) for i in ids], store.dim, b""
    if not full and ids and last and last[1] + len(ids) <= PIECE_ROWS:
        with open(directory / old["vectors"], "rb") as f:
            f.seek(last[0] * dim * 4)
            prefix = f.read(last[1] * dim * 4)
        if hashlib.sha256(prefix).hexdigest() != last[2]:
            raise GalleryError(f"gallery {directory}: {old['vectors']} does not match its checksum (damaged); nothing changed")
    blocks = [ids[s:s + PIECE_ROWS] for s in range(0, len(ids), PIECE_ROWS)]
    if full:
        name, start = f"vectors.{gen:06d}.f32", 0
        path = directory / name
        f = open(path.with_name(f".{name}.tmp-{os.getpid()}"), "wb")
    else:
        name, start = old["vectors"], int(old["rows"])
        path = directory / name
        f = open(path, "r+b")
        f.truncate(start * dim * 4)  # rows a killed writer appended and never committed
    pieces, rows = [], {}
    try:
        with f:
            f.seek(start * dim * 4)
            for block in blocks:
                data = np.ascontiguousarray(store.get(block), np.float32).tobytes()
                f.write(data)
                if prefix:  # the last piece, extended by this block
                    pieces.append((last[0], last[1] + len(block), hashlib.sha256(prefix + data).hexdigest()))
                    prefix = b""
                else:
                    pieces.append((start, len(block), hashlib.sha256(data).hexdigest()))
                rows.update((i, start + k) for k, i in enumerate(block))
                start += len(block)
            f.flush()
            os.fsync(f.fileno())
        if full:
            os.replace(f.name, path)
            fsync_dir(directory)
    except BaseException:
        if full:
            Path(f.name).unlink(missing_ok=True)
        raise
    return {"vectors": name, "rows": start}, rows, pieces

