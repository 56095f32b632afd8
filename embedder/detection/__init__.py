"""Detectors, chosen by name: find the faces or hands to crop before embedding.

- none:       the whole image.
- anime-face: OpenCV LBP cascade `lbpcascade_animeface` (fetched once, see assets),
              box widened upward to take in the hair, as the projects before byakugan did.
- anime-face-verified: the same cascade, permissive, each candidate checked by a small CNN
              (faces.py, verifier.py): more faces found, fewer false ones, slower.
- anime-face-net: a small centre-point network on the EfficientNet-Lite0 trunk, trained on
              composed pictures (face_net.py): one pass (a second at another size where it finds
              nothing), no cascade.
- face:       OpenCV's frontal-face Haar cascade shipped in cv2.data (human faces).
- hand:       MediaPipe Hands, one padded box around both hands, with their landmarks (hands.py).
"""

from __future__ import annotations

from ..errors import ModelError
from .base import Detection, NoDetector, whole

__all__ = ["Detection", "create_detector", "list_detectors", "whole"]


def _anime_face(config: dict):
    from .cascade import anime_face

    return anime_face(config)


def _anime_face_verified(config: dict):
    from .faces import anime_face_verified

    return anime_face_verified(config)


def _anime_face_net(config: dict):
    from .face_net import anime_face_net

    return anime_face_net(config)


def _face(config: dict):
    from .cascade import face

    return face(config)


def _hand(config: dict, video: bool = False):
    from .hands import create_hand_detector

    return create_hand_detector(config, video)


def _none(config: dict) -> NoDetector:
    if unknown := sorted(set(config) - {"name"}):
        raise ModelError(f"detector none: no setting {unknown[0]!r}; it has none")
    return NoDetector()


_REGISTRY = {"none": _none, "anime-face": _anime_face, "anime-face-verified": _anime_face_verified,
             "anime-face-net": _anime_face_net, "face": _face, "hand": _hand}


def list_detectors() -> list[str]:
    return list(_REGISTRY)


def create_detector(name_or_config: str | dict | None = "none", video: bool = False):
    """A detector from its name, or from the config dict a gallery or bundle stored. video: for
    one stream of frames, following what it found in the last one where the detector can
    (MediaPipe's tracking mode for hands); the others work frame by frame either way."""
    config = {"name": name_or_config or "none"} if not isinstance(name_or_config, dict) else dict(name_or_config)
    name = config.get("name", "none")
    if name not in _REGISTRY:
        raise ModelError(f"unknown detector {name!r}; valid: {', '.join(list_detectors())}")
    try:
        return _REGISTRY[name](config, video) if name == "hand" else _REGISTRY[name](config)
    except TypeError as exc:
        raise ModelError(f"detector {name}: bad settings {config} ({exc})") from None

