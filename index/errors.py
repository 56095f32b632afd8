"""Gallery errors; all are ByakuganError so the CLI reports them as one line with exit code 2."""

from byakugan.embedder.errors import ByakuganError, shown  # noqa: F401 (shown: index's modules import it here)


class GalleryError(ByakuganError):
    """A gallery is missing, empty, damaged, or asked for something it does not hold."""


class LandmarksNeedHandError(GalleryError):
    """Hand landmarks were asked for with a detector other than "hand"."""


class ModelMismatchError(GalleryError):
    """The model given to a gallery is not the one that built it."""


class NotInGalleryError(GalleryError):
    """A label, reference or sequence the gallery does not hold (HTTP 404)."""


class ReadOnlyGalleryError(GalleryError):
    """An edit of a gallery whose folder or disk this user cannot write (HTTP 409: the request is
    sound, the gallery's state refuses it); nothing was changed."""


class StoreError(GalleryError):
    """The vector store failed or refused (a Milvus database or server fault: a write it could not
    make, a file of its own damaged), not the request (HTTP 503)."""


class GalleryGoneError(GalleryError):
    """The gallery a server was started with was moved or deleted while it ran (the server's fault to
    report, not the request's)."""

