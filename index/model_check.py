"""A pipeline's model: what counts as one, and whether it made a gallery's vectors (a vector of another
model, even one of the same length, ranks nonsense against them, so every search and enrolment checks
before it starts)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GalleryError, ModelMismatchError, shown


def gallery_model(settings: dict) -> str:
    """Where a gallery's model is found: the folder it was made from, wherever the gallery is opened,
    while that folder is there; else by its name (a shipped model, or one beside the working folder)."""
    source = settings.get("source")
    return source if isinstance(source, str) and Path(source).is_dir() else settings["name"]


def load_gallery_model(settings: dict):
    """The gallery's model (gallery_model); where the folder it was made from has gone and no model has
    its name, the error says so (searches may still run: they read the model's cached ONNX export)."""
    from byakugan.embedder.errors import ModelError

    try:
        return load_model(gallery_model(settings))
    except ModelError as exc:
        source = settings.get("source")
        if isinstance(source, str) and not Path(source).is_dir():
            raise ModelError(f"the gallery's model folder {source} is not there (moved or removed), so it was "
                             f"looked for by name: {exc}") from None
        raise


def check_gallery(gallery):
    """The gallery itself, once it is one: a path, say, is named (Pipeline methods take the gallery)."""
    if not hasattr(gallery, "model_settings"):
        raise GalleryError(f"gallery {shown(gallery)}: must be a Gallery (byakugan.index.Gallery.open(PATH)), "
                           f"not a {type(gallery).__name__}")
    return gallery


def check_fits(gallery, encoder, landmarks) -> None:
    """Raises ModelMismatchError unless `encoder` (and `landmarks`, for a fused gallery) are the
    models the gallery was built with, by fingerprint and dimension."""
    check_gallery(gallery)
    want = gallery.model_settings
    if encoder.fingerprint() != want["fingerprint"] or encoder.dim != want["dim"]:
        raise ModelMismatchError(
            f"gallery {gallery.path or '(unsaved)'}: built with model {want['name']!r} (fingerprint "
            f"{want['fingerprint']}, dim {want['dim']}), not with {encoder.name!r} (fingerprint {encoder.fingerprint()}, "
            f"dim {encoder.dim}); use the same model or enrol into a new gallery")
    spec = gallery.landmark_settings
    if (spec is None) != (landmarks is None) or (spec is not None and landmarks.fingerprint() != spec["fingerprint"]):
        have = "none" if landmarks is None else f"{landmarks.name!r} (fingerprint {landmarks.fingerprint()})"
        built = "none" if spec is None else f"{spec['name']!r} (fingerprint {spec['fingerprint']})"
        raise ModelMismatchError(f"gallery {gallery.path or '(unsaved)'}: built with landmark model {built}, "
                                 f"not {have}; use the same model or a new gallery")


def load_model(model):
    """A model given as a name, a folder or an embedder (None: the default model), as an embedder."""
    if model is None or isinstance(model, (str, os.PathLike)):
        import byakugan.embedder as embedder

        loaded = embedder.load(model or embedder.DEFAULT_MODEL)[0]
        folder = Path(model).expanduser() if model is not None else None
        if folder is not None and (folder / "config.json").is_file():  # as embedder.load finds a folder first
            loaded.source = str(folder.resolve())  # recorded, so its galleries find it from anywhere
        return loaded
    if not all(callable(getattr(model, a, None)) for a in ("embed", "fingerprint")):
        raise GalleryError(f"model {model!r:.60}: must be a model name, a model folder, or an embedder "
                           "(byakugan.embedder.load's first result)")
    return model
