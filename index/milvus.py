"""Vectors in Milvus, through pymilvus (issue #18): the same interface as vectors.FlatStore.

A gallery made with `--store milvus-lite` keeps its vectors in an embedded Milvus Lite database,
`milvus.db` inside its folder; with `--store milvus://HOST:PORT`, in a collection on a Milvus
server or cluster. SQLite stays the source of truth for labels; Milvus holds one row per reference:
its id (INT64 primary key) and vector, indexed FLAT (exact), HNSW or IVF_FLAT, inner product.

Edits are buffered here until the gallery saves: searches merge the pending additions exactly and hide pending
removals. The save (db.save -> `stage`, then `committed`) orders its writes so that a crash leaves the last committed
state: new vectors are upserted before the SQLite commit (ids at or above the committed next_id, which readers
exclude); removed ids, recorded in that commit, are deleted after it (hidden until then). Needs pymilvus only here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import GalleryError, ReadOnlyGalleryError
from .milvus_spec import (FIELD, LITE, LITE_FILE, READS, SERVER, check_lite, check_store, collections, connect, errors,
                          index_params, fresh_collection, search_params)
from .milvus_spec import CHOICES, store_name  # noqa: F401  (re-exported: index.opening and the CLI import them here)
from .vectors import FlatStore, check_factory

MAX_TOPK = 16384  # Milvus's limit on the results of one search
BATCH = 2048  # rows per upsert or get: a few MB per gRPC message at dimension 1408
TIMEOUT = 10.0  # seconds to reach a server (and to keep retrying one that refuses, as a restarting one does)
CALL_TIMEOUT = 30.0  # seconds one call may take: a few MB of vectors per upsert, or a search of a large collection
UNREACHABLE, NOT_LOADED = 2, 101  # pymilvus MilvusException codes: no connection; collection not loaded
def new_store(spec: str, dim: int, path: Optional[Path]):
    """An empty store of the kind spec names (check_store). A server is reached now, so a bad
    address is one line before any image is embedded; nothing is written before the first save."""
    spec = check_store(spec)
    if spec == "faiss":
        return FlatStore.empty(dim)
    if spec == LITE:
        return MilvusStore(path, LITE_FILE, "gallery", dim, [], 0, [])
    store = MilvusStore(path, "http://" + spec[len("milvus://"):], fresh_collection(False), dim, [], 0, [])
    store.client
    return store


class MilvusStore:
    """ids -> unit vectors in a Milvus collection, searched by inner product (exactly, or by an HNSW or IVF index)."""

    backend, kind = "milvus", "milvus-ip"

    def __init__(self, directory: Optional[Path], uri: str, collection: str, dim: int,
                 ids: Sequence[int], next_id: int, hidden: Sequence[int], factory: str = "Flat") -> None:
        self.directory, self.uri, self.collection, self.dim = directory, uri, collection, int(dim)
        # how the collection is indexed (a FAISS factory string: Flat, HNSWn, IVFn,Flat; milvus_spec),
        # and the collections a reindex replaced, dropped by the save after the one that replaced them
        self.factory, self.retiring = check_factory(factory), []
        self._ids = set(int(i) for i in ids)  # committed ids the gallery lists
        self._next_id = int(next_id)  # committed: rows at or above it are a save that never committed
        self._hidden = set(int(i) for i in hidden)  # removed by a committed save, maybe not yet deleted
        self._pending: dict[int, np.ndarray] = {}  # added since the last save
        self._removed: set[int] = set()  # committed ids removed since the last save
        self._client = None

    @classmethod
    def opened(cls, directory: Path, st: dict, ids: Sequence[int], next_id: int) -> "MilvusStore":
        """The store a committed save described (db.load); checks Milvus holds what SQLite lists."""
        if st["uri"] != LITE_FILE and not SERVER.match("milvus://" + str(st["uri"]).partition("http://")[2]):
            raise ValueError(f"Milvus location {st['uri']!r}: neither the folder's Milvus Lite database nor a server")
        store = cls(directory, st["uri"], st["collection"], int(st["dim"]), ids, next_id, st.get("deleting", []),
                    st.get("factory", "Flat"))
        store.retiring = collections(st.get("retiring"))
        if store._ids or store._next_id:  # a new process finds the collection released: load it to search it
            if st["uri"] == LITE_FILE:  # before Milvus Lite opens it: it would clean up a damaged collection
                check_lite(directory, st["collection"])
            store._call("load_collection")
        held = store._count()
        if held != len(store._ids):
            raise GalleryError(f"gallery {directory}: Milvus holds {held} vectors but the gallery lists "
                               f"{len(store._ids)} references (damaged)")
        return store

    spec = property(lambda self: LITE if self.uri == LITE_FILE else "milvus://" + self.uri.split("://", 1)[1])
    pending = property(lambda self: bool(self._pending), doc="whether vectors wait for the next save")
    saved = property(lambda self: bool(self._ids or self._next_id), doc="whether a save committed to its collection")

    @property
    def client(self):
        """The pymilvus client (imported and connected on first use); the collection is made on the first save."""
        if self._client is None:
            if self.uri == LITE_FILE and self.directory is None:
                raise GalleryError("--store milvus-lite: the gallery needs a folder to keep its database in")
            key = str((self.directory / LITE_FILE).resolve()) if self.uri == LITE_FILE else self.uri
            if self.uri == LITE_FILE and os.path.isdir(key) and not os.access(key, os.W_OK):  # not "another may hold it"
                raise ReadOnlyGalleryError(f"gallery {self.directory}: Milvus Lite database {LITE_FILE} is in a folder that cannot be "
                                   "written (permissions, or a read-only disk), and Milvus Lite writes there even to "
                                   "read; use a writable copy of the folder (`cp -r`): no command can read it where it is")
            where = f"gallery {self.directory}: Milvus Lite database {LITE_FILE} (it serves one process at a time; " \
                    "another may hold it)" if self.uri == LITE_FILE else f"Milvus server {self.spec}"
            self._client = connect(key, self.uri == LITE_FILE, TIMEOUT, where)
        return self._client

    def _call(self, method: str, **kwargs):
        reloaded, deadline = False, time.monotonic() + TIMEOUT
        while True:
            started = time.monotonic()
            try:  # a per-call limit: without one, a server that stopped answering holds a call for minutes
                if method in READS:
                    kwargs.setdefault("consistency_level", "Strong")
                return getattr(self.client, method)(collection_name=self.collection, timeout=CALL_TIMEOUT, **kwargs)
            except GalleryError:
                raise
            except Exception as exc:
                code = getattr(exc, "code", None)
                if not reloaded and code == NOT_LOADED and method in ("search", "query", "get", "delete"):
                    # a restarted server hands its collections back released: a long-lived process
                    # (page, HTTP server) loads it again instead of failing every call from then on
                    reloaded = True
                    self._reload()
                    continue
                now = time.monotonic()
                if code == UNREACHABLE and self.uri != LITE_FILE and now - started < 2.0 and now < deadline:
                    time.sleep(0.5)  # refused at once: gRPC's channel to a server that just restarted backs off
                    continue
                raise errors(f"Milvus {self.spec}, collection {self.collection}: {method} failed", exc) from None

    def _reload(self) -> None:
        with contextlib.suppress(Exception):  # the retried call reports what is wrong, in one line
            self.client.load_collection(collection_name=self.collection, timeout=CALL_TIMEOUT)

    def _visible(self, extra: bool = True) -> str:
        """The filter that shows what the last commit lists, less the removals not yet saved."""
        hide = sorted(self._hidden | (self._removed if extra else set()))
        return f"id < {self._next_id}" + (f" and id not in {hide}" if hide else "")

    def _count(self) -> int:
        if not self._ids and self._next_id == 0:
            return 0
        rows = self._call("query", filter=self._visible(False), output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __len__(self) -> int:
        return len(self._ids) - len(self._removed) + len(self._pending)

    def ids(self) -> np.ndarray:
        return np.array(sorted((self._ids - self._removed) | set(self._pending)), np.int64)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        for i, v in zip(ids, np.asarray(vectors, np.float32)):
            self._pending[int(i)] = v.copy()

    def remove(self, ids: Sequence[int]) -> None:
        for i in map(int, ids):
            if self._pending.pop(i, None) is None and i in self._ids:
                self._removed.add(i)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, np.float32)
        cand_s, cand_i = [np.zeros((len(q), 0), np.float32)], [np.zeros((len(q), 0), np.int64)]
        shown = len(self._ids) - len(self._removed)
        if shown:
            limit = min(int(k), shown, MAX_TOPK)
            s, i = np.full((len(q), limit), -np.inf, np.float32), np.full((len(q), limit), -1, np.int64)
            for start in range(0, len(q), 256):  # bounded gRPC messages for large batches
                found = self._call("search", data=list(q[start:start + 256]), limit=limit, filter=self._visible(),
                                   anns_field=FIELD, search_params=search_params(self.factory, limit), output_fields=[])
                for row, hits in enumerate(found, start):
                    hits = [h for h in hits if int(h["id"]) in self._ids][:limit]  # nothing the gallery lacks
                    s[row, :len(hits)] = [h["distance"] for h in hits]
                    i[row, :len(hits)] = [int(h["id"]) for h in hits]
            cand_s.append(s)
            cand_i.append(i)
        if self._pending:  # unsaved additions, exactly
            pid = np.fromiter(self._pending, np.int64, len(self._pending))
            cand_s.append(q @ np.stack(list(self._pending.values())).T)
            cand_i.append(np.broadcast_to(pid, (len(q), len(pid))))
        s, i = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        pad = int(k) - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.finfo(np.float32).max)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        i[~np.isfinite(s) | (i < 0)] = -1
        s[i < 0] = -np.finfo(np.float32).max
        return s.astype(np.float32), i

    def get(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        out = np.zeros((len(ids), self.dim), np.float32)
        stored = [i for i in ids if i not in self._pending]
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(stored), BATCH):
            for row in self._call("get", ids=stored[start:start + BATCH], output_fields=[FIELD]):
                found[int(row["id"])] = np.asarray(row[FIELD], np.float32)
        for n, i in enumerate(ids):
            v = self._pending.get(i, found.get(i))
            if v is None:
                raise GalleryError(f"reference id {i}: no vector in Milvus {self.spec}, collection {self.collection}")
            out[n] = v
        return out

    def rebuilt(self, factory: str, ids: Optional[Sequence[int]] = None) -> FlatStore:
        """A FAISS store of the given index type holding the same vectors (export, recall checks)."""
        ids = [int(i) for i in (self.ids() if ids is None else ids)]
        out = FlatStore.empty(self.dim, factory)
        for start in range(0, len(ids), BATCH):
            out.add(ids[start:start + BATCH], self.get(ids[start:start + BATCH]))
        return out

    def to_bytes(self) -> bytes:
        """A FAISS Flat index of the vectors: what an export bundle carries, from either kind of store."""
        return self.rebuilt("Flat").to_bytes()

    def stage(self, con, directory: Path, old: Optional[dict], ids: Sequence[int], removed: Sequence[int],
              full: bool) -> tuple[dict, dict]:
        """Before the SQLite commit, inside its write transaction: clear rows of saves that never
        committed and of removals the last save recorded, then upsert the new vectors (ids at or
        above the committed next_id: hidden until the commit). Returns (storage settings, {id: row})."""
        directory = Path(directory)
        if self.directory is None:
            self.directory = directory
        elif self.directory.resolve() != directory.resolve():  # saved to another folder: its own database
            self._move(directory, new_collection=self.uri != LITE_FILE)  # (or collection), every vector new there
        row = con.execute("SELECT value FROM settings WHERE key = 'next_id'").fetchone()
        committed_next = int(json.loads(row[0])) if row and old is not None else 0
        if not self._call("has_collection"):
            self._create()
        # Collections a reindex replaced are dropped one save later: readers of the generation
        # before (another process) have moved to the new collection by then, not mid-search.
        self._due = [c for c in collections((old or {}).get("retiring")) if c in self.retiring]
        if self.uri == LITE_FILE:  # the folder's own database: a collection no setting names is a dead save's
            with contextlib.suppress(Exception):  # housekeeping: a later save tries again
                for name in set(self.client.list_collections(timeout=CALL_TIMEOUT)) - {self.collection, *self.retiring}:
                    self.client.drop_collection(collection_name=name, timeout=CALL_TIMEOUT)
        if old is not None and old.get("backend") == "milvus" and old.get("deleting"):
            self._call("delete", ids=[int(i) for i in old["deleting"]])
        self._call("delete", filter=f"id >= {committed_next}")
        new = [int(i) for i in self._pending]
        for start in range(0, len(new), BATCH):
            self._call("upsert", data=[{"id": i, FIELD: self._pending[i].tolist()} for i in new[start:start + BATCH]])
        if self.uri == LITE_FILE and new:
            self._call("flush")  # Milvus Lite's own log is not synced to disk; a flush is, before SQLite commits
        self._staged = sorted(self._removed | (set(map(int, removed)) & self._ids))
        self._st = {"backend": "milvus", "uri": self.uri, "collection": self.collection, "dim": self.dim,
                    "factory": self.factory, "index": index_params(self.factory)[0], "metric": "IP",
                    "deleting": self._staged, "retiring": list(self.retiring)}
        return self._st, {int(i): int(i) for i in ids}

    def committed(self, con, next_id: int) -> None:
        """After the SQLite commit: delete the removed rows and drop the collections a reindex
        replaced a save ago, then clear their record unless another save committed since (a
        failure leaves them recorded, hidden, retried by the next save)."""
        self._ids = (self._ids - set(self._staged)) | set(self._pending)
        self._next_id, self._hidden = int(next_id), set(self._staged)
        self._pending, self._removed, done = {}, set(), dict(self._st)
        with contextlib.suppress(GalleryError):
            if self._staged:
                self._call("delete", ids=self._staged)
                if self.uri == LITE_FILE:
                    self._call("flush")  # the delete reaches the disk before its record is cleared
                done["deleting"] = []
            for name in self._due:
                with contextlib.suppress(Exception):
                    self.client.drop_collection(collection_name=name, timeout=CALL_TIMEOUT)
                    done["retiring"] = [c for c in done["retiring"] if c != name]
        if done != self._st:
            with contextlib.suppress(sqlite3.Error):
                con.execute("UPDATE settings SET value = ? WHERE key = 'storage' AND value = ?",
                            (json.dumps(done, ensure_ascii=False), json.dumps(self._st, ensure_ascii=False)))
                self._hidden = set(done["deleting"])
                self.retiring = done["retiring"]

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        kind, build = index_params(self.factory)
        params.add_index(field_name=FIELD, index_type=kind, metric_type="IP", params=build)
        self._call("create_collection", schema=schema, index_params=params, consistency_level="Strong")

    def _move(self, directory: Path, new_collection: bool = False) -> None:
        """Point the store at another gallery folder (or a new collection), every vector pending there."""
        keep = {int(i): v for i, v in zip(self.ids(), self.get(self.ids()))} if self._ids else dict(self._pending)
        self.directory, self._client, self._pending, self.retiring = directory, None, keep, []  # never another folder's
        self._ids, self._removed, self._hidden, self._next_id = set(), set(), set(), 0
        if new_collection:
            self.collection = fresh_collection(False)
