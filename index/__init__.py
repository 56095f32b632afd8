"""The FAISS gallery of enrolled references: enrol, search, match, persist, export.

Names are imported on first use, so `index.bundle` loads an exported bundle without torch.
"""

from importlib import import_module

_EXPORTS = {
    "GalleryError": "errors", "ModelMismatchError": "errors",
    "Gallery": "gallery",
    "UNKNOWN": "search", "Hit": "search", "Match": "search", "Reference": "search", "SearchResult": "search",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'index' has no attribute {name!r}")
