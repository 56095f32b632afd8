"""Many images embedded at once for `byakugan embed` and `byakugan evaluate`: the pipeline's own
detect -> crop -> embed path, a chunk at a time, with a NaN row and its error for each image that
fails instead of stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from byakugan.embedder.embedding.progress import bar as progress_bar
from byakugan.embedder.errors import ImageError
from byakugan.embedder.images import ImageSource, describe, image_list
from byakugan.embedder.scoring.fusion import fuse, stack_landmarks

CHUNK = 256  # images decoded at a time


@dataclass(frozen=True)
class Embedded:
    """Images embedded one row each by their first detection (NaN rows where an image failed)."""

    vectors: np.ndarray  # as a gallery stores them: fused when the pipeline fuses landmarks
    cnn: np.ndarray  # the CNN part alone
    landmarks: Optional[np.ndarray]  # the landmark part alone (zero rows where none were found)
    errors: list[Optional[ImageError]]
    found: list[bool]  # whether the detector found something in each image
    detect_seconds: float


def embed_images(pipe, images: Sequence[ImageSource], fallback: Optional[str] = None,
                 progress: bool = False) -> Embedded:
    """pipe: an index.pipeline.Pipeline."""
    images = image_list(images)

    cnn = np.full((len(images), pipe.encoder.dim), np.nan, dtype=np.float32)
    marks: list = []
    found: list[bool] = []
    errors: list[Optional[ImageError]] = []
    spent = 0.0
    bar = progress_bar(len(images), progress, f"embedding ({pipe.detector_config['name']})")
    for start in range(0, len(images), CHUNK):  # only a chunk of decoded images is held at a time
        crops: list = []
        for image in images[start : start + CHUNK]:
            try:
                t = time.perf_counter()
                r = pipe.regions(image, every=False, fallback=fallback)
                spent += time.perf_counter() - t
                if not r:
                    raise ImageError(f"{describe(image)}: no {pipe.detector_config['name']} found "
                                     "(--fallback whole embeds the whole image)")
                crops.append(r[0].crop)
                marks.append(r[0].landmarks)
                found.append(r[0].found)
            except ImageError as exc:
                crops.append(exc)
                marks.append(None)
                found.append(False)
        cnn[start : start + len(crops)], chunk_errors = _embed_each(pipe.encoder, crops)
        errors += chunk_errors
        bar.update(len(crops))
    bar.close()
    lm = None
    vectors = cnn
    if pipe.landmarks is not None:
        lm = pipe.landmarks.encode(stack_landmarks(marks))
        vectors = fuse(cnn, lm, pipe.landmarks.weight)
    return Embedded(vectors, cnn, lm, errors, found, spent)


def _embed_each(encoder, images: list) -> tuple[np.ndarray, list[Optional[ImageError]]]:
    """Rows for the crops, NaN rows and their errors where an ImageError stands."""
    out = np.full((len(images), encoder.dim), np.nan, dtype=np.float32)
    errors: list[Optional[ImageError]] = [im if isinstance(im, ImageError) else None for im in images]
    ok = [i for i, e in enumerate(errors) if e is None]
    if ok:
        out[ok] = encoder.embed([images[i] for i in ok])
    return out, errors
