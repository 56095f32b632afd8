"""The `hand` detector: MediaPipe Hands (mediapipe 0.10.21 ships the palm and landmark models in its
wheel), one padded box around the landmarks of both hands, since hand seals use two hands.

Also the landmark encoding: each hand's 21 points relative to its wrist and scaled to unit size,
left hand then right hand, with a presence flag each (128 numbers).
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import Detection, make_settings
from .quiet import native_stderr_filtered
from .requires import mediapipe_ready

LANDMARK_DIM = 2 * (1 + 21 * 3)
QUIET_CALLS = 20  # pictures searched with MediaPipe's notes held back, until one shows a hand
MAX_SIDE = 4096  # px: longer pictures are searched downscaled (MediaPipe works at a few hundred px anyway)


@dataclass(frozen=True)
class HandSettings:
    pad: float = 0.25  # grow the box by this share of its size on every side
    min_confidence: float = 0.5
    max_hands: int = 2
    # When no hand is found, look again with the edge pixels repeated outwards by this share of the
    # long side. MediaPipe's palm detector misses hands that fill a close-up; the border found one
    # in 99% of sign-digits images against 74% (benchmarks/hands.py reports it per dataset).
    retry_border: float = 0.25

    def __post_init__(self) -> None:
        from .cascade import check_settings  # the same one-line errors as the cascades' settings

        check_settings("hand", self, {"pad": (float, 0, 2), "min_confidence": (float, 0, 1), "max_hands": (int, 1, 10),
                                      "retry_border": (float, 0, 1)})


class HandDetector:
    name = "hand"

    def __init__(self, settings: HandSettings, video: bool = False) -> None:
        mp = mediapipe_ready(import_mediapipe)
        self.settings = settings
        self.config = {"name": self.name, "pad": settings.pad, "min_confidence": settings.min_confidence,
                       "max_hands": settings.max_hands, "retry_border": settings.retry_border}
        # Video mode is MediaPipe's tracking mode: the palm detector runs only when the hands of the
        # last frame are lost, the landmark model follows them in between (much cheaper per frame).
        self._video = video
        with native_stderr_filtered():
            self._hands = mp.solutions.hands.Hands(static_image_mode=not video, max_num_hands=settings.max_hands,
                                                   min_detection_confidence=settings.min_confidence)
            # The graph's threads start its models in the background and print as they do: one blank
            # picture waits for them inside the window.
            self._hands.process(np.zeros((64, 64, 3), np.uint8))
        self._quiet = QUIET_CALLS  # the first hand it finds prints one more note (quiet.py)
        self._lock = threading.Lock()  # a MediaPipe graph runs one image at a time

    def landmarks(self, img: Image.Image) -> list[tuple[str, np.ndarray]]:
        """(handedness, 21 x 3 landmarks in pixels, z scaled like x) for each hand found."""
        # MediaPipe's OpenCV code aborts the process on a side past 32767 px (the bordered retry
        # adds half): a picture is searched at most MAX_SIDE px long, its landmarks scaled back.
        scale = min(1.0, MAX_SIDE / max(img.size))
        small = img if scale == 1.0 else img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                                    Image.BILINEAR)
        rgb = np.asarray(small.convert("RGB"))
        hands = self._process(rgb, 0)
        # The bordered retry would feed the tracker a second, shifted picture: stills only.
        if not hands and self.settings.retry_border > 0 and not self._video:
            b = max(1, int(self.settings.retry_border * max(rgb.shape[:2])))
            hands = self._process(np.pad(rgb, ((b, b), (b, b), (0, 0)), mode="edge"), b)
        return hands if scale == 1.0 else [(side, pts / scale) for side, pts in hands]

    def _process(self, rgb: np.ndarray, border: int) -> list[tuple[str, np.ndarray]]:
        with self._lock:
            if not self._quiet:
                r = self._hands.process(rgb)
            else:  # a window of its own serialises every thread's stderr: only while a first hand is awaited
                with native_stderr_filtered():
                    r = self._hands.process(rgb)
                self._quiet = 0 if r.multi_hand_landmarks else self._quiet - 1
        if not r.multi_hand_landmarks:
            return []
        h, w = rgb.shape[:2]
        out = []
        for lm, hd in zip(r.multi_hand_landmarks, r.multi_handedness):
            pts = np.array([(p.x * w - border, p.y * h - border, p.z * w) for p in lm.landmark], np.float32)
            out.append((hd.classification[0].label, pts))
        return out

    def close(self) -> None:
        """Frees the MediaPipe graph (~70 MB and its threads) now rather than never."""
        with self._lock:
            self._hands.close()

    def __call__(self, img: Image.Image):
        hands = self.landmarks(img)
        if not hands:
            return []
        pts = np.concatenate([p for _, p in hands])
        x0, y0 = pts[:, :2].min(0)
        x1, y1 = pts[:, :2].max(0)
        pad = self.settings.pad * max(x1 - x0, y1 - y0)
        x0, y0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
        x1, y1 = min(img.width, int(x1 + pad + 1)), min(img.height, int(y1 + pad + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:  # a hand seen only in the repeated border
            return []
        return [Detection((x0, y0, x1 - x0, y1 - y0), 1.0, encode_landmarks(hands))]


# mediapipe 0.10.21's compiled module prints this when it meets protobuf 6 and then works on;
# users of the hand detector should not see an AttributeError on every command.
_IMPORT_NOISE = "'MessageFactory' object has no attribute 'GetPrototype'"


def import_mediapipe():
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            import mediapipe
    finally:
        rest = "".join(line for line in buf.getvalue().splitlines(True) if _IMPORT_NOISE not in line)
        if rest.strip():
            sys.stderr.write(rest)
    return mediapipe


def encode_landmarks(hands: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Position-, scale- and order-normalised landmarks of up to two hands (LANDMARK_DIM floats)."""
    out = np.zeros(LANDMARK_DIM, np.float32)
    # MediaPipe labels handedness as seen in a mirrored selfie; the label only needs to be consistent.
    ordered = sorted(hands, key=lambda h: (h[0] != "Left", float(h[1][0, 0])))[:2]
    for slot, (_, pts) in enumerate(ordered):
        rel = pts - pts[0]
        scale = float(np.linalg.norm(rel[:, :2], axis=1).max()) or 1.0
        base = slot * (1 + 21 * 3)
        out[base] = 1.0
        out[base + 1 : base + 1 + 63] = (rel / scale).reshape(-1)
    return out


def hand_settings(config: dict) -> HandSettings:
    """The settings a stored config asks for, checked without starting MediaPipe (seconds)."""
    settings = {k: v for k, v in config.items() if k != "name"}
    if {"pad", "min_confidence", "max_hands"} <= settings.keys() and "retry_border" not in settings:
        settings["retry_border"] = 0.0  # a gallery saved before the retry: crop queries as its references were
    return make_settings(HandSettings, settings, "hand")


def create_hand_detector(config: dict, video: bool = False) -> HandDetector:
    return HandDetector(hand_settings(config), video)
