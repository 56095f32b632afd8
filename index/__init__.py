"""Vectors to matches: the gallery (labelled references in a vector store, persisted atomically),
the pipeline every image goes through, ranking, export bundles and the shared gallery service.

Names are imported on first use, so `byakugan.index.bundle` loads an exported bundle without torch.
"""

from importlib import import_module

_EXPORTS = {
    "GalleryError": "errors", "ModelMismatchError": "errors", "NotInGalleryError": "errors", "ReadOnlyGalleryError": "errors",
    "Gallery": "gallery", "GallerySettings": "settings",
    "Pipeline": "pipeline", "Region": "pipeline", "open_gallery": "opening", "editing": "opening",
    "UNKNOWN": "ranking", "Hit": "ranking", "Match": "ranking", "Recognition": "ranking", "Reference": "ranking",
    "SearchResult": "ranking",
    "FlatStore": "vectors", "VectorStore": "vectors", "PQStore": "quantised",
    "Sequence": "sequences", "SequenceMatcher": "sequences", "Smoother": "smoothing", "SmoothingSettings": "smoothing",
    "Tracker": "tracker", "TrackerSettings": "tracker", "FrameResult": "tracker", "Event": "tracker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
