"""Opening a gallery folder for an edit, or making it on first use: what `byakugan enroll` does."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from . import store
from .errors import GalleryError
from .gallery import Gallery
from .milvus import check_store, store_name
from .pipeline import Pipeline


def open_gallery(path: os.PathLike | str, model=None, detector: Optional[str] = None,
                 landmarks="auto", create: bool = True, runtime: str = "torch",
                 vectors: Optional[str] = None, sample: Sequence = ()) -> tuple[Pipeline, Gallery]:
    """(pipeline, gallery) at path; with create, a new gallery when there is none (model, detector,
    landmarks and vectors, the store: index.milvus.check_store, apply only then; with no model and
    no detector, the images it is made with, `sample`, pick its model: Pipeline.create). runtime
    "onnx": the models on onnxruntime (Pipeline.onnx)."""
    if Gallery.exists(path) or not create:
        g = Gallery.open(path)
        if detector is not None and detector != g.detector_config["name"]:
            raise GalleryError(f"gallery {path}: its images are cropped with detector {g.detector_config['name']!r}, "
                               f"not {detector!r}; omit --detector or use a new gallery")
        if vectors is not None and check_store(vectors) != store_name(g.vectors):
            raise GalleryError(f"gallery {path}: keeps its vectors in {store_name(g.vectors)}, not {vectors}; "
                               "omit --store or use a new gallery")
        return Pipeline.for_gallery(g, model, runtime), g
    if vectors is not None:
        check_store(vectors)  # before anything is made
    store.check_new(path)
    pipe = Pipeline.create(model, detector or "none", landmarks, sample)
    g = pipe.new_gallery(path, store=vectors or "faiss")  # from the torch model: its config holds the threshold and scoring advice
    return (pipe.onnx() if runtime == "onnx" else pipe), g
