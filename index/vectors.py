"""Vector stores: ids -> unit vectors, searched by inner product (cosine on unit vectors).

The gallery talks to a store only through `VectorStore`; `FlatStore` is the FAISS one
(`IndexIDMap2` over `IndexFlatIP`, exact search), serialised into the gallery's index file.
Another backend implements the same few methods and the gallery and pipeline are unchanged.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import faiss
import numpy as np

from .errors import GalleryError


class VectorStore(Protocol):
    dim: int

    def __len__(self) -> int: ...

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, ids: Sequence[int]) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k), best first; id -1 where fewer than k vectors exist."""
        ...

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ids, (len(ids), dim)."""
        ...

    def to_bytes(self) -> bytes: ...


class FlatStore:
    """Exact inner-product search in FAISS; ids are the gallery's reference ids."""

    kind = "faiss-flat-ip"

    def __init__(self, index: faiss.Index) -> None:
        self._index = index
        self.dim = int(index.d)

    @classmethod
    def empty(cls, dim: int) -> "FlatStore":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(int(dim))))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "FlatStore":
        """Raises ValueError (with FAISS's reason) for bytes that are not a FAISS index."""
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable") from None
        return cls(index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(queries, np.float32), int(k))

    def get(self, ids: Sequence[int]) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._index.reconstruct(int(i)) for i in ids])

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()


def as_vectors(vectors: np.ndarray, dim: int, where: object = "") -> np.ndarray:
    """vectors as a contiguous float32 (N, dim) array; GalleryError for any other shape or a NaN."""
    emb = np.asarray(vectors)
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise GalleryError(f"vectors of shape {emb.shape} and dtype {emb.dtype}: expected an (N, {dim}) float array")
    if emb.shape[1] != dim:
        raise GalleryError(f"embeddings have dim {emb.shape[1]}, gallery {where or ''} needs {dim}")
    if not np.isfinite(emb).all():
        raise GalleryError("embeddings contain NaN or infinite values")
    return np.ascontiguousarray(emb, dtype=np.float32)
