"""Exceptions shared by every layer. Each message is one line naming the thing and the reason."""


def shown(value: object, n: int = 40) -> str:
    """repr of a value for an error message, cut to about n characters (a step may be 5,000)."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


class ByakuganError(Exception):
    """Base class: the CLI turns any of these into one line on stderr and exit code 2."""


class ByakuganWarning(UserWarning):
    """Something to know that did not stop the work; the CLI prints it as one warning line."""


class ImageError(ByakuganError):
    """An input image could not be used (missing, not an image, corrupt, too large)."""


class ModelError(ByakuganError):
    """A model could not be created or loaded, or does not fit what it is used with."""
