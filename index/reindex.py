"""Choosing a gallery's vector index (Gallery.reindex): a FAISS factory string or "auto", and the
recall of the result measured against exact search on the gallery's own references."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .errors import GalleryError
from .milvus_spec import fresh_collection
from .quantised import PQ_FACTORY, PQStore, check_pq
from .vectors import FlatStore, check_factory, check_lists

AUTO = "auto"
# "auto" is exact below AUTO_HNSW references: exact search at dimension 1408 took 2.7 ms a query at
# 10k and 44 ms at 100k on one core (benchmarks/scale.py); ~20 ms, near 50k, is where exact stops
# feeling instant. HNSW32 up to AUTO_IVF: 1.4 ms at 100k with recall@1 by label 0.993. Beyond, IVF
# with about AUTO_PER_LIST references a list, 32 of them searched: at a million HNSW32 fell to
# recall 0.515 at 2.5 ms (efSearch 64; 0.71 at 128, 4.7 ms; docs/million_hnsw.json), where
# IVF4096,Flat kept 0.985 at 4.4 ms (docs/million.json). Sizes between were not measured.
AUTO_HNSW, AUTO_IVF, AUTO_PER_LIST = 50_000, 100_000, 244


def check(factory: str) -> str:
    """factory, checked: a FAISS factory string a gallery can use, or auto."""
    if PQ_FACTORY.match(str(factory).strip()):
        return check_pq(factory)
    return AUTO if str(factory).strip().lower() == AUTO else check_factory(factory)


def rebuild(store, factory: str, n: int):
    """The store's vectors under the index type `factory` resolves to for n references: a FAISS
    store rebuilt in memory; a Milvus one (index.milvus) in a new collection, built by the next save."""
    chosen = resolve(factory, n)
    if PQ_FACTORY.match(chosen):
        if getattr(store, "backend", "faiss") == "milvus":
            raise GalleryError(f"index {chosen}: a Milvus gallery takes Flat, HNSWn or IVFn,Flat")
        return PQStore.built(store, check_pq(chosen, store.dim))
    if getattr(store, "backend", "faiss") != "milvus":
        return store.rebuilt(chosen)
    check_lists(chosen, n)  # as FAISS trains its lists (Milvus would train on too few, and warn)
    lite = store.spec == "milvus-lite"
    out = type(store)(store.directory, store.uri, fresh_collection(lite), store.dim, [], 0, [], chosen)
    ids = store.ids()
    for start in range(0, len(ids), 2048):  # every vector pending there: the save creates and fills it
        out.add(ids[start:start + 2048], store.get(ids[start:start + 2048]))
    out.retiring = store.retiring + ([store.collection] if store.saved else [])  # dropped after a save or two
    return out


def resolve(factory: str, n: int) -> str:
    """The index type a gallery of n references gets: auto is exact while small."""
    if check(factory) != AUTO:
        return check(factory)
    if n < AUTO_HNSW:
        return "Flat"
    if n <= AUTO_IVF:
        return "HNSW32"
    return f"IVF{min(65536, 2 ** round(math.log2(n / AUTO_PER_LIST)))},Flat"  # lists double as the gallery does: rebuilt then


def label_recall(store: FlatStore, labels: Mapping[int, str], sample: int = 1000, seed: int = 0) -> float:
    """recall@1 by label of `store` against exact search: sampled references, each searched with
    itself left out, agree on the label of their nearest other reference. 1.0 for a Flat store."""
    ids = store.ids()
    if getattr(store, "pending", False):  # a Milvus index is built when the gallery saves: measure it then
        return float("nan")
    if len(ids) < 2 or store.factory == "Flat":
        return 1.0
    rng = np.random.default_rng(seed)
    picked = rng.choice(ids, size=min(sample, len(ids)), replace=False)
    queries = store.get(picked)
    want = exact_top2(store, ids, queries)
    _, got = store.search(queries, 2)

    def nearest_other(row: np.ndarray, self_id: int) -> int:
        return next((int(i) for i in row if int(i) != self_id and i >= 0), -1)

    w_ids = [nearest_other(w, q) for q, w in zip(picked, want)]
    g_ids = [nearest_other(g, q) for q, g in zip(picked, got)]
    # Two references as near as each other (the same picture under two labels) are both right.
    found = [j for j, i in enumerate(g_ids) if i >= 0]
    tied = np.zeros(len(picked), bool)
    if found:
        s_w = np.einsum("ij,ij->i", queries[found], store.get([w_ids[j] for j in found]))
        s_g = np.einsum("ij,ij->i", queries[found], store.get([g_ids[j] for j in found]))
        tied[found] = np.abs(s_w - s_g) <= 1e-6
    return float(np.mean([labels.get(w) == labels.get(g) or t for w, g, t in zip(w_ids, g_ids, tied)]))


def exact_top2(store: FlatStore, ids: np.ndarray, queries: np.ndarray, piece: int = 65536) -> np.ndarray:
    """The ids of each query's two best inner products over every vector of the store, read a
    piece at a time (an exact copy of a million-vector store would double the memory)."""
    best_s = np.full((len(queries), 2), -np.inf, np.float32)
    best_i = np.full((len(queries), 2), -1, np.int64)
    for start in range(0, len(ids), piece):
        chunk = ids[start:start + piece]
        s = queries @ store.get(chunk).T
        top = np.argpartition(-s, 1, axis=1)[:, :2] if s.shape[1] > 2 else np.argsort(-s, axis=1)[:, :2]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, chunk[top]], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :2]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i
