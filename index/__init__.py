"""The FAISS gallery of enrolled references: enrol, search, match, persist."""

from .errors import GalleryError, ModelMismatchError
from .gallery import UNKNOWN, Gallery, Hit, Match, Reference, SearchResult

__all__ = ["Gallery", "GalleryError", "Hit", "Match", "ModelMismatchError", "Reference", "SearchResult", "UNKNOWN"]
