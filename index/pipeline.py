"""The one path an image takes: detect -> crop -> embed (torch or ONNX) -> fuse hand landmarks ->
query form and cohort normalisation -> ranked by a gallery.

Every interface calls it: the CLI, the HTTP server, the Streamlit page and an exported bundle
(`recognize`, `enroll`), `byakugan embed` and `byakugan evaluate` (`embed_images`)."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from byakugan.embedder.detection import Detection, create_detector
from byakugan.embedder.detection.base import whole
from byakugan.embedder.errors import ImageError
from byakugan.embedder.images import ImageSource, blank, describe, image_list, load_image
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.scoring.fusion import fuse, query_form, stack_landmarks
from byakugan.embedder.scoring.adapt import advised, advised_threshold
from byakugan.embedder.scoring.calibration import Calibration

from .colour_queries import ColourQueries
from .confidence import calibrate
from .errors import GalleryError, LandmarksNeedHandError
from .batch import Embedded, embed_images
from .enrol_inputs import one_each, sources_of
from .gallery import Gallery
from .model_check import check_fits, check_gallery, load_gallery_model, load_model
from .ranking import Match, Recognition, SearchResult, blank_answer, check_fallback, check_k
from .results import Region
from .settings import GallerySettings, colourless_spec
from .vectors import stored_form

Queries = Union[np.ndarray, Sequence[ImageSource]]


class Pipeline:
    """encoder: an Embedder (torch) or an OnnxEmbedder, anything with .embed(images), .name, .dim
    and .fingerprint(). landmarks: a LandmarkEncoder or OnnxLandmarks (.encode, .weight, .dim), or None."""

    def __init__(self, encoder, detector: Union[str, dict, None] = "none", landmarks=None,
                 landmark_source: Optional[str] = None, choice=None) -> None:
        self.encoder, self.landmarks = encoder, landmarks
        # A detector named here is made now, for its full config; a stored config is made on first use.
        self._detector = None if isinstance(detector, dict) else create_detector(detector)
        self.detector_config = dict(detector) if isinstance(detector, dict) else self._detector.config
        self._landmark_source = landmark_source or (landmarks.name if landmarks is not None else None)
        self._calibration: Optional[tuple] = None  # (the gallery, its state, its calibration): the last one asked for
        self._colour = ColourQueries()  # whether a gallery's references are in colour, the last one asked for
        self.choice = choice  # how create() picked the model when none was named (hub.ModelChoice)

    @classmethod
    def create(cls, model=None, detector: Union[str, dict, None] = "none", landmarks="auto",
               sample: Sequence[ImageSource] = ()) -> "Pipeline":
        """model: an Embedder, a name or a folder (default: embedder.embedding.hub.choose_model's for the
        detector and the first images, `sample`; kept as .choice); landmarks: "auto" (the shipped
        encoder for detector "hand", else none), None/"none", a name, a folder or an encoder."""
        from byakugan.embedder.embedding.hub import choose_model
        from byakugan.embedder.embedding.landmarks import resolve_landmarks

        name = (detector.get("name") if isinstance(detector, dict) else detector) or "none"
        choice = choose_model(name, sample) if model is None else None
        encoder = load_model(choice.name if choice else model)
        try:
            lm = resolve_landmarks(landmarks, name)
        except ValueError:
            raise LandmarksNeedHandError(f"landmarks {landmarks!r}: only a gallery with detector 'hand' has landmarks, "
                                         f"not {name!r}") from None
        # a folder is found again by its full path, wherever the gallery is opened
        source = str(Path(landmarks).resolve()) if isinstance(landmarks, (str, os.PathLike)) and Path(landmarks).is_dir() \
            else landmarks if isinstance(landmarks, str) and landmarks != "auto" else None
        return cls(encoder, detector or "none", lm, source, choice)

    @classmethod
    def for_gallery(cls, gallery: Gallery, model=None, runtime: str = "torch") -> "Pipeline":
        """The pipeline that made the gallery's vectors: its model (or `model`, checked against it),
        detector and landmark encoder. Raises ModelMismatchError when a model differs. runtime
        "onnx": the models on onnxruntime, from the cache without importing torch once exported."""
        from byakugan.embedder.embedding import runtime as rt

        if runtime not in ("torch", "onnx"):
            raise GalleryError(f"runtime {runtime!r}: not one this runs on; valid: torch, onnx")
        want, spec = check_gallery(gallery).model_settings, gallery.landmark_settings
        if runtime == "onnx" and model is None:
            encoder = rt.cached_embedder(want["name"], want["fingerprint"])
            lm = rt.cached_landmarks(spec["name"], spec["fingerprint"]) if spec else None
            if encoder is not None and encoder.dim == want["dim"] and (lm is not None or spec is None):
                return cls(encoder, gallery.detector_config, lm, spec.get("source") if spec else None)
        pipe = cls._for_gallery(gallery, model)
        return pipe.onnx() if runtime == "onnx" else pipe

    @classmethod
    def _for_gallery(cls, gallery: Gallery, model=None) -> "Pipeline":
        from byakugan.embedder.embedding.landmarks import load_landmarks

        encoder = load_model(model) if model is not None else load_gallery_model(gallery.model_settings)
        spec = gallery.landmark_settings
        lm = load_landmarks(spec.get("source", spec["name"])) if spec is not None else None
        check_fits(gallery, encoder, lm)
        return cls(encoder, gallery.detector_config, lm, spec.get("source") if spec else None)

    def settings(self) -> GallerySettings:
        """What a new gallery filled by this pipeline records (see Gallery.create)."""
        m = self.encoder
        config = getattr(m, "config", {})
        threshold = float(config.get("threshold", 0.5))
        landmarks = None
        if self.landmarks is not None:
            lm = self.landmarks
            landmarks = {"name": lm.name, "source": self._landmark_source, "fingerprint": lm.fingerprint(),
                         "dim": lm.dim, "weight": lm.weight}
            # A fused score is the weighted sum of the two cosines, so is its default threshold.
            threshold = round((1 - lm.weight) * threshold + lm.weight * float(lm.config["threshold"]), 4)
        cohort = getattr(m, "cohort", None) if getattr(m, "cohort_settings", None) is not None else None
        if cohort is not None and landmarks is not None:
            raise GalleryError(f"model {m.name!r} normalises scores by a cohort, which fused hand landmarks do not "
                               "support; use a model without a cohort (default), or no landmarks (--landmarks none)")
        # The detector's full config, every setting with its value today: a later default never changes what it does.
        adapt = advised(m, self.landmarks)
        source = {"source": m.source} if isinstance(getattr(m, "source", None), str) else {}  # index.model_check
        return GallerySettings({"name": m.name, "fingerprint": m.fingerprint(), "dim": m.dim, **source}, self.detector.config,
                               threshold, config.get("scoring"), landmarks,
                               m.cohort_settings["top"] if cohort is not None else None, cohort,
                               colourless_spec(m) if landmarks is None else None, adapt and adapt.to_dict(),
                               advised_threshold(m, self.landmarks) if adapt else None)

    def new_gallery(self, path: Optional[os.PathLike | str] = None, threshold: Optional[float] = None,
                    store: str = "faiss") -> Gallery:
        """store: where its vectors live, "faiss" (files), "milvus-lite" or "milvus://HOST:PORT" (index.milvus)."""
        return Gallery.create(self.settings(), path, threshold, store)

    def onnx(self) -> "Pipeline":
        """The same pipeline, its models on onnxruntime (exported once, cached: embedding.runtime)."""
        from byakugan.embedder.embedding.runtime import onnx_embedder, onnx_landmarks

        lm = onnx_landmarks(self.landmarks) if self.landmarks is not None else None
        return self._twin(onnx_embedder(self.encoder), lm, self._detector)

    def for_video(self) -> "Pipeline":
        """One stream's own pipeline: a detector that follows what it found in the last frame (hands)."""
        return self._twin(self.encoder, self.landmarks, create_detector(self.detector_config, video=True))

    def _twin(self, encoder, landmarks, detector) -> "Pipeline":
        twin = Pipeline(encoder, self.detector_config, landmarks, self._landmark_source, self.choice)
        twin._detector, twin._calibration = detector, self._calibration
        return twin

    @property
    def detector(self):
        self._detector = self._detector or create_detector(self.detector_config)
        return self._detector

    fused = property(lambda self: self.landmarks is not None)

    def close(self) -> None:
        """Frees what its detector holds (a MediaPipe graph); for pipelines of one stream (for_video)."""
        if self._detector is not None and hasattr(self._detector, "close"):
            self._detector.close()

    def regions(self, image: ImageSource, every: bool = True, fallback: Optional[str] = None,
                name: Optional[str] = None) -> list[Region]:
        """The detections of an image in the detector's order (only the first unless every), cropped; the
        whole image when none is found and fallback == "whole", else []."""
        fallback = check_fallback(fallback)
        img = load_image(image, name=name)
        found: list[Detection] = self.detector(img)
        if not found:
            return [Region(whole(img).box, img, None, False)] if fallback == "whole" else []
        return [Region(d.box, d.crop(img), d.landmarks, whole=d.whole) for d in (found if every else found[:1])]

    def crops(self, image: ImageSource, every: bool = False, fallback: Optional[str] = None,
              name: Optional[str] = None) -> list[Region]:
        """Like regions(), but raises ImageError when nothing is found (and no fallback)."""
        found = self.regions(image, every, fallback, name)
        if not found:
            raise ImageError(f"{name or describe(image)}: no {self.detector_config['name']} found "
                             "(to take the whole image instead: fallback 'whole'; on the command line --fallback whole)")
        return found

    def embed_regions(self, crops: Sequence[ImageSource], landmarks: Optional[Sequence[Optional[np.ndarray]]] = None,
                      progress: bool = False) -> np.ndarray:
        """Vectors of images already cropped, as a gallery stores them: fused with the landmark
        embedding when the pipeline has a landmark encoder (landmarks found in each crop if not given)."""
        cnn = self.encoder.embed(list(crops), progress=progress)
        if self.landmarks is None:
            return cnn
        if landmarks is None:
            landmarks = [self._landmarks_in(c) for c in crops]
        return fuse(cnn, self.landmarks.encode(stack_landmarks(landmarks)), self.landmarks.weight)

    def _landmarks_in(self, crop: ImageSource) -> Optional[np.ndarray]:
        found = self.detector(load_image(crop))
        return found[0].landmarks if found else None

    def embed_images(self, images: Sequence[ImageSource], fallback: Optional[str] = None,
                     progress: bool = False) -> Embedded:
        """Each image by its first detection (or the whole image with fallback "whole"); a bad
        image, or one with nothing found and no fallback, gives a NaN row and its error."""
        return embed_images(self, images, fallback, progress)

    def query(self, gallery: Gallery, vectors: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Stored-form vectors ready to search the gallery with (rows without hand landmarks, or with no colour
        in a gallery in colour: index.colour_queries, rescaled to score by the CNN part alone) and their cohort offsets."""
        q = np.asarray(vectors, np.float32)
        if self.landmarks is not None and q.ndim == 2 and q.shape[1] == gallery.dim:
            q = query_form(q, self.encoder.dim, self.landmarks.weight)
        q = self._colour.form(gallery, q)
        spec = gallery.cohort_settings
        return q, (offsets(q, gallery.cohort, int(spec["top"])) if spec else None)

    def search(self, gallery: Gallery, queries: Queries, k: int = 5) -> list[SearchResult]:
        """For each query (a stored-form vector, or an image already cropped): the k nearest
        references and the k best labels."""
        k = check_k(k)
        if not len(gallery):
            raise GalleryError(f"gallery {gallery.path or '(unsaved)'}: is empty; enrol images first")
        check_fits(gallery, self.encoder, self.landmarks)  # before the work of embedding
        q, off = self.query(gallery, stored_form(queries, gallery.dim, gallery.path, self.fused) if _vectors(queries)
                            else self.embed_regions(image_list(queries, "queries")))
        return gallery.search(q, k, off)

    def match(self, gallery: Gallery, queries: Queries, threshold: Optional[float] = None) -> list[Match]:
        """search(k=1) plus the threshold: the best label, or "unknown" below it, and for a blank picture
        (embedder.images.blank: one flat colour, under 8 px a side) whatever it scores, as recognize answers."""
        cal = self.calibration(gallery)
        threshold = self.threshold(gallery) if threshold is None else threshold
        queries = queries if _vectors(queries) else image_list(queries, "queries")  # a generator, once
        results = self.search(gallery, queries, k=1)
        # Each picture read again, one at a time, rather than all of them kept from the search at once.
        whys = [None] * len(results) if _vectors(queries) else [blank(load_image(i)) for i in queries]
        return [blank_answer(gallery.match(r, threshold, cal), why) for r, why in zip(results, whys)]

    def threshold(self, gallery: Gallery) -> float:
        """The threshold searches use: the gallery's own automatic one when it has one and enough
        references to give it (Calibration.auto_threshold), else its stored one."""
        auto = self.calibration(gallery).auto_threshold if check_gallery(gallery).threshold_auto else None
        return gallery.threshold if auto is None else auto

    def calibration(self, gallery: Gallery) -> Calibration:
        """What the gallery's scores mean as a 0-1 confidence, from its own references (see
        index.confidence); worked out again only after the references, scoring or threshold change."""
        key = (check_gallery(gallery).revision, gallery.scoring, gallery.adapt, gallery.threshold, len(gallery))
        cached = self._calibration
        if cached is None or cached[0]() is not gallery or cached[1] != key:
            cal = calibrate(gallery, lambda v: self.query(gallery, v))
            self._calibration = cached = (weakref.ref(gallery), key, cal)
        return cached[2]

    def recognize(self, gallery: Gallery, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
                  fallback: Optional[str] = "whole", name: Optional[str] = None) -> list[Recognition]:
        """Detect, then search each detection: one answer per detection, in the detector's order. With nothing
        detected, the whole image is searched (found False) unless fallback is None: then []."""
        k = check_k(k)
        check_fits(gallery, self.encoder, self.landmarks)  # before the work of detecting
        return self.recognize_regions(gallery, self.regions(image, every=True, fallback=fallback, name=name), k, threshold)

    def recognize_regions(self, gallery: Gallery, found: Sequence[Region], k: int = 5,
                          threshold: Optional[float] = None) -> list[Recognition]:
        """Search regions already detected (Pipeline.regions): one answer each."""
        check_fits(gallery, self.encoder, self.landmarks)
        if not found:
            return []
        results = self.search(gallery, self.embed_regions([r.crop for r in found], [r.landmarks for r in found]), k)
        cal = self.calibration(gallery)
        threshold = self.threshold(gallery) if threshold is None else threshold
        return [Recognition(r.box, blank_answer(gallery.match(res, threshold, cal), why), res,
                            (r.landmarks is not None) if self.fused else None, r.found, cal, r.whole, why)
                for r, res in zip(found, results) for why in [blank(r.crop)]]

    def enroll(self, gallery: Gallery, label: str, images: Sequence[ImageSource], sources: Optional[Sequence[str]] = None,
               fallback: Optional[str] = None) -> list[int]:
        """Add the first detection of each image as a reference of `label`; an image with none
        raises ImageError unless fallback == "whole". Returns the new reference ids."""
        images = image_list(images)
        check_fits(gallery, self.encoder, self.landmarks)  # before the work of detecting
        sources = sources_of(one_each("sources", sources, len(images), "images"), len(images)) if sources is not None \
            else [describe(i) for i in images]  # as the gallery takes them: text or paths, not str(None)
        regions = [self.crops(i, fallback=fallback, name=n)[0] for i, n in zip(images, sources)]
        return self.enroll_regions(gallery, label, regions, sources)

    def enroll_regions(self, gallery: Gallery, label: str, regions: Sequence[Region], sources: Sequence[str],
                       vectors: Optional[np.ndarray] = None) -> list[int]:
        """vectors: the regions' own, when already made (embed_regions), else made here."""
        check_fits(gallery, self.encoder, self.landmarks)  # before the work of embedding
        crops = [r.crop for r in regions]
        if vectors is None:
            vectors = self.embed_regions(crops, [r.landmarks for r in regions], progress=len(crops) > 8)
        return gallery.enroll(label, vectors, sources, images=crops)


def _vectors(queries: Queries) -> bool:  # (N, D) float vectors, not (N, H, W, 3) pictures
    return isinstance(queries, np.ndarray) and queries.dtype.kind == "f" and queries.ndim == 2
