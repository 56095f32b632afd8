"""The gallery: labelled reference vectors in a vector store, thresholds and scoring, persisted
atomically to a folder. No model code: the pipeline (index.pipeline) turns images into vectors."""

from __future__ import annotations

import copy
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from byakugan.embedder.images import ImageSource
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.embedder.scoring.cohort import COHORT_FILE, load_cohort, save_cohort

from . import committed, counts, db, ranking, reindex, store
from .enrol_inputs import sources_of, thumbnails_of
from .errors import GalleryError, NotInGalleryError, ReadOnlyGalleryError
from .labels import check_label, check_label_in, find, shown, some
from .means import ClassMeans, kept
from .milvus import new_store
from .ranking import Match, Reference, SearchResult
from .sequences import SequenceBook
from .settings import (GallerySettings, check_meta, digest, new_meta, repair, set_adapt, set_auto, set_colourless,
                       set_scoring, set_threshold)
from .vectors import FlatStore, VectorStore, as_vectors

THUMBS_DIR = store.THUMBS


class Gallery:
    """Enrolled classes and their reference vectors, persisted to a folder (or read-only from a bundle)."""

    def __init__(self, meta: dict, vectors: VectorStore, path: Optional[os.PathLike | str] = None,
                 cohort: Optional[np.ndarray] = None) -> None:
        self.path = Path(path) if path else None
        self._meta, self._store = meta, vectors
        meta.setdefault("sequences", {})  # here, not on a reader's first look while an edit copies meta
        self._refs = {r.id: r for r in (r if isinstance(r, Reference) else Reference(**r) for r in meta.pop("references", []))}
        if len(vectors) != len(self._refs):
            raise GalleryError(f"gallery {self.path}: index holds {len(vectors)} vectors but metadata lists {len(self._refs)}")
        self._cohort, self._new_thumbs = cohort, {}
        # What changed since it was opened or saved: a save writes just that (index.db).
        self._dropped, self._added, self._renamed, self._rebuild, self._saved_to = set(), [], [], False, self.path
        self._means: Optional[ClassMeans] = None  # made for the first search by class mean, then kept up to date
        self._members: Optional[counts.Members] = None  # each label's reference ids, while no edit is made
        self._counts = counts.LabelCounts(Counter(r.label for r in self._refs.values()))  # kept up to date by every edit
        self.revision = 0  # counts edits of the references: what is derived from them is cached against it

    # ---- creating, opening, saving ------------------------------------------------------
    @classmethod
    def create(cls, settings: GallerySettings, path: Optional[os.PathLike | str] = None,
               threshold: Optional[float] = None, store: str = "faiss") -> "Gallery":
        """A new, empty gallery (saved on the first save()); store: faiss, milvus-lite or milvus://HOST:PORT."""
        meta = new_meta(settings, threshold)
        if settings.cohort is not None:
            # Scores are cohort-normalised; the cohort is copied into the gallery folder (self-contained).
            meta["cohort"] = {"top": int(settings.cohort_top), "size": len(settings.cohort), "sha256": digest(settings.cohort)}
        if path is not None and cls.exists(path):  # its first save would replace the references there
            committed.readable(Path(path))  # a damaged or foreign database says so, not "open it"
            raise GalleryError(f"gallery {path}: already holds a gallery; open it (Gallery.open) to add to it")
        g = cls(meta, new_store(store, settings.dim, Path(path) if path else None), path, settings.cohort)
        g._saved_to = None  # nothing of it is on disk yet: its first save must find its folder free
        return g

    @classmethod
    def open(cls, path: os.PathLike | str) -> "Gallery":
        """The gallery saved at path; any damage is one GalleryError line, never a traceback."""
        if not isinstance(path, (str, os.PathLike)):
            raise GalleryError(f"gallery path {path!r}: must be a folder's path (a str or os.PathLike)")
        p, v2 = Path(path), db.exists(Path(path))  # else the first format (gallery.json), moved on the next save
        meta, vectors = db.load(p) if v2 else store.load(p, FlatStore.read)
        try:
            repair(meta, path)
            check_meta(meta)
            return cls(meta, vectors, path)
        except (KeyError, TypeError, ValueError) as exc:
            why = str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"  # a ValueError names its setting
            raise GalleryError(f"gallery {path}: {db.DB_FILE if v2 else store.META_FILE} is malformed ({why})") from None

    exists = staticmethod(lambda path: db.exists(Path(path)) or (Path(path) / store.META_FILE).is_file())

    def save(self, path: Optional[os.PathLike | str] = None) -> None:
        self._editable()
        target = Path(path) if path else self.path
        if target is None:
            raise GalleryError("gallery has no path to save to; pass one")
        same = self._saved_to is not None and target.resolve() == Path(self._saved_to).resolve()  # however spelt
        if same:  # checked again, under the write lock, by the save itself; here before any thumbnail is written
            committed.check_current(target, self.generation)
        store.check_save_target(target, same, not same and self.exists(target))
        # The cohort file is written once per folder; it may still have to be read from the old one.
        cohort = self.cohort if self.cohort_settings and not (target / COHORT_FILE).is_file() else None
        old, self.path = self._saved_to and Path(self._saved_to) / THUMBS_DIR, target
        thumbs = store.Thumbnails(self.path / THUMBS_DIR, self._new_thumbs, set(self._added) if same else set(self._new_thumbs),
                                  None if same else old, self._refs, self._added if same else self._refs)
        if cohort is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            save_cohort(self.path, cohort)  # written once, before the save that names it
        # Thumbnails go before the commit and are deleted after it, so every saved reference has its
        # thumbnail; under the write lock, once no other save got in first, so a race's loser writes none;
        # taken back if the save then fails.
        db.save(self.path, self._meta, self._refs, self._store, self._added, sorted(self._dropped), self._renamed,
                self._rebuild or self.path != self._saved_to, same, thumbs.write, thumbs.take_back)
        committed.tidy(self.path, lambda: thumbs.drop(self._dropped))
        self._new_thumbs, self._dropped, self._added, self._renamed, self._rebuild, self._saved_to = \
            {}, set(), [], [], False, self.path

    read_only = property(lambda self: bool(self._meta.get("read_only")))
    def _editable(self) -> None:  # a bundle's gallery answers as exported: an edit in memory would change its answers
        if self.read_only:
            raise ReadOnlyGalleryError("this gallery comes from an exported bundle and is read-only; edit its gallery folder "
                               "(enroll, remove, rename, settings), then export it again")
    generation = property(lambda self: (self._meta["generation"], self._meta.get("commit")) if "generation" in self._meta
                          else None, doc="The committed save it holds (index.db: generation, commit), if any")

    def clone(self) -> Optional["Gallery"]:
        """An independent copy to edit while others read this one (None for a store that cannot copy)."""
        if not hasattr(self._store, "clone"):
            return None
        g = copy.copy(self)
        g._meta, g._store, g._means = copy.deepcopy(self._meta), self._store.clone(), copy.deepcopy(self._means)
        g._refs, g._counts, g._new_thumbs = dict(self._refs), counts.LabelCounts(self._counts), dict(self._new_thumbs)
        g._dropped, g._added, g._renamed = set(self._dropped), list(self._added), list(self._renamed)
        return g

    model_settings = property(lambda self: dict(self._meta["model"]), doc='{"name", "fingerprint", "dim"} of its model')
    model_name = property(lambda self: self._meta["model"]["name"])
    detector_config = property(lambda self: dict(self._meta.get("detector", {"name": "none"})))
    landmark_settings = property(lambda self: dict(self._meta["landmarks"]) if "landmarks" in self._meta else None,
                                 doc='{"name", "source", "fingerprint", "dim", "weight"} when landmarks are fused in')
    fused = property(lambda self: "landmarks" in self._meta)
    dim = property(lambda self: self._store.dim)
    vectors = property(lambda self: self._store,
                       doc="The vector store (read it; edit through enroll and remove, which keep the labels in step)")

    def reindex(self, factory: str) -> float:
        """Rebuild the vector index as a FAISS factory string names ("Flat", "HNSW32", or "auto": exact
        while small, see index.reindex); its recall@1 by label against exact search (Milvus: NaN till saved)."""
        self._editable()
        chosen, self._store = reindex.check(factory), reindex.rebuild(self._store, factory, len(self))
        self._meta["index"], self._rebuild = chosen, True  # only once rebuilt: a refused one changes nothing
        return reindex.label_recall(self._store, {i: r.label for i, r in self._refs.items()})

    cohort_settings = property(lambda self: dict(self._meta["cohort"]) if "cohort" in self._meta else None,
                               doc='{"top", "size", "sha256"} when scores are cohort-normalised, else None')

    @property
    def cohort(self) -> Optional[np.ndarray]:
        """The cohort that normalises this gallery's scores, or None."""
        if (spec := self._meta.get("cohort")) is not None and self._cohort is None:
            cohort = load_cohort(self.path, int(self._meta["model"]["dim"]))
            if digest(cohort) != spec["sha256"]:
                raise GalleryError(f"gallery {self.path}: {COHORT_FILE} does not match its checksum (damaged)")
            self._cohort = cohort
        return self._cohort

    colourless_queries = property(lambda self: dict(self._meta.get("colourless_queries") or {}) or None,
                                  lambda self, value: self._editable() or set_colourless(self._meta, value),
                                  doc='{"split", "bins", "weight"}: colourless queries score by the CNN part alone, or None')
    threshold_model_adapted = property(lambda self: "model_threshold_adapted" in self._meta,
                                       doc="Whether the model's threshold, which automatic mode uses until the references "
                                           "give one, was set on adapted scores (else on plain ones)")
    threshold = property(lambda self: float(self._meta["threshold"]),
                         lambda self, value: self._editable() or set_threshold(self._meta, value))
    threshold_auto = property(lambda self: self._meta.get("threshold_mode") == "auto",
                              lambda self, value: self._editable() or set_auto(self._meta, value),
                              doc="True: searches use the threshold its references give (Pipeline.threshold)")
    scoring = property(lambda self: self._meta.get("scoring", "nearest"),
                       lambda self, value: self._editable() or set_scoring(self._meta, value),
                       doc='How labels are ranked: "nearest" (best reference) or "mean" (cosine to the class mean)')
    adapt = property(lambda self: dict(self._meta.get("adapt") or {}) or None, lambda self, value: self._editable() or set_adapt(self._meta, value),
                     doc='{"weight", "ridge"[, "cohort"]}: label scores adapted to its classes (embedder.scoring.adapt), or None')

    def means(self) -> Optional[ClassMeans]:
        """Its class sums (XᵀX too when its scores are adapted), kept by its edits; None where its scoring needs none."""
        self._means = kept(self._means, self._store, self._refs, self.scoring == "mean", self.adapt is not None)
        return self._means

    sequences = property(lambda self: SequenceBook(self._meta["sequences"], self.labels, self.read_only),
                         doc="Named sequences of its labels (index.sequences): iterate, add, remove; saved with it.")

    # ---- contents -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._refs)

    def labels(self) -> dict[str, int]:
        """Each enrolled label with its number of references, sorted by label (counts kept by every edit)."""
        return dict(sorted(self._counts.items()))

    def references(self, label: Optional[str] = None) -> list[Reference]:
        label = None if label is None else self._require_label(label)
        return [r for r in self._refs.values() if label is None or r.label == label]

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        if missing := [i for i in ids if i not in self._refs]:
            raise NotInGalleryError(f"reference id {missing[0]!r}: not in gallery {self.path or '(unsaved)'}")
        return self._store.get(list(ids))

    def thumbnail(self, ref_id: int) -> Optional[bytes]:
        """A small JPEG of the reference image, when it was enrolled from an image."""
        if isinstance(ref_id, bool) or not isinstance(ref_id, (int, np.integer)):  # "0" or "../x" would name a file
            raise NotInGalleryError(f"reference id {ref_id!r}: not in gallery {self.path or '(unsaved)'}; ids are whole numbers")
        p = self.path / THUMBS_DIR / f"{ref_id}.jpg" if self.path else None  # (one not saved yet: in memory)
        return self._new_thumbs.get(ref_id) or (p.read_bytes() if p is not None and p.is_file() else None)

    def _require_label(self, label: str) -> str:
        if (found := find(label, self._counts)) is None:  # any spelling it was enrolled with
            raise NotInGalleryError(f"label {shown(label)}: not in gallery {self.path or '(unsaved)'} (labels: {some(self._counts)})")
        return found

    # ---- editing ------------------------------------------------------------------------
    def enroll(self, label: str, vectors: np.ndarray, sources: Optional[Sequence[str]] = None,
               images: Optional[Sequence[ImageSource]] = None) -> list[int]:
        """Add references for `label` from an (N, D) array of vectors as the pipeline stores them;
        `images` (the crops they came from) become thumbnails. Returns their ids."""
        self._editable()
        label = check_label_in(label, self._counts)
        emb = as_vectors(vectors, self.dim, self.path, enrolled=True, fused=self.fused)
        if not len(emb):  # a label with no references would be listed, yet vanish on the next open
            raise GalleryError(f"enroll {label!r}: no images or vectors given")
        sources, thumbs = sources_of(sources, len(emb)), thumbnails_of(images, len(emb))  # before any change
        first = int(self._meta["next_id"])
        ids = list(range(first, first + len(emb)))
        self._store.add(ids, emb)
        if self._meta.get("index") == reindex.AUTO and self._store.factory != reindex.resolve(reindex.AUTO, len(self._store)):
            self._store, self._rebuild = reindex.rebuild(self._store, reindex.AUTO, len(self._store)), True
        self._added += ids
        self._counts[label] += len(ids)
        if self._means is not None:
            self._means.add(label, emb)
        self.revision += 1
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._refs.update((i, Reference(i, label, src, now)) for i, src in zip(ids, sources))
        self._meta["next_id"] = first + len(emb)
        self._new_thumbs.update(zip(ids, thumbs or ()))
        return ids

    def set_thumbnails(self, ids: Sequence[int], images: Sequence[ImageSource]) -> None:
        """Keep small JPEGs of the reference images (written on save) for people to look at."""
        self._new_thumbs.update(zip(map(int, ids), thumbnails_of(images, len(ids))))

    def remove(self, label: str) -> int:
        """Remove every reference of a label; returns how many were removed."""
        label = self._require_label(label)
        return self._drop([r.id for r in self._refs.values() if r.label == label])

    def remove_reference(self, ref_id: int) -> Reference:
        if isinstance(ref_id, bool) or not isinstance(ref_id, (int, np.integer)) or ref_id not in self._refs:  # True == 1.0 == 1
            raise NotInGalleryError(f"reference id {ref_id!r}: not in gallery {self.path or '(unsaved)'}")
        ref, _ = self._refs[ref_id], self._drop([ref_id])  # read before it is dropped
        return ref

    def _drop(self, ids: list[int]) -> int:
        self._editable()
        if self._means is not None:
            self._means.remove([self._refs[i].label for i in ids], self._store.get(ids))
        self.revision += 1
        self._store.remove(ids)
        self._dropped.update(ids)
        self._added = [i for i in self._added if i not in self._dropped]
        self._counts -= Counter(self._refs[i].label for i in ids)  # drops labels that reach 0
        for i in ids:
            del self._refs[i]
            self._new_thumbs.pop(i, None)
        return len(ids)

    def rename(self, old: str, new: str) -> int:
        self._editable()
        old, new = self._require_label(old), check_label(new)
        # Stored as typed, or shown alike; `old` aside: a rename may add or drop its invisible characters
        if (other := find(new, [lab for lab in self._counts if lab != old])) is not None:
            raise GalleryError(f"rename {old!r} -> {new!r}: {other!r}{'' if other == new else f', which shows as {new!r},'} already exists; remove it first")
        self._refs.update({i: Reference(r.id, new, r.source, r.added) for i, r in self._refs.items() if r.label == old})
        self.sequences.rename_label(old, new)
        if self._means is not None and new != old:
            self._means.rename(old, new)
        self._renamed.append((old, new))
        self._counts[new] = self._counts.pop(old)
        self.revision += 1
        return sum(1 for r in self._refs.values() if r.label == new)

    def search(self, queries: np.ndarray, k: int = 5, offset: Optional[np.ndarray] = None) -> list[SearchResult]:
        """Each query's k nearest references and k best labels (see ranking.search); offset: cohort normalisation."""
        k = ranking.check_k(k)
        if not self._refs:
            raise GalleryError(f"gallery {self.path or '(unsaved)'}: is empty; enrol images first")
        emb = as_vectors(queries, self.dim, self.path)
        means, adapt = self.means(), self.adapt and Adaptation.from_dict(self.adapt)
        self._members = counts.Members.current(self._members, self._refs, self.revision)
        return ranking.search(self._store, self._refs, emb, k, means.matrix() if self.scoring == "mean" else None,
                              offset, self._counts, self._members, means.directions(adapt, self.cohort) if adapt else None)

    def match(self, result: SearchResult, threshold: Optional[float] = None, calibration=None) -> Match:
        """The best label, or UNKNOWN below the threshold (the stored one unless given: Pipeline.match uses the
        automatic one); with a calibration (index.confidence), its confidence."""
        return ranking.match(result, self.threshold if threshold is None else threshold, calibration)
