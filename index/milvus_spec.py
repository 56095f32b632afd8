"""What names a vector store (`--store`) and how a Milvus collection is indexed: the parts of
index.milvus that need neither pymilvus nor a connection."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import uuid
from pathlib import Path

from .errors import GalleryError, StoreError
from .vectors import FACTORIES, HNSW_EF_SEARCH, IVF_NPROBE, check_factory

LITE, LITE_FILE, FIELD = "milvus-lite", "milvus.db", "vector"
CHOICES = "faiss, milvus-lite or milvus://HOST:PORT"
SERVER = re.compile(r"^milvus://([A-Za-z0-9.\-_]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$")
HNSW_EF_CONSTRUCTION = 40  # FAISS's default, which the FAISS galleries' HNSW indexes are built with
# A Milvus server reads at "Bounded" staleness unless told otherwise: a search or count right after
# a save could miss what it wrote or deleted (seen on Milvus 2.3 standalone: a count after removals
# still found the removed rows, and the gallery was called damaged). Milvus Lite is always strong.
READS = ("search", "query", "get")
# uri -> (MilvusClient, an open handle on a Milvus Lite database's folder, to tell when it is deleted):
# one per database per process (Milvus Lite serves one process)
_clients: dict = {}
_CONNECTING = threading.Lock()


def check_store(spec: object) -> str:
    """"faiss", "milvus-lite" or "milvus://HOST:PORT"; GalleryError naming the valid ones otherwise."""
    s = str(spec).strip()
    m = SERVER.match(s)
    if s.lower() in ("faiss", LITE) or (m and 0 < int(m.group(2)) < 65536):
        return s.lower() if not m else s
    raise GalleryError(f"--store {spec!r}: not a vector store; valid: {CHOICES}")


def store_name(store) -> str:
    """The --store value that made a gallery's store."""
    return getattr(store, "spec", "faiss")


def errors(where: str, exc: BaseException) -> GalleryError:
    """One line: where, and the first line of what pymilvus said (a store's fault, not the request's)."""
    first = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
    return StoreError(f"{where}: {first}")


def index_params(factory: str) -> tuple[str, dict]:
    """Milvus's index type and build parameters for a FAISS factory string a gallery can use:
    HNSWn -> HNSW (M n), IVFn,Flat -> IVF_FLAT (n lists), Flat -> FLAT (exact)."""
    m = FACTORIES.match(check_factory(factory))
    if m.group(2):
        return "HNSW", {"M": int(m.group(2)), "efConstruction": HNSW_EF_CONSTRUCTION}
    if m.group(4):
        return "IVF_FLAT", {"nlist": int(m.group(4))}
    return "FLAT", {}


def search_params(factory: str, limit: int) -> dict:
    """What a search asks of the index: as the FAISS galleries search theirs (HNSW's ef at least
    the number of results, as Milvus requires)."""
    kind, build = index_params(factory)
    extra = {"HNSW": {"ef": max(HNSW_EF_SEARCH, int(limit))},
             "IVF_FLAT": {"nprobe": min(IVF_NPROBE, build.get("nlist", 1))}}.get(kind, {})
    return {"metric_type": "IP", "params": extra}


def quiet() -> None:
    """pymilvus's and Milvus Lite's own log lines stay out of the output: failures are reported in one line."""
    for name in ("milvus_lite", "pymilvus"):
        log = logging.getLogger(name)
        log.addHandler(logging.NullHandler())
        log.propagate = False
        log.setLevel(logging.CRITICAL + 1)


def collections(value) -> list[str]:
    """A storage setting's "retiring" as a list (it was null or one name when first written)."""
    return [] if not value else [value] if isinstance(value, str) else [str(v) for v in value]


def fresh_collection(lite: bool) -> str:
    """A fresh collection name: in a folder's own Milvus Lite database, or unique on a shared server."""
    return f"{'gallery' if lite else 'byakugan'}_{uuid.uuid4().hex}"


def check_lite(directory: Path, collection: str) -> None:
    """Before Milvus Lite opens a database a save committed to: a collection whose manifest is gone or
    unreadable would be opened from its previous manifest, and the files only the lost one named
    deleted; a missing database would be made anew, empty. Refused in one line, nothing touched."""
    where = f"gallery {directory}: Milvus Lite database {LITE_FILE}"
    if not (directory / LITE_FILE).is_dir():
        raise GalleryError(f"{where} is missing or not a folder (damaged); nothing was changed")
    manifest = directory / LITE_FILE / "collections" / collection / "manifest.json"
    try:  # Milvus Lite also falls back when the manifest is not an object whose partitions are one
        payload = json.loads(manifest.read_bytes())
        if not isinstance(payload, dict) or not isinstance(payload.get("partitions", {}), dict):
            raise ValueError(payload)
    except (OSError, ValueError, RecursionError):
        raise GalleryError(f"{where}: collection {collection}'s manifest.json is missing or unreadable (damaged); "
                           "nothing was changed") from None


def connect(key: str, lite: bool, timeout: float, where: str):
    """The process's pymilvus client of a database (imported and connected on first use): a Milvus
    Lite file's path, or a server's address. One whose Milvus Lite folder was deleted or moved away
    since is let go: its server holds files that are no longer there."""
    with _CONNECTING:  # the page's sessions and the server's searches run in threads
        if key in _clients and _clients[key][1] is not None and not _same_folder(_clients[key][1], key):
            from milvus_lite.server_manager import server_manager_instance

            _let_go(*_clients.pop(key))
            server_manager_instance.release_server(key)
        if key not in _clients:
            quiet()
            try:
                from pymilvus import MilvusClient

                quiet()  # pymilvus gives its logger a handler of its own when imported
                client = MilvusClient(uri=key, timeout=timeout)
            except Exception as exc:
                raise errors(f"{where}: could not connect", exc) from None
            try:
                _clients[key] = (client, os.open(key, os.O_RDONLY) if lite else None)
            except OSError as exc:
                _let_go(client, None)
                raise errors(f"{where}: could not connect", exc) from None
        return _clients[key][0]


def _same_folder(handle: int, path: str) -> bool:
    """Whether the folder open as `handle` is still the one at `path` (not deleted, moved or replaced)."""
    try:
        held, now = os.fstat(handle), os.stat(path)
    except OSError:
        return False
    return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _let_go(client, handle) -> None:
    if handle is not None:
        os.close(handle)
    with contextlib.suppress(Exception):
        client.close()
