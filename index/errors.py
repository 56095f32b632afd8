"""Gallery errors; all are ByakuganError so the CLI reports them as one line with exit code 2."""

from byakugan.embedder.errors import ByakuganError


class GalleryError(ByakuganError):
    """A gallery is missing, empty, damaged, or asked for something it does not hold."""


class LandmarksNeedHandError(GalleryError):
    """Hand landmarks were asked for with a detector other than "hand"."""


class ModelMismatchError(GalleryError):
    """The model given to a gallery is not the one that built it."""
