"""Checkpoints of approximate indexes that hold no vectors: the gallery's vector file has them.

A gallery folder keeps beside its vector file what would be slow to build again (db.py writes it
every 1,000 added rows and after a change of index type): for IVF the trained centroids and each
reference's list, for HNSW the graph and the order of its vectors. Writing the vectors again cost
39 s and 5.6 GB at a million references (IVF) and kept an HNSW gallery's vectors twice on disk.
Opening reads the checkpoint (`read`), then `fill` puts every row of the vector file back where
the checkpoint says: into the list it was in (a row in another list would change which queries
find it), or at its place in the graph's storage. Each structure is allocated once, at its size.

A checkpoint whose checksum matches can still be impossible (a bug, a hand edit): lists outside
the index, an id twice, graph links to vectors that do not exist. FAISS would crash or write past
its buffers on those, so they are refused here with a ValueError naming what is wrong.
"""

from __future__ import annotations

import faiss
import numpy as np

from .quantised import PQ_FACTORY, PQStore
from .vectors import FlatStore, HNSW_EF_SEARCH

IVF = b"byakugan IVF lists 1\n"
HNSW = b"byakugan HNSW graph 1\n"
CODES = b"byakugan IVF-PQ codes 1\n"  # an IVF-PQ index whole: its codes are not the vectors


def holds_vectors(head: bytes) -> bool:
    """Whether a checkpoint file starting with `head` (at least 32 bytes) is a whole FAISS index."""
    return not head.startswith((IVF, HNSW, CODES))


def _rows(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, "<i8").tobytes()


def write(store: FlatStore) -> bytes:
    """The checkpoint of an HNSW or IVF store (read back by `read`); a Flat store's whole index."""
    index, ivf = store.faiss_index, store.ivf
    if PQ_FACTORY.match(store.factory):
        return CODES + faiss.serialize_index(index).tobytes()
    if ivf is not None:
        quantizer = faiss.serialize_index(ivf.quantizer).tobytes()
        lists = ivf.invlists
        pairs = [np.zeros((0, 2), np.int64)] + [
            np.stack([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).astype(np.int64),
                      np.full(lists.list_size(i), i, np.int64)], axis=1)
            for i in range(ivf.nlist) if lists.list_size(i)]
        return b"".join([IVF, len(quantizer).to_bytes(8, "little"), quantizer, _rows(np.concatenate(pairs))])
    if not store.factory.startswith("HNSW"):
        return store.to_bytes()
    writer = faiss.VectorIOWriter()
    faiss.write_index(faiss.downcast_index(index.index), writer, faiss.IO_FLAG_SKIP_STORAGE)
    graph = faiss.vector_to_array(writer.data).tobytes()
    return b"".join([HNSW, len(graph).to_bytes(8, "little"), graph, _rows(faiss.vector_to_array(index.id_map))])


def _split(blob: bytes, magic: bytes, what: str) -> tuple[bytes, np.ndarray]:
    at = len(magic) + 8
    size = int.from_bytes(blob[at - 8:at], "little")
    if at + size > len(blob) or (len(blob) - at - size) % 8:
        raise ValueError(f"{what} checkpoint of a wrong length")
    return blob[at:at + size], np.frombuffer(blob, "<i8", offset=at + size).astype(np.int64)


def _unique(pairs: np.ndarray, what: str) -> np.ndarray:
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    if len(pairs) > 1 and (pairs[1:, 0] == pairs[:-1, 0]).any():
        raise ValueError(f"{what} checkpoint listing id {int(pairs[1:, 0][pairs[1:, 0] == pairs[:-1, 0]][0])} twice")
    return pairs


def read(blob: bytes, factory: str, dim: int) -> tuple[FlatStore, np.ndarray | None]:
    """(store, slots): a store of `factory` whose vectors `fill` gives it, and (id, slot) pairs
    sorted by id (slot: the IVF list, or the place in HNSW's storage); or a whole index and None.
    ValueError when the bytes are none of these or do not fit a `factory` index of `dim`."""
    if blob.startswith(HNSW):
        return _read_hnsw(blob, factory, dim)
    if blob.startswith(CODES):
        return _read_codes(blob, factory, dim), None
    if not blob.startswith(IVF):
        return FlatStore.from_bytes(blob), None
    head, pairs = _split(blob, IVF, "IVF lists")
    if len(pairs) % 2:
        raise ValueError("IVF lists checkpoint of a wrong length")
    quantizer = FlatStore.from_bytes(head).faiss_index
    store = FlatStore.empty(dim, factory)
    ivf = store.ivf
    if ivf is None or quantizer.d != dim or quantizer.ntotal != ivf.nlist:
        raise ValueError(f"IVF lists checkpoint with {quantizer.ntotal} centroids of dimension {quantizer.d} "
                         f"for a {factory} index of dimension {dim}")
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    if not np.isfinite(centroids).all():
        raise ValueError("IVF lists checkpoint with centroids that are not numbers")
    ivf.quantizer.add(centroids)
    ivf.is_trained = store.faiss_index.is_trained = True
    pairs = _unique(pairs.reshape(-1, 2), "IVF lists")
    if len(pairs) and not (0 <= pairs[:, 1].min() and pairs[:, 1].max() < ivf.nlist):
        raise ValueError(f"IVF lists checkpoint naming a list outside 0..{ivf.nlist - 1}")
    return store, pairs


def _read_codes(blob: bytes, factory: str, dim: int) -> PQStore:
    try:
        index = faiss.deserialize_index(np.frombuffer(blob, np.uint8, offset=len(CODES)))
    except RuntimeError as exc:
        raise ValueError(str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable codes") from None
    if not isinstance(index, faiss.IndexIVFPQ) or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"IVF-PQ checkpoint of {type(index).__name__} of dimension {index.d} for a {factory} index "
                         f"of dimension {dim}")
    store = PQStore.ready(index)
    if store.factory != factory:
        raise ValueError(f"IVF-PQ checkpoint of {store.factory} for a {factory} index")
    ids = store.ids()
    _unique(np.stack([ids, np.zeros_like(ids)], axis=1), "IVF-PQ")  # an id twice: refused, as in IVF lists
    return store


def _read_hnsw(blob: bytes, factory: str, dim: int) -> tuple[FlatStore, np.ndarray]:
    graph, order = _split(blob, HNSW, "HNSW graph")
    _check_layout(graph)
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.frombuffer(graph, np.uint8), reader.data)
    try:
        inner = faiss.read_index(reader, faiss.IO_FLAG_SKIP_STORAGE)  # already of its own type
    except RuntimeError as exc:
        raise ValueError(str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable graph") from None
    if not isinstance(inner, faiss.IndexHNSWFlat) or inner.d != dim or inner.ntotal != len(order):
        raise ValueError(f"HNSW graph checkpoint of {type(inner).__name__} of dimension {inner.d} and "
                         f"{inner.ntotal} vectors for a {factory} index of dimension {dim} and {len(order)} ids")
    _check_graph(inner.hnsw, len(order))
    inner.ntotal = 0  # FAISS wraps only an empty index in an IDMap2; the count is put back below
    index = faiss.IndexIDMap2(inner)
    inner.this.disown()  # the IDMap2 owns and frees it
    index.own_fields = True
    inner.ntotal = index.ntotal = len(order)
    faiss.copy_array_to_vector(order, index.id_map)
    index.construct_rev_map()
    store = FlatStore(index)
    if store.factory != factory:
        raise ValueError(f"HNSW graph checkpoint of {store.factory} for a {factory} index")
    faiss.ParameterSpace().set_index_parameter(index, "efSearch", HNSW_EF_SEARCH)
    slots = _unique(np.stack([order, np.arange(len(order), dtype=np.int64)], axis=1), "HNSW graph")
    return store, slots


def _check_layout(graph: bytes) -> None:
    """FAISS's IndexHNSWFlat layout (1.9 to 1.15): "IHNf", the index header (dimension, count, two
    unused words, trained, metric), then the graph's arrays, each its length and its items. A length
    that does not fit in the bytes left would have FAISS allocate it anyway (one flipped byte asked
    for 20 GB): refused here before FAISS reads anything. Inner product only: the gallery's metric."""
    if graph[:4] != b"IHNf" or len(graph) < 37:
        raise ValueError("HNSW graph checkpoint that is not an HNSW index")
    if int.from_bytes(graph[33:37], "little", signed=True) != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("HNSW graph checkpoint of another metric than inner product")
    at = 37
    for item in (8, 4, 4, 8, 4):  # assign_probas, cum_nneighbor_per_level, levels, offsets, neighbors
        size = int.from_bytes(graph[at:at + 8], "little")
        at += 8
        if at > len(graph) or size * item > len(graph) - at:
            raise ValueError("HNSW graph checkpoint with an array longer than its bytes")
        at += size * item


def _check_graph(hnsw, n: int) -> None:
    """Links, levels and an entry point a search can follow without leaving the n vectors (FAISS
    checks some of this itself, only in its later versions; a bad one crashes the process)."""
    def view(vec, dtype):
        return faiss.rev_swig_ptr(vec.data(), vec.size()).view(dtype) if vec.size() else np.zeros(0, dtype)

    offsets, links, levels = view(hnsw.offsets, np.uint64), view(hnsw.neighbors, np.int32), view(hnsw.levels, np.int32)
    cum = view(hnsw.cum_nneighbor_per_level, np.int32)
    top = hnsw.max_level + 1
    ok = (len(levels) == n and len(offsets) == n + 1 and (n == 0 or int(offsets[-1]) == len(links))
          and 0 <= top < len(cum) and cum[0] == 0 and bool((np.diff(cum) >= 0).all())
          and bool(((links >= -1) & (links < n)).all()) and bool(((levels >= 1) & (levels <= top)).all())
          and (hnsw.entry_point == -1) == (n == 0))
    ok = ok and (n == 0 or (levels[hnsw.entry_point] == top == levels.max()
                            and bool((np.diff(offsets.astype(np.int64)) == cum[levels]).all())))
    if not ok:
        raise ValueError(f"HNSW graph checkpoint whose links or levels do not fit its {n} vectors")


def fill(store: FlatStore, slots: np.ndarray, live: np.ndarray, blocks) -> None:
    """Give a store from `read` its vectors: `blocks` of (ids, vectors), each id that `slots` names
    to its slot, ids it lacks (added after the checkpoint) added afterwards. An IVF checkpoint
    names ids removed since (dropped here: `live` lists the gallery's ids); an HNSW one is written
    again by every removal, so each id it names must come. ValueError when blocks and slots disagree."""
    if store.ivf is not None:
        _fill_lists(store, slots[np.isin(slots[:, 0], live)], blocks)
    else:
        _fill_storage(store, slots, len(live), blocks)


def _known(slots: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    at = np.minimum(np.searchsorted(slots[:, 0], ids), max(0, len(slots) - 1))
    return at, (slots[at, 0] == ids) if len(slots) else np.zeros(len(ids), bool)


def _blocks(blocks, dim: int):
    for ids, x in blocks:
        ids, x = np.ascontiguousarray(ids, np.int64), np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != dim or len(x) != len(ids):
            raise ValueError(f"vectors of shape {x.shape} for {len(ids)} ids of dimension {dim}")
        yield ids, x


def _fill_storage(store: FlatStore, slots: np.ndarray, total: int, blocks) -> None:
    hnsw, n, dim = faiss.downcast_index(store.faiss_index.index), len(slots), store.dim
    flat = faiss.IndexFlat(dim, hnsw.metric_type)
    # Room for the rows added after the checkpoint too: adding them to a buffer sized for the
    # checkpoint's would have it grow by doubling, copying every vector (2.1x them at a million).
    flat.codes.resize(max(n, total) * dim * 4)
    view = faiss.rev_swig_ptr(flat.codes.data(), n * dim * 4).view(np.float32).reshape(n, dim) if n else None
    seen, rest = np.zeros(n, bool), []
    for ids, x in _blocks(blocks, dim):
        at, known = _known(slots, ids)
        if not known.all():
            rest.append((ids[~known], x[~known]))
        places = slots[at[known], 1]
        if seen[places].any():
            raise ValueError(f"id {int(ids[known][seen[places]][0])} given twice")
        if len(places):
            view[places], seen[places] = x if len(places) == len(x) else x[known], True
    if not seen.all():
        raise ValueError(f"{int(n - seen.sum())} vectors the checkpoint lists are missing")
    flat.ntotal = n
    hnsw.storage = flat
    flat.this.disown()  # the HNSW index owns and frees it
    hnsw.own_fields = True
    for ids, x in rest:
        store.add(ids, x)
    if flat.codes.size() != flat.ntotal * dim * 4:  # fewer rows came than the gallery lists (it checks the count)
        flat.codes.resize(flat.ntotal * dim * 4)


def _fill_lists(store: FlatStore, pairs: np.ndarray, blocks) -> None:
    # Added piece by piece, FAISS grows each list by doubling: 1.75x the vectors at a million.
    ivf = store.ivf
    lists = ivf.invlists
    counts = np.bincount(pairs[:, 1], minlength=ivf.nlist) if len(pairs) else np.zeros(ivf.nlist, np.int64)
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)  # built once from the full lists below
    for i in np.nonzero(counts)[0]:
        lists.resize(int(i), int(counts[i]))
    filled, rest = np.zeros(ivf.nlist, np.int64), []
    for ids, x in _blocks(blocks, store.dim):
        at, known = _known(pairs, ids)
        if not known.all():
            rest.append((ids[~known], x[~known]))
            if not known.any():  # a block of rows added after the checkpoint only
                continue
        take = np.flatnonzero(known)
        take = take[np.argsort(pairs[at[take], 1], kind="stable")]
        k_ids, k_x, k_lists = ids[take], x[take], pairs[at[take], 1]
        bounds = np.flatnonzero(np.diff(k_lists)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(k_lists)]):
            i, n = int(k_lists[lo]), int(hi - lo)
            if filled[i] + n > counts[i]:
                raise ValueError(f"list {i} holds more vectors than the checkpoint gives it")
            lists.update_entries(i, int(filled[i]), n, faiss.swig_ptr(np.ascontiguousarray(k_ids[lo:hi])),
                                 faiss.swig_ptr(np.ascontiguousarray(k_x[lo:hi]).view(np.uint8)))
            filled[i] += n
    if (filled != counts).any():
        raise ValueError(f"{int((counts - filled).sum())} vectors the checkpoint lists are missing")
    ivf.ntotal = store.faiss_index.ntotal = int(counts.sum())
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # get() and remove() by the gallery's ids
    for ids, x in rest:
        store.add(ids, x)
