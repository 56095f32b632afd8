"""Test videos made at test time from still images (OpenCV's VideoWriter): each image shown for a
number of frames on a 640x480 black frame, as a webcam would show a hand held still."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

SIZE = (640, 480)
Still = Union[Path, np.ndarray, None]  # None: an empty frame (nothing to see)


def frame_of(image: Still, size: tuple[int, int] = SIZE, height: float = 0.8, shift: tuple[int, int] = (0, 0),
             edge: bool = False) -> np.ndarray:
    """The image (BGR), scaled to `height` of the frame's height (fitting its width), in the middle
    of a black frame (moved by shift pixels); edge: the image's border pixels fill the frame instead."""
    import cv2

    w, h = size
    if image is None:
        return np.zeros((h, w, 3), np.uint8)
    img = cv2.imread(str(image)) if isinstance(image, (str, Path)) else np.asarray(image)
    scale = min(height * h / img.shape[0], w / img.shape[1])
    img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    y = min(max(0, (h - img.shape[0]) // 2 + shift[1]), h - img.shape[0])
    x = min(max(0, (w - img.shape[1]) // 2 + shift[0]), w - img.shape[1])
    if edge:
        return cv2.copyMakeBorder(img, y, h - y - img.shape[0], x, w - x - img.shape[1], cv2.BORDER_REPLICATE)
    out = np.zeros((h, w, 3), np.uint8)
    out[y : y + img.shape[0], x : x + img.shape[1]] = img
    return out


def write_video(path: Path, segments: Sequence[tuple[Still, int]], fps: float = 15.0,
                size: tuple[int, int] = SIZE) -> Path:
    """segments: (image, frames to show it); written as MJPG .avi (or mp4v .mp4)."""
    import cv2

    codec = "MJPG" if path.suffix == ".avi" else "mp4v"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert out.isOpened(), f"cannot write {path}"
    for image, n in segments:
        frame = frame_of(image, size)
        for _ in range(n):
            out.write(frame)
    out.release()
    return path


def performance(order: Sequence[str], stills: dict[str, list[Path]], between: str | None, fps: float = 15.0,
                hold: float = 1.0, gap_frames: int = 3) -> list[tuple[Still, int]]:
    """Segments that show the labels of `order` for `hold` seconds each (a different still each
    time), with `gap_frames` frames of the label `between` (or nothing, None) between them."""
    segments: list[tuple[Still, int]] = []
    used = {k: 0 for k in stills}
    for i, label in enumerate(order):
        if i and gap_frames:
            other = None if between is None else stills[between][used[between] % len(stills[between])]
            if between is not None:
                used[between] += 1
            segments.append((other, gap_frames))
        segments.append((stills[label][used[label] % len(stills[label])], round(hold * fps)))
        used[label] += 1
    return segments
