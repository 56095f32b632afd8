"""A quantised index (`IVFn,PQm`): the vectors held in memory as m-byte codes, the exact ones read
from the gallery's vector file when they are needed.

FAISS's IVF-PQ answers from the codes, approximately; here each query's best `RERANK` x k
candidates (at least `MIN_CANDIDATES`; at most `MAX_CANDIDATES`, or k when k is more) are scored
again on their exact vectors, read through a
memory map of the vector file, so scores are exact cosines and the ranking is what exact search
gives among the candidates. Class means, calibration, undo and export read exact vectors the same
way: the gallery's promise of its vectors back exactly holds. At a million references of
dimension 1408, PQ64 keeps 64 bytes a vector in memory (72 MB with the ids) where the vectors
are 5.6 GB; the operating system pages in the ones a query re-ranks.

Vectors added since the last save are held in memory until the save writes them to the vector
file and tells the store their rows (`saved`). A checkpoint of the index (codes, lists and ids:
index.checkpoint) is what opening reads; the rows added after it are encoded again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from .errors import GalleryError, shown
from .vectors import IVF_NPROBE, IVF_TRAIN_ITERATIONS, FlatStore, check_lists, ivf_ids

PQ_FACTORY = re.compile(r"^IVF(\d+),PQ(\d+)$", re.IGNORECASE)
RERANK, MIN_CANDIDATES = 4, 32
# A gallery asks for k x its largest class's size to be sure of k distinct labels (50 for 5 labels
# of 10 references): re-scoring 4x that many read 200 vectors a query, 0.42 ms of a 1.2 ms search at
# 100k. The labels' order is settled near the top; 64 keep recall@1 by label (benchmarks/million.py).
MAX_CANDIDATES = 64
PQ_MIN = 39 * 256  # k-means of each sub-quantiser's 256 codes needs 39 vectors a code (as IVF lists)
PQ_TRAIN = 20_000  # at least this many vectors (a seeded sample; 40 a list if more) train the lists and codes


def check_pq(factory: str, dim: int | None = None) -> str:
    """The IVFn,PQm factory, or GalleryError naming the rule it breaks (m must divide the dimension)."""
    m = PQ_FACTORY.match(str(factory).strip())
    if not m or not 1 <= int(m.group(1)) <= 65536 or not 1 <= int(m.group(2)) <= 256:
        raise GalleryError(f"index {shown(factory)}: a quantised index is IVFn,PQm with n lists in 1..65536 and m "
                           "bytes a vector in 1..256, such as IVF4096,PQ64")
    if dim is not None and dim % int(m.group(2)):
        raise GalleryError(f"index {factory}: {m.group(2)} bytes a vector must divide the dimension {dim}; "
                           f"for example PQ{next(b for b in (64, 32, 16, 8, 4, 2, 1) if dim % b == 0)}")
    return f"IVF{int(m.group(1))},PQ{int(m.group(2))}"


def check_size(factory: str, n: int) -> None:
    if n < PQ_MIN:
        raise GalleryError(f"index {factory}: {n} references cannot train its codes; a PQ index needs at least "
                           f"{PQ_MIN} (below that, Flat is exact and fast)")
    lists = f"IVF{PQ_FACTORY.match(factory).group(1)},Flat"  # the same lists to train
    try:
        check_lists(lists, n)
    except GalleryError as exc:  # named as asked for
        raise GalleryError(str(exc).replace(lists, factory, 1)) from None


def rerank_depth(k: int) -> int:
    """How many of the codes' best candidates a search for k is scored again on exact vectors."""
    return max(k, min(max(RERANK * k, MIN_CANDIDATES), MAX_CANDIDATES))


class PQStore:
    """IVF-PQ search with exact re-ranking; ids are the gallery's reference ids."""

    kind = "faiss-ip"
    removes_in_place = True

    def __init__(self, index: faiss.Index, path: Path | None = None, rows: np.ndarray | None = None) -> None:
        self._index = index
        self._ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # the IndexIVFPQ, with its pq
        self.dim, self.factory = int(index.d), f"IVF{self._ivf.nlist},PQ{self._ivf.pq.M}"
        self._pending: dict[int, np.ndarray] = {}  # added since the last save: not in the vector file yet
        self._ids, self._rows, self._map, self.path = np.zeros(0, np.int64), np.zeros(0, np.int64), None, None
        if path is not None:
            self.attach(path, rows)

    faiss_index = property(lambda self: self._index)
    ivf = property(lambda self: self._ivf)

    @classmethod
    def trained(cls, dim: int, factory: str, sample: np.ndarray) -> "PQStore":
        """An empty store whose lists and codes are learnt from `sample` (the vectors it will hold)."""
        index = faiss.index_factory(int(dim), check_pq(factory, dim), faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.niter, ivf.cp.spherical = IVF_TRAIN_ITERATIONS, True
        # FAISS's polysemous training only numbers each sub-quantiser's codes anew, for a Hamming
        # filter no search here uses (polysemous_ht 0): the same centroids and answers, and most of
        # the training time (IVF64,PQ8 on 10,000 vectors of 32: 17 s with it, 2.1 s without).
        ivf.do_polysemous_training = False
        index.train(np.ascontiguousarray(sample, np.float32))
        return cls.ready(index)

    @classmethod
    def ready(cls, index: faiss.Index) -> "PQStore":
        """A trained index (learnt or read), set up to search and remove by id."""
        ivf = faiss.extract_index_ivf(index)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove() by the gallery's ids
        ivf.nprobe = min(IVF_NPROBE, ivf.nlist)
        return cls(index)

    @classmethod
    def built(cls, source, factory: str, ids: Sequence[int] | None = None) -> "PQStore":
        """A store of `factory` holding the vectors of `source` (any store), read a piece at a time."""
        ids = np.asarray(source.ids() if ids is None else ids, np.int64)
        check_size(factory, len(ids))
        sample = np.random.default_rng(0).permutation(len(ids))[:max(PQ_TRAIN, 40 * int(PQ_FACTORY.match(factory).group(1)))]
        out = cls.trained(source.dim, factory, source.get(ids[np.sort(sample)]))
        # From another PQ store: the same vector file serves both, only its unsaved vectors are copied.
        shared = isinstance(source, PQStore)
        for start in range(0, len(ids), 65536):
            out.add(ids[start:start + 65536], source.get(ids[start:start + 65536]), pending=not shared)
        if shared:
            out._ids, out._rows, out._map, out.path = source._ids, source._rows, source._map, source.path
            wanted = set(ids.tolist())
            out._pending = {i: v for i, v in source._pending.items() if i in wanted}
        return out

    def attach(self, path: Path, rows: np.ndarray) -> None:
        """Read exact vectors from the vector file at `path`: rows is (row, id) pairs for every
        reference it holds; ids pending here that it names are pending no more."""
        order = np.argsort(rows[:, 1], kind="stable")
        self._ids, self._rows = rows[order, 1].copy(), rows[order, 0].copy()
        total = int(rows[:, 0].max()) + 1 if len(rows) else 0
        # A plain ndarray over the mapping: get() gathers a search's rows from it in one read.
        self._map = np.memmap(path, np.float32, "r", shape=(total, self.dim)).view(np.ndarray) if total else None
        self.path = Path(path)
        for i in self._ids[np.isin(self._ids, np.fromiter(self._pending, np.int64, len(self._pending)))]:
            del self._pending[int(i)]

    def saved(self, path: Path, rows: dict[int, int], full: bool) -> None:
        """A save wrote `rows` ({id: row}) to the vector file at `path` (all of them when full)."""
        new = np.array(sorted((r, i) for i, r in rows.items()), np.int64).reshape(-1, 2)
        if not full:
            live = np.isin(self._ids, self.ids())  # rows of references removed since: forgotten
            new = np.concatenate([np.stack([self._rows[live], self._ids[live]], 1), new])
        self.attach(path, new)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        return ivf_ids(self._ivf)

    def clone(self) -> "PQStore":
        out = PQStore(faiss.clone_index(self._index))
        out._ivf.nprobe = self._ivf.nprobe
        out._ids, out._rows, out._map, out.path = self._ids, self._rows, self._map, self.path
        out._pending = dict(self._pending)
        return out

    def add(self, ids: Sequence[int], vectors: np.ndarray, pending: bool = True) -> None:
        """pending=False: vectors the vector file already holds (rows this store reads)."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        self._index.add_with_ids(vectors, np.asarray(ids, np.int64))
        if pending:
            self._pending.update((int(i), v) for i, v in zip(ids, vectors.copy()))

    def remove(self, ids: Sequence[int]) -> None:
        ids = np.asarray(ids, np.int64)
        self._index.remove_ids(ids)
        for i in ids:
            self._pending.pop(int(i), None)
        keep = ~np.isin(self._ids, ids)  # a removed reference's vector is not given back, as FlatStore gives none
        self._ids, self._rows = self._ids[keep], self._rows[keep]

    def rebuilt(self, factory: str, ids: Sequence[int] | None = None):
        if PQ_FACTORY.match(factory):
            return PQStore.built(self, factory, ids)
        return FlatStore.rebuilt(self, factory, ids)  # reads only ids(), dim and get()

    def get(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        at = np.minimum(np.searchsorted(self._ids, ids), max(0, len(self._ids) - 1))
        on_file = (self._ids[at] == ids) if len(self._ids) else np.zeros(len(ids), bool)
        if 0 < len(ids) <= 256 and on_file.all():  # a search's candidates: one gather, nothing else
            # (np.take copies a row at a time, whole: 64 rows of 1408 in 36 us from cache, indexing 50)
            return np.take(self._map, self._rows[at], axis=0)
        out = np.empty((len(ids), self.dim), np.float32)
        if on_file.any():
            rows = self._rows[at[on_file]]
            order = np.argsort(rows)  # in file order: many rows are read front to back
            out[np.flatnonzero(on_file)[order]] = self._map[rows[order]]
        for j in np.flatnonzero(~on_file):
            try:
                out[j] = self._pending[int(ids[j])]
            except KeyError:
                raise GalleryError(f"reference {int(ids[j])}: not in the index") from None
        return out

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """exclude: ids none of the answers may be (the references of labels a search already has)."""
        queries = np.ascontiguousarray(queries, np.float32)
        params = keep = None
        if exclude is not None and len(exclude):
            # FAISS holds plain pointers: the selectors are kept in locals while the search runs.
            keep = [faiss.IDSelectorBatch(np.ascontiguousarray(exclude, np.int64))]
            keep.append(faiss.IDSelectorNot(keep[0]))
            params = faiss.SearchParametersIVF(sel=keep[1], nprobe=self._ivf.nprobe)
        # faiss.contrib.torch_utils, once anything imports it, replaces every index's search with one
        # that takes no params for the whole process; the numpy search it keeps as search_numpy does.
        search = getattr(self._index, "search_numpy", self._index.search)
        _, candidates = search(queries, rerank_depth(int(k)), params=params)
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        for q, row in enumerate(candidates):
            row = row[row >= 0]
            if len(row):
                s = self.get(row) @ queries[q]
                best = np.argsort(-s, kind="stable")[:k]
                scores[q, :len(best)], found[q, :len(best)] = s[best], row[best]
        return scores, found

    def to_bytes(self) -> bytes:
        """An exact (Flat) FAISS index of the same vectors: what a bundle ships."""
        return self.rebuilt("Flat").to_bytes()
