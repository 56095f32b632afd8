"""Type for labels drawn on pictures (the page's boxes, an annotated video, the Live stream): a font
that has every letter of the label, so a name in Cyrillic, Greek or Hebrew, or in Japanese where
the system has a font for it, is drawn as written rather than as empty boxes or '?'.

DejaVu Sans comes with matplotlib (a dependency), so Latin, Greek and Cyrillic never depend on the
system; for other scripts the system's fonts (as matplotlib's font list finds them) are searched
for one that has the label's letters. Where none has them, matplotlib's Last Resort font draws a
placeholder naming the letter's script.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=64)
def _face(path: str):
    from matplotlib.ft2font import FT2Font

    try:
        return FT2Font(path)
    except (OSError, RuntimeError, ValueError):  # a font file matplotlib listed but cannot read now
        return None


def _has(path: str, letter: str) -> bool:
    face = _face(path)
    return face is not None and face.get_char_index(ord(letter)) != 0


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    """DejaVu Sans, then the system's fonts, then matplotlib's others, Last Resort (a placeholder box
    for every letter, shipped with matplotlib) last of all."""
    import matplotlib
    from matplotlib import font_manager

    ours = Path(matplotlib.get_data_path()).resolve()
    # Its own fonts are read from its folder, not only from its font list: a list cached by another
    # install of matplotlib (a venv since removed) may name none of them, and every label lost its letters.
    bundled = {str(f) for f in (ours / "fonts" / "ttf").glob("*.ttf")}
    first = str(ours / "fonts" / "ttf" / "DejaVuSans.ttf")
    if first not in bundled:
        first = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
    rest = sorted(({f.fname for f in font_manager.fontManager.ttflist} | bundled) - {first})
    return (first, *sorted(rest, key=lambda f: (ours in Path(f).resolve().parents, "lastresort" in f.lower())))


@lru_cache(maxsize=4096)
def font_file(letter: str) -> str:
    """The first font (DejaVu Sans, then the system's) that has `letter`."""
    fonts = _fonts()
    return next((f for f in fonts if _has(f, letter)), fonts[0])


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def runs(text: str) -> list[tuple[str, str]]:
    """`text` cut into runs of letters that one font has: [(font file, run)], in order."""
    out: list[tuple[str, str]] = []
    for c in text:
        f = font_file(c)
        if out and out[-1][0] == f:
            out[-1] = (f, out[-1][1] + c)
        else:
            out.append((f, c))
    return out


def tag(text: str, size: int, colour: tuple[int, int, int], background: tuple[int, int, int],
        pad: int = 2) -> np.ndarray:
    """`text` in `colour` on a `background` box `pad` pixels wider each side, as an RGB array; each
    run of letters in a font that has them, on one baseline."""
    parts = [(_font(f, max(1, int(size))), t) for f, t in runs(text)] or [(_font(_fonts()[0], max(1, int(size))), "")]
    ascent = max(f.getmetrics()[0] for f, _ in parts)
    descent = max(f.getmetrics()[1] for f, _ in parts)
    width = sum(f.getlength(t) for f, t in parts)
    img = Image.new("RGB", (max(1, round(width)) + 2 * pad, ascent + descent + 2 * pad), background)
    pen, x = ImageDraw.Draw(img), float(pad)
    for f, t in parts:
        pen.text((x, pad + ascent), t, fill=colour, font=f, anchor="ls")
        x += f.getlength(t)
    return np.asarray(img)


def paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Copy `patch` into `frame` (same channel order) with its top left at (x, y), cut at the edges."""
    h, w = frame.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + patch.shape[1]), min(h, y + patch.shape[0])
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]
