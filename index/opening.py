"""Opening a gallery folder for an edit, or making it on first use: what `byakugan enroll` does."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from . import store
from .errors import GalleryError
from .gallery import Gallery
from .milvus import check_store, store_name
from .pipeline import Pipeline


def open_gallery(path: os.PathLike | str, model=None, detector: Union[str, dict, None] = None,
                 landmarks="auto", create: bool = True, runtime: str = "torch",
                 vectors: Optional[str] = None, sample: Sequence = ()) -> tuple[Pipeline, Gallery]:
    """(pipeline, gallery) at path; with create, a new gallery when there is none (model, detector,
    landmarks and vectors, the store: index.milvus.check_store, apply only then; with no model and
    no detector, the images it is made with, `sample`, pick its model: Pipeline.create). runtime
    "onnx": the models on onnxruntime (Pipeline.onnx)."""
    if Gallery.exists(path) or not create:
        g = Gallery.open(path)
        name = detector.get("name") if isinstance(detector, dict) else detector
        if name is not None and name != g.detector_config["name"]:
            raise GalleryError(f"gallery {path}: its images are cropped with detector {g.detector_config['name']!r}, "
                               f"not {name!r}; omit --detector or use a new gallery")
        if isinstance(detector, dict) and detector.keys() - {"name"}:
            raise GalleryError(f"gallery {path}: keeps the detector settings it was made with; omit "
                               "--detector-setting or use a new gallery")
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


@contextlib.contextmanager
def editing(path: os.PathLike | str, waiting: Optional[Callable[[], None]] = None) -> Iterator[Gallery]:
    """An edit as the CLI, the page and the server make it: the gallery opened under its folder's
    lock, yielded, and saved when the block ends (nothing saved if it raises), so edits from other
    programs wait instead of making this one's save, or theirs, refused as stale. waiting: called
    once if another edit holds the lock."""
    if not isinstance(path, (str, os.PathLike)) or not Gallery.exists(path):
        Gallery.open(path)  # the precise "missing", "not a gallery" or "not a path" error, and no lock file made
    path = Path(path)
    with store.locked(path, waiting):
        g = Gallery.open(path)
        yield g
        g.save()
