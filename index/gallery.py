"""The gallery: enrolled reference embeddings in a FAISS inner-product index (cosine on unit vectors)."""

from __future__ import annotations

import io
import os
import unicodedata
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence, Union

import faiss
import numpy as np
from PIL import Image

import embedder
from embedder import Embedder
from embedder.cohort import COHORT_FILE, load_cohort, offsets, save_cohort
from embedder.detect import Detection, create_detector, regions
from embedder.errors import ImageError
from embedder.fusion import query_form
from embedder.images import ImageSource, describe, load_image

from . import search as ranking
from . import store
from .errors import GalleryError, ModelMismatchError
from .search import UNKNOWN, Match, Reference, SearchResult

MAX_LABEL_LEN = 100
THUMBS_DIR = "thumbs"
THUMB_SIZE = 128

Queries = Union[np.ndarray, Sequence[ImageSource]]


def _thumbnail(img: Image.Image) -> bytes:
    small = img.copy()
    small.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def check_label(label: object) -> str:
    if not isinstance(label, str) or not label.strip():
        raise GalleryError(f"label {label!r}: must be a non-empty string")
    label = label.strip()
    if len(label) > MAX_LABEL_LEN:
        raise GalleryError(f"label {label[:20]!r}...: longer than {MAX_LABEL_LEN} characters")
    if any(unicodedata.category(c) == "Cc" for c in label):
        raise GalleryError(f"label {label!r}: must not contain control characters")
    if label.lower() == UNKNOWN:
        raise GalleryError(f"label {label!r}: reserved for queries below the threshold; choose another name")
    return label


class Gallery:
    """Enrolled classes and their reference embeddings, persisted to a directory.

    The model is loaded only when images must be embedded, so listing, renaming and removing
    are fast and work without the model.
    """

    def __init__(self, model: Embedder, path: Optional[os.PathLike | str] = None, threshold: Optional[float] = None,
                 detector: Union[str, dict, None] = "none", landmarks: Union[str, object, None] = "auto"):
        """landmarks: the landmark encoder fused with the CNN embedding ("auto": the shipped one
        when the detector is "hand", else none; a name, a directory, an encoder, or None)."""
        self.path = Path(path) if path else None
        self._model: Optional[Embedder] = model
        self._detector = create_detector(detector)
        self._landmarks = _landmark_encoder(landmarks, self._detector.name)
        base = float(model.config.get("threshold", 0.5))
        self._meta = {
            "model": {"name": model.name, "fingerprint": model.fingerprint(), "dim": model.dim},
            "threshold": base,
            # Stored so that queries are cropped the way the references were.
            "detector": self._detector.config,
            "next_id": 0,
            "references": [],
        }
        if model.config.get("scoring"):  # the model's own advice, e.g. class mean for anime
            self._meta["scoring"] = model.config["scoring"]
        dim = model.dim
        if self._landmarks is not None:
            lm = self._landmarks
            self._meta["landmarks"] = {"name": lm.name, "source": _source(landmarks, lm), "fingerprint": lm.fingerprint(),
                                       "dim": lm.dim, "weight": lm.weight}
            dim += lm.dim
            # A fused score is the weighted sum of the two cosines, so is its default threshold.
            self._meta["threshold"] = round((1 - lm.weight) * base + lm.weight * float(lm.config["threshold"]), 4)
        self._cohort = None
        if model.cohort is not None and model.cohort_settings is not None:
            if self._landmarks is not None:
                raise GalleryError(f"model {model.name!r} normalises scores by a cohort, which fused hand landmarks do not "
                                   "support; use a model without a cohort (default) or landmarks None")
            # Scores, and so the model's threshold, are cohort-normalised; the cohort is copied
            # into the gallery (saved beside gallery.json) so it stays self-contained.
            self._cohort = model.cohort
            self._meta["cohort"] = {**model.cohort_settings, "size": len(model.cohort), "sha256": _digest(model.cohort)}
        if threshold is not None:
            self._meta["threshold"] = float(threshold)
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._refs: dict[int, Reference] = {}
        self._new_thumbs: dict[int, bytes] = {}
        self._dropped: set[int] = set()
        self._protos = None

    # ---- opening and saving -------------------------------------------------------------
    @classmethod
    def open(cls, path: os.PathLike | str, model: Union[Embedder, str, None] = None) -> "Gallery":
        """Open a saved gallery. model: None to use the one it was built with, or one to check against it."""
        meta, index = store.load(Path(path))
        g = cls.__new__(cls)
        g.path, g._meta, g._index, g._model, g._detector, g._landmarks = Path(path), meta, index, None, None, None
        g._new_thumbs, g._dropped, g._protos, g._cohort = {}, set(), None, None
        g._refs = {r["id"]: Reference(**r) for r in meta["references"]}
        if index.ntotal != len(g._refs):
            raise GalleryError(f"gallery {path}: index holds {index.ntotal} vectors but metadata lists {len(g._refs)}")
        if model is not None:
            g._model = g._checked(model if isinstance(model, Embedder) else embedder.load(model)[0])
        return g

    @classmethod
    def open_or_create(cls, path: os.PathLike | str, model: Union[Embedder, str, None] = None,
                       detector: Union[str, dict, None] = None, landmarks: Union[str, object, None] = "auto") -> "Gallery":
        """Open the gallery at path, or start a new one there (saved on the first save()).

        detector: for a new gallery, the detector its images are cropped with (default "none");
        for an existing one it must match the stored one, if given. landmarks: see Gallery().
        """
        if (Path(path) / store.META_FILE).is_file():
            g = cls.open(path, model)
            wanted = detector.get("name") if isinstance(detector, dict) else detector
            if wanted is not None and wanted != g.detector_config["name"]:
                raise GalleryError(f"gallery {path}: its images are cropped with detector {g.detector_config['name']!r}, "
                                   f"not {wanted!r}; omit --detector or use a new gallery")
            return g
        if Path(path).exists() and any(p.name != store.LOCK_FILE for p in Path(path).iterdir()):
            raise GalleryError(f"gallery {path}: folder exists, is not empty and holds no {store.META_FILE}; refusing to use it")
        m = model if isinstance(model, Embedder) else embedder.load(model or embedder.DEFAULT_MODEL)[0]
        return cls(m, path, detector=detector or "none", landmarks=landmarks)

    def save(self, path: Optional[os.PathLike | str] = None) -> None:
        target = Path(path) if path else self.path
        if target is None:
            raise GalleryError("gallery has no path to save to; pass one")
        # The cohort file is written once per folder; it may still have to be read from the old one.
        cohort = self.cohort if self.cohort_settings and not (target / COHORT_FILE).is_file() else None
        self.path = target
        # Thumbnails go first and are deleted last, so every saved reference has its thumbnail.
        thumbs = self.path / THUMBS_DIR
        if self._new_thumbs:
            thumbs.mkdir(parents=True, exist_ok=True)
            for i, data in self._new_thumbs.items():
                store.write_atomic(thumbs / f"{i}.jpg", data, sync_dir=False)
        if cohort is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            save_cohort(self.path, cohort)  # written once, before the gallery.json that names it
        self._meta["references"] = [asdict(r) for r in self._refs.values()]
        store.save(self.path, self._meta, self._index)
        for i in self._dropped:
            (thumbs / f"{i}.jpg").unlink(missing_ok=True)
        self._new_thumbs, self._dropped = {}, set()

    def thumbnail(self, ref_id: int) -> Optional[bytes]:
        """A small JPEG of the reference image, when it was enrolled from an image."""
        if ref_id in self._new_thumbs:
            return self._new_thumbs[ref_id]
        p = self.path / THUMBS_DIR / f"{ref_id}.jpg" if self.path else None
        return p.read_bytes() if p is not None and p.is_file() else None

    def _checked(self, model: Embedder) -> Embedder:
        want = self._meta["model"]
        if model.fingerprint() != want["fingerprint"] or model.dim != want["dim"]:
            raise ModelMismatchError(
                f"gallery {self.path}: built with model {want['name']!r} (fingerprint {want['fingerprint']}, "
                f"dim {want['dim']}), not with {model.name!r} (fingerprint {model.fingerprint()}, dim {model.dim}); "
                "use the same model or enrol into a new gallery"
            )
        return model

    @property
    def model(self) -> Embedder:
        if self._model is None:
            self._model = self._checked(embedder.load(self._meta["model"]["name"])[0])
        return self._model

    @property
    def landmark_model(self):
        """The landmark encoder fused into this gallery's embeddings, or None."""
        spec = self._meta.get("landmarks")
        if spec is None:
            return None
        if self._landmarks is None:
            from embedder.landmarks import load_landmarks

            lm = load_landmarks(spec.get("source", spec["name"]))
            if lm.fingerprint() != spec["fingerprint"]:
                raise ModelMismatchError(f"gallery {self.path}: built with landmark model {spec['name']!r} "
                                         f"(fingerprint {spec['fingerprint']}), not {lm.fingerprint()}; use a new gallery")
            self._landmarks = lm
        return self._landmarks

    @property
    def fused(self) -> bool:
        return "landmarks" in self._meta

    def embed_crops(self, crops: Sequence[ImageSource], landmarks: Optional[Sequence[Optional[np.ndarray]]] = None,
                    progress: bool = False) -> np.ndarray:
        """Embeddings of images already cropped, as this gallery stores them: with a landmark model,
        fused with the landmark embedding (of `landmarks`, or found by the detector in each crop)."""
        if not self.fused:
            return self.model.embed(list(crops), progress=progress)
        from embedder.landmarks import embed_regions

        imgs = [load_image(c) for c in crops]
        if landmarks is None:
            landmarks = [self._landmarks_in(im) for im in imgs]
        return embed_regions(self.model, self.landmark_model, imgs, landmarks, progress=progress)

    def _landmarks_in(self, img: Image.Image) -> Optional[np.ndarray]:
        found = self.detector(img)
        return found[0].landmarks if found else None

    @property
    def detector_config(self) -> dict:
        return self._meta.get("detector", {"name": "none"})

    @property
    def detector(self):
        if self._detector is None:
            self._detector = create_detector(self.detector_config)
        return self._detector

    def crops(self, image: ImageSource, every: bool = False, fallback: Optional[str] = None,
              name: Optional[str] = None) -> list[tuple[Detection, Image.Image]]:
        """The regions of an image this gallery embeds: the largest detection, or every one.

        Raises ImageError when nothing is found, unless fallback == "whole".
        """
        img = load_image(image, name=name)
        found = regions(self.detector, img, fallback)
        if not found:
            raise ImageError(f"{name or describe(image)}: no {self.detector_config['name']} found "
                             "(use the whole image with fallback 'whole')")
        return [(d, d.crop(img)) for d in (found if every else found[:1])]

    def find(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
             fallback: Optional[str] = None, name: Optional[str] = None) -> list[dict]:
        """Detect, then search each detection: one JSON-ready result per detection, largest first."""
        img = load_image(image, name=name)
        found = regions(self.detector, img, fallback)
        if not found:
            return []
        results = self.search(self.embed_crops([d.crop(img) for d in found], [d.landmarks for d in found]), k=k)
        t = self.threshold if threshold is None else float(threshold)
        return [ranking.detection(list(d.box), r, t, (d.landmarks is not None) if self.fused else None)
                for d, r in zip(found, results)]

    @property
    def cohort_settings(self) -> Optional[dict]:
        """{"top", "size", "sha256"} when scores are cohort-normalised (see embedder.cohort), else None."""
        return self._meta.get("cohort")

    @property
    def cohort(self) -> Optional[np.ndarray]:
        """The cohort that normalises this gallery's scores (see embedder.cohort), or None."""
        spec = self.cohort_settings
        if spec is None:
            return None
        if self._cohort is None:
            cohort = load_cohort(self.path, int(self._meta["model"]["dim"]))
            if _digest(cohort) != spec["sha256"]:
                raise GalleryError(f"gallery {self.path}: {COHORT_FILE} does not match its checksum (damaged)")
            self._cohort = cohort
        return self._cohort

    @property
    def model_name(self) -> str:
        return self._meta["model"]["name"]

    @property
    def threshold(self) -> float:
        return float(self._meta["threshold"])

    @threshold.setter
    def threshold(self, value: float) -> None:
        if not -1.0 <= float(value) <= 1.0:
            raise GalleryError(f"threshold {value!r}: must be a cosine similarity between -1 and 1")
        self._meta["threshold"] = float(value)

    @property
    def scoring(self) -> str:
        """How labels are ranked: "nearest" (best reference) or "mean" (cosine to the class mean)."""
        return self._meta.get("scoring", "nearest")

    @scoring.setter
    def scoring(self, value: str) -> None:
        try:
            self._meta["scoring"] = ranking.check_scoring(value)
        except ValueError as exc:
            raise GalleryError(str(exc)) from None

    # ---- contents -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._refs)

    def labels(self) -> dict[str, int]:
        """Each enrolled label with its number of references, sorted by label."""
        return dict(sorted(Counter(r.label for r in self._refs.values()).items()))

    def references(self, label: Optional[str] = None) -> list[Reference]:
        if label is not None:
            self._require_label(label)
        return [r for r in self._refs.values() if label is None or r.label == label]

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        return np.stack([self._index.reconstruct(int(i)) for i in ids]) if ids else np.zeros((0, self._index.d), np.float32)

    def _require_label(self, label: str) -> None:
        if label not in self.labels():
            known = ", ".join(self.labels()) or "none"
            raise GalleryError(f"label {label!r}: not in gallery {self.path or '(unsaved)'} (labels: {known})")

    # ---- editing ------------------------------------------------------------------------
    def enroll(self, label: str, images: Queries, sources: Optional[Sequence[str]] = None, detect: bool = True,
               fallback: Optional[str] = None, landmarks: Optional[Sequence[Optional[np.ndarray]]] = None) -> list[int]:
        """Add references for `label` from images, or from an (N, D) array of embeddings. Returns their ids.

        Images are cropped to their largest detection first (detect=False: they already are crops,
        with their detections' `landmarks` if known); an image with none raises ImageError unless
        fallback == "whole".
        """
        label = check_label(label)
        from_embeddings = isinstance(images, np.ndarray) and images.dtype.kind == "f"
        if from_embeddings:
            emb = self._as_embeddings(images)
            sources = sources if sources is not None else ["<embedding>"] * len(emb)
        else:
            sources = sources if sources is not None else [describe(i) for i in images]
            if detect:
                found = [self.crops(i, fallback=fallback, name=str(n))[0] for i, n in zip(images, sources)]
                loaded, landmarks = [c for _, c in found], [d.landmarks for d, _ in found]
            else:
                loaded = [load_image(i) for i in images]
            emb = self.embed_crops(loaded, landmarks, progress=len(loaded) > 8)
        if len(sources) != len(emb):
            raise GalleryError(f"enroll: {len(sources)} sources for {len(emb)} images")
        first = int(self._meta["next_id"])
        ids = np.arange(first, first + len(emb), dtype=np.int64)
        self._index.add_with_ids(emb, ids)
        self._protos = None
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for i, src in zip(ids.tolist(), sources):
            self._refs[i] = Reference(i, label, str(src), now)
        self._meta["next_id"] = first + len(emb)
        if not from_embeddings:
            self.set_thumbnails(ids.tolist(), loaded)
        return ids.tolist()

    def set_thumbnails(self, ids: Sequence[int], images: Sequence[ImageSource]) -> None:
        """Keep small JPEGs of the reference images (written on save) for people to look at."""
        for i, im in zip(ids, images):
            self._new_thumbs[int(i)] = _thumbnail(load_image(im))

    def remove(self, label: str) -> int:
        """Remove every reference of a label; returns how many were removed."""
        self._require_label(label)
        return self._drop([r.id for r in self._refs.values() if r.label == label])

    def remove_reference(self, ref_id: int) -> Reference:
        if ref_id not in self._refs:
            raise GalleryError(f"reference id {ref_id}: not in gallery {self.path or ''}")
        ref = self._refs[ref_id]
        self._drop([ref_id])
        return ref

    def _drop(self, ids: list[int]) -> int:
        self._protos = None
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        for i in ids:
            del self._refs[i]
            self._new_thumbs.pop(i, None)
        self._dropped.update(ids)
        return len(ids)

    def rename(self, old: str, new: str) -> int:
        self._require_label(old)
        new = check_label(new)
        if new in self.labels() and new != old:
            raise GalleryError(f"rename {old!r} -> {new!r}: {new!r} already exists; remove it first")
        for i, r in list(self._refs.items()):
            if r.label == old:
                self._refs[i] = Reference(r.id, new, r.source, r.added)
        self._protos = None
        return sum(1 for r in self._refs.values() if r.label == new)

    # ---- querying -----------------------------------------------------------------------
    def _as_embeddings(self, queries: Queries) -> np.ndarray:
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f" and queries.ndim == 2:
            emb = np.ascontiguousarray(queries, dtype=np.float32)
            if emb.shape[1] != self._index.d:
                raise GalleryError(f"embeddings have dim {emb.shape[1]}, gallery {self.path or ''} needs {self._index.d}")
            if not np.isfinite(emb).all():
                raise GalleryError("embeddings contain NaN or infinite values")
            return emb
        return self.embed_crops(list(queries))

    def search(self, queries: Queries, k: int = 5) -> list[SearchResult]:
        """For each query: its k nearest references and the k best labels (by best reference, or by
        class mean when scoring is "mean")."""
        if k < 1:
            raise GalleryError(f"k={k}: must be at least 1")
        if not self._refs:
            raise GalleryError(f"gallery {self.path or ''}: is empty; enrol images first")
        emb = self._as_embeddings(queries)
        if self.fused:
            emb = query_form(emb, self._meta["model"]["dim"], self._meta["landmarks"]["weight"])
        if self.scoring == "mean" and self._protos is None:
            self._protos = ranking.prototypes(self._index, self._refs)
        off = offsets(emb, self.cohort, int(self.cohort_settings["top"])) if self.cohort_settings else None
        return ranking.search(self._index, self._refs, emb, k, self._protos if self.scoring == "mean" else None, off)

    def match(self, queries: Queries, threshold: Optional[float] = None) -> list[Match]:
        """search(k=1) plus a threshold: the best label, or UNKNOWN when its score is below it."""
        t = self.threshold if threshold is None else float(threshold)
        return [ranking.match(r, t) for r in self.search(queries, k=1)]


def _digest(cohort: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(cohort, np.float32).tobytes()).hexdigest()


def _source(spec, encoder) -> str:
    """Where a gallery finds its landmark model again: a shipped name, or an absolute directory."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec if isinstance(spec, str) and spec != "auto" else encoder.name


def _landmark_encoder(spec, detector_name: str):
    from embedder.landmarks import resolve_landmarks

    try:
        return resolve_landmarks(spec, detector_name)
    except ValueError:
        raise GalleryError(f"landmarks {spec!r}: only a gallery with detector 'hand' has landmarks, "
                           f"not {detector_name!r}") from None
