"""Vector stores: ids -> unit vectors, searched by inner product (cosine on unit vectors).

The gallery talks to a store only through `VectorStore`; `FlatStore` is the FAISS one: the index
a FAISS factory string names ("Flat": exact; "HNSW32": approximate, far faster on large galleries,
both in an `IndexIDMap2`; "IVF4096,Flat": approximate, its lists trained on the gallery, keeping
the ids itself), of which the gallery's checkpoint (index.checkpoint) keeps what is slow to build
again: the graph or the lists, never the vectors, which the vector file has. Another backend
implements the same few methods and the gallery and pipeline are unchanged.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import math
import re

import faiss
import numpy as np

from .errors import GalleryError, shown


class VectorStore(Protocol):
    dim: int
    factory: str  # how it is indexed, as a FAISS factory string

    def __len__(self) -> int: ...

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, ids: Sequence[int]) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k), best first; id -1 where fewer than k vectors exist. A store
        whose type leaves_out() names also takes exclude=ids (none of them answered)."""
        ...

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ids, (len(ids), dim)."""
        ...

    def to_bytes(self) -> bytes: ...


# Index types whose storage gives every vector back exactly: class means, the gallery's own
# calibration and undo read them. (IVF-PQ, whose codes would not, reads them from the vector
# file instead: index.quantised.)
FACTORIES = re.compile(r"^(Flat|HNSW(\d+)(,Flat)?|IVF(\d+),Flat)$", re.IGNORECASE)  # flat is Flat
HNSW_EF_SEARCH = 64  # recall@1 by label 0.995 on 100k clustered vectors at 18x Flat's speed (issue #18)
# Lists searched per query by an IVF index. At 1M synthetic references with IVF4096 (benchmarks/
# million.py, docs/million.json): 32 gave recall@1 by label 0.985 in 4.6 ms a query, 16 gave 0.93.
IVF_NPROBE = 32
# k-means for the lists: 40 vectors a list, 10 rounds (FAISS's 25 cost 2.5x for a coarse quantizer)
IVF_TRAIN_PER_LIST, IVF_TRAIN_ITERATIONS = 40, 10
IVF_MIN_PER_LIST = 39  # FAISS's own floor for k-means (it warns below it)


def deep_costs(factory: str) -> bool:
    """Whether asking an index of this type for more results costs it more work: HNSW explores at
    least as many candidates as it is asked for, IVF-PQ re-scores four times as many on exact
    vectors. Flat and IVF,Flat read the same vectors whatever is asked."""
    return factory.startswith("HNSW") or ",PQ" in factory


def leaves_out(factory: str) -> bool:
    """Whether a store of this type takes `exclude` (ids left out of a search) at no extra cost: an
    IVF-PQ index skips them as it scans its lists, and re-scores only what is left. (HNSW's graph
    walk spends its candidates on left-out neighbours and comes back short: 28-55% of 40 results
    missing behind 3,000 near-copies; Flat and IVF,Flat answer in one pass anyway.)"""
    return ",PQ" in factory


def check_factory(factory: str) -> str:
    """The factory string, or GalleryError naming the ones a gallery can use."""
    m = FACTORIES.match(str(factory).strip())
    if not m or (m.group(2) and not 4 <= int(m.group(2)) <= 128) or (m.group(4) and not 1 <= int(m.group(4)) <= 65536):
        raise GalleryError(f"index {shown(factory)}: not one a gallery can use; valid: Flat (exact), HNSWn with n in "
                           "4..128 such as HNSW32 (approximate, fast on large galleries), IVFn,Flat with n lists in "
                           "1..65536 such as IVF1024,Flat (approximate, quick to build), IVFn,PQm such as "
                           "IVF4096,PQ64 (codes in memory, exact vectors read from disk), or auto")
    return f"HNSW{int(m.group(2))}" if m.group(2) else f"IVF{int(m.group(4))},Flat" if m.group(4) else "Flat"


def check_lists(factory: str, n: int) -> None:
    """GalleryError when n references are too few to train an IVF index's lists (k-means needs 39 a list)."""
    nlist = int(FACTORIES.match(factory).group(4) or 0)
    if n < IVF_MIN_PER_LIST * nlist:
        raise GalleryError(f"index {factory}: {n} references cannot train {nlist} list{'s' if nlist > 1 else ''}; an "
                           f"IVF index needs at least {IVF_MIN_PER_LIST} references a list ({IVF_MIN_PER_LIST * nlist} "
                           f"here); use {'fewer lists, ' if nlist > 1 else ''}Flat or HNSW32")


class FlatStore:
    """Inner-product search in FAISS over the index `factory` names; ids are the gallery's reference ids."""

    kind = "faiss-ip"

    def __init__(self, index: faiss.Index) -> None:
        self._index = index
        self.dim = int(index.d)
        # An IVF index keeps the gallery's ids itself (and removes by them in place); the others
        # sit in an IDMap2, since Flat and HNSW number their vectors 0..n-1.
        self._ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexIDMap2) else None
        if self._ivf is not None and self._ivf.direct_map.type == faiss.DirectMap.NoMap:  # one written elsewhere (a bundle)
            self._ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # as empty() makes it: vectors read back by id
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        self.factory = (f"IVF{self._ivf.nlist},Flat" if self._ivf is not None
                        else f"HNSW{inner.hnsw.nb_neighbors(1)}" if hasattr(inner, "hnsw") else "Flat")

    @classmethod
    def empty(cls, dim: int, factory: str = "Flat") -> "FlatStore":
        """A store with nothing in it; an IVF one untrained (rebuilt() trains it on the vectors it gets)."""
        factory = check_factory(factory)
        if factory.startswith("IVF"):
            index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(index)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # get() and remove() by the gallery's ids
            ivf.nprobe = min(IVF_NPROBE, ivf.nlist)
            return cls(index)
        index = faiss.index_factory(int(dim), f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
        if factory.startswith("HNSW"):
            faiss.ParameterSpace().set_index_parameter(index, "efSearch", HNSW_EF_SEARCH)
        return cls(index)

    @classmethod
    def filled(cls, dim: int, ids: np.ndarray, blocks) -> "FlatStore":
        """An exact store of len(ids) vectors whose rows `blocks` (arrays, in the order of ids)
        gives, written straight into the index's memory: opening holds the vectors once, not
        again in a copy (adding piece by piece grew FAISS's buffer by doubling: 2.6x the vectors)."""
        index = faiss.index_factory(int(dim), "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
        flat, n = faiss.downcast_index(index.index), len(ids)
        flat.codes.resize(n * dim * 4)
        view = faiss.rev_swig_ptr(flat.codes.data(), n * dim * 4).view(np.float32).reshape(n, dim) if n else None
        at = 0
        for block in blocks:
            view[at:at + len(block)] = block
            at += len(block)
        if at != n:
            raise ValueError(f"{at} vectors for {n} ids")
        flat.ntotal = index.ntotal = n
        faiss.copy_array_to_vector(np.ascontiguousarray(ids, np.int64), index.id_map)
        index.construct_rev_map()
        return cls(index)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "FlatStore":
        """Raises ValueError (with FAISS's reason) for bytes that are not a FAISS index."""
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable") from None
        return cls(index)

    @classmethod
    def read(cls, f) -> "FlatStore":
        """From an open binary file, in pieces (no whole copy in memory); ValueError when unreadable."""
        try:
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except RuntimeError as exc:
            raise ValueError(str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable") from None
        return cls(index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    # What a checkpoint (index.checkpoint) writes and rebuilds: the FAISS index, and its IVF part if any.
    faiss_index = property(lambda self: self._index)
    ivf = property(lambda self: self._ivf)

    @property
    def removes_in_place(self) -> bool:
        """Whether remove() takes vectors out without building the index again (HNSW cannot)."""
        return self.factory == "Flat" or self._ivf is not None

    def clone(self) -> "FlatStore":
        return FlatStore(faiss.clone_index(self._index))

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64) if self._ivf is None else ivf_ids(self._ivf)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        if not self._index.is_trained:
            raise GalleryError(f"a {self.factory} index is trained by reindex on the gallery's vectors; "
                               "this one is empty and untrained")
        self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        if self.removes_in_place:
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
            return
        # HNSW cannot remove: the graph is built again from the vectors that stay (slow on large galleries).
        gone = set(int(i) for i in ids)
        keep = [int(i) for i in self.ids() if int(i) not in gone]
        self._index = self.rebuilt(self.factory, keep)._index

    def rebuilt(self, factory: str, ids: Sequence[int] | None = None) -> "FlatStore":
        """A new store of the given index type holding the same vectors (or those of `ids`)."""
        ids = [int(i) for i in (self.ids() if ids is None else ids)]
        out = FlatStore.empty(self.dim, factory)
        if out._ivf is not None:  # lists trained afresh on the vectors it will hold
            # a seeded sample of 40 a list (FAISS asks for 39) keeps k-means short
            sample = np.random.default_rng(0).permutation(len(ids))[:IVF_TRAIN_PER_LIST * out._ivf.nlist]
            out.train(self.get([ids[i] for i in np.sort(sample)]))
        for start in range(0, len(ids), 65536):  # in pieces: no second whole copy of the vectors
            out.add(ids[start:start + 65536], self.get(ids[start:start + 65536]))
        return out

    def train(self, vectors: np.ndarray) -> None:
        """An IVF index's lists, by spherical k-means on (a sample of) the vectors it will hold."""
        check_lists(self.factory, len(vectors))
        self._ivf.cp.niter = IVF_TRAIN_ITERATIONS
        self._ivf.cp.spherical = True  # unit vectors searched by inner product: unit centroids
        self._index.train(np.ascontiguousarray(vectors, np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(queries, np.float32), int(k))

    def get(self, ids: Sequence[int]) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._index.reconstruct_batch(np.asarray(ids, np.int64))

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()


def ivf_ids(ivf) -> np.ndarray:
    """The ids an IVF index holds, list by list."""
    lists = ivf.invlists
    return np.concatenate([np.zeros(0, np.int64)] + [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                                                     for i in range(ivf.nlist) if lists.list_size(i)])


def as_vectors(vectors: np.ndarray, dim: int, where: object = "", enrolled: bool = False, fused: bool = True) -> np.ndarray:
    """vectors as a contiguous float32 (N, dim) array; GalleryError for any other shape or a NaN, or a
    length no such vector has: zero for a query (its query form may be longer than 1: index.pipeline's
    query()); for a reference (`enrolled`), zero or over 1, and in a gallery that is not fused (less
    than 1 is a hand vector without landmarks) any length but 1."""
    emb = np.asarray(vectors)
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise GalleryError(f"vectors of shape {emb.shape} and dtype {emb.dtype}: expected an (N, {dim}) float array")
    if emb.shape[1] != dim:
        raise GalleryError(f"embeddings have dim {emb.shape[1]}, gallery {where or '(unsaved)'} needs {dim}")
    with np.errstate(over="ignore"):  # cast first: a float64 past float32's range becomes inf, refused below
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        # A query's squared length: a NaN or an infinity in the query makes it one too, and one well
        # clear of the shortest a query may have (1e-3) settles the query. Only otherwise are the
        # values looked at one by one, as before (a search's fewest steps: the same answer).
        sums = None if enrolled else np.add.reduce(emb * emb, axis=1).tolist()
    if sums and min(sums) >= 4e-6 and sum(sums) < math.inf:
        return emb
    if not np.isfinite(emb).all():
        raise GalleryError("embeddings contain NaN or infinite values (or values too large for float32)")
    bad = wrong_lengths(emb, exact=not fused) if enrolled else np.flatnonzero(np.linalg.norm(emb, axis=1) < 1e-3)
    if bad.size:
        rule = ("a query has a direction" if not enrolled else "references are embeddings of length 1"
                + (" (less only for a fused hand vector without landmarks)" if fused else ""))
        raise GalleryError(f"vector {bad[0]}: length {np.linalg.norm(emb[bad[0]]):.4g}; {rule}: normalise it")
    return emb


def wrong_lengths(rows: np.ndarray, exact: bool = False) -> np.ndarray:
    """The rows a reference cannot be: zero, or longer than 1 (the rule Gallery.enroll and bundles hold
    to); exact: any length but 1."""
    n = np.linalg.norm(rows, axis=1) if len(rows) else np.zeros(0)
    return np.flatnonzero((n > 1.001) | (n < (0.999 if exact else 1e-3)))


def stored_form(vectors: np.ndarray, dim: int, where: object, fused: bool) -> np.ndarray:
    """Query vectors a caller made in the form a gallery stores (Pipeline.search), held to its
    references' rule: a longer one would lift every score past what a true match reaches."""
    emb = as_vectors(vectors, dim, where)
    bad = wrong_lengths(emb, exact=not fused)
    if bad.size:
        raise GalleryError(f"query vector {bad[0]}: length {np.linalg.norm(emb[bad[0]]):.4g}; queries are embeddings of "
                           f"length 1{' (less only for a fused hand vector without landmarks)' if fused else ''}: normalise it")
    return emb
