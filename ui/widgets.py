"""Small pieces the Streamlit page is built from: uploads, pictures with boxes, names that fit."""

from __future__ import annotations

import io
import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Optional

import streamlit as st
from PIL import Image, ImageDraw, ImageOps

from byakugan.embedder.errors import ByakuganError, ImageError
from byakugan.embedder.images import DEFAULT_MAX_PIXELS, FORMATS, IMAGE_SUFFIXES, load_image
from byakugan.index.labels import BIDI_CONTROLS
from byakugan.index.ranking import Recognition
from byakugan.ui import lettering

IMAGE_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES]


# Streamlit rewrites some text after the Markdown is parsed, where no escape reaches: a web or mail
# address becomes a link, :material/x: and :streamlit: pictures, " -> ", " <= " or " -- " arrows and a
# dash. A word joiner (U+2060: invisible, no line break) inside each such spelling keeps it as typed.
JOINER = "\u2060"
ADDRESS = re.compile(r"(?:https?://|www\.)[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.IGNORECASE)
PICTURE = re.compile(r":(?=material[/_]|streamlit:)")
ARROW = re.compile(r"(?:^|(?<=\s))([-<>~])(?=(?:>|-|=|->)(?:\s|$))")


def md(text: str) -> str:
    # Labels and names are the users' own text: shown literally, not as Markdown or Streamlit's :colour[...],
    # and a direction override in a file name (U+202E...) shown as such, not turning the line around.
    text = "".join(f"\\u{ord(c):04x}" if c in BIDI_CONTROLS else c for c in text)
    text = ADDRESS.sub(lambda m: m.group().replace(".", JOINER + "."), text)
    text = ARROW.sub(r"\1" + JOINER, PICTURE.sub(":" + JOINER, text))
    text = re.sub(r"([\\`*_\[\]<>#~|$:&])", r"\\\1", text)
    # at the start of a line "- x", "+ x" and "1. x" would be a list
    return re.sub(r"^(\s*\d+)([.)])", r"\1\\\2", re.sub(r"^(\s*)([-+])", r"\1\\\2", text))


def iso(text: str) -> str:
    """A label as md() shows it; one written right to left (Hebrew, Arabic) isolated (U+2068...U+2069),
    so it keeps its place in the line ("שלום · 3 reference(s)", not "3 · שלום reference(s)")."""
    rtl = any(unicodedata.bidirectional(c) in ("R", "AL") for c in text)
    return f"\u2068{md(text)}\u2069" if rtl else md(text)


def max_upload_mb() -> float:
    return float(os.environ.get("BYAKUGAN_MAX_UPLOAD_MB", "10"))


def default_gallery_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "byakugan" / "gallery"


def read_upload(upload) -> Optional[Image.Image]:
    """The uploaded image, or None after showing why it cannot be used."""
    limit = max_upload_mb()
    if upload.size > limit * 2**20:
        st.error(md(f"{upload.name}: {upload.size / 2**20:.1f} MB is over the {limit:g} MB limit"))
        return None
    try:
        return load_image(upload.getvalue(), name=upload.name)
    except ImageError as exc:
        st.error(md(str(exc)))
        return None


def _letters(text: str) -> list[str]:
    """`text` as the letters a reader sees: an accent, a variation selector, a skin tone or what a
    zero-width joiner joins stays with the letter before it, a flag's two halves together."""
    out: list[str] = []
    for c in text:
        o = ord(c)
        joined = out and (unicodedata.category(c) in ("Mn", "Mc", "Me") or c == "\u200d" or out[-1][-1] == "\u200d"
                          or 0xFE00 <= o <= 0xFE0F or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F
                          or (0x1F1E6 <= o <= 0x1F1FF and len(out[-1]) == 1 and 0x1F1E6 <= ord(out[-1]) <= 0x1F1FF))
        if joined:
            out[-1] += c
        else:
            out.append(c)
    return out


def _wide(letter: str) -> int:
    return 2 if unicodedata.east_asian_width(letter[0]) in ("W", "F") else 1


def short(name: str, width: int = 16) -> str:
    """A file name that fits in a list on one line (a long one wrapped over lines pushed the others apart):
    its start and its end (the extension), an ellipsis between, in `width` columns (CJK letters take two);
    a letter is never cut from its accent."""
    name = Path(name).name
    letters = _letters(name)
    if sum(map(_wide, letters)) <= width:
        return name
    # the end gets the larger part: numbered photos (IMG_0001.jpg, IMG_0002.jpg) differ there
    head, tail, room = [], [], width - 1 - min(8, width // 2)
    for letter in letters:
        if (room := room - _wide(letter)) < 0:
            break
        head.append(letter)
    room = min(8, width // 2)
    for letter in reversed(letters):
        if (room := room - _wide(letter)) < 0:
            break
        tail.insert(0, letter)
    return f"{''.join(head)}…{''.join(tail)}"


def at_width(image: Image.Image | bytes, width: int) -> Image.Image | bytes:
    """A picture st.image can show `width` pixels wide: a strip (3000 x 12) shown that narrow is less
    than a pixel tall, which Streamlit's resize refuses (an internal error where the page should be).
    Such a one gets see-through bands above and below; any other comes back as it was given."""
    img = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    need = -(-2 * img.width // max(1, min(width, img.width)))  # 2 pixels tall at the width shown
    return image if img.height >= need else ImageOps.pad(img.convert("RGBA"), (img.width, need), color=(0, 0, 0, 0))


def percents(a: float, b: float) -> tuple[str, str]:
    """Two confidences as percentages, with a decimal where whole ones would read alike ("unknown ·
    16%" beside "unknown below 16%" said a query as sure as the threshold was refused)."""
    places = 1 if f"{a:.0%}" == f"{b:.0%}" and a != b else 0
    return f"{a:.{places}%}", f"{b:.{places}%}"


def preview(img: Image.Image, side: int = 192) -> Image.Image:
    """A picture to show in a row of them at one width, no taller than wide: a tall one (a phone
    screenshot, a full-length figure) stood four times as tall as the rest and pushed the rows apart.
    Its sides are see-through; a picture as wide as tall or wider is shown as it is."""
    if img.height <= img.width:
        return img
    small = img.copy()
    small.thumbnail((side, side))
    return ImageOps.pad(small.convert("RGBA"), (side, side), color=(0, 0, 0, 0))


def transparent(upload) -> bool:
    """Whether an upload has see-through pixels, which load_image puts on white as the model sees them."""
    try:
        with Image.open(io.BytesIO(upload.getvalue()), formats=FORMATS) as img:
            if img.width * img.height > DEFAULT_MAX_PIXELS:  # refused by read_upload: not decoded here either
                return False
            if not (img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)):
                return False  # as images._to_rgb decides: other modes lose their alpha, not put on white
            return img.convert("RGBA").getchannel("A").getextrema()[0] < 255
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # not read: said by read_upload
        return False


# Streamlit refuses a file over the upload limit in the browser, where the page never sees it, and says
# so only in a tooltip on the file (the text is there for screen readers alone): shown under its name.
STYLE = """<style>
[data-testid="stFileChip"][aria-invalid="true"] { flex-wrap: wrap; }
[data-testid="stFileChip"] [role="alert"] { position: static; width: auto; height: auto; margin: 0;
  overflow: visible; clip: auto; white-space: normal; flex-basis: 100%; font-size: 0.8rem; }
</style>"""


def page_style() -> None:
    # Drawn last in the sidebar, out of the pages' way: st.html, whose styles go to Streamlit's event
    # container, made the camera widget drop the photo taken after "Clear photo".
    st.sidebar.markdown(STYLE, unsafe_allow_html=True)


def draw_boxes(img: Image.Image, detections: list[Recognition]) -> Image.Image:
    """The picture with each detection boxed and labelled in type that reads at any picture size."""
    out = img.convert("RGB")
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(img.size) / 200))
    size = max(14, round(max(img.size) / 28))
    for d in detections:
        if not d.found:  # the whole picture was searched: no box to draw
            continue
        x, y, w, h = d.box
        colour = (46, 160, 67) if d.match.known else (220, 50, 50)
        pen.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        text = f"{d.match.label} {d.match.confidence:.0%}" if d.match.confidence is not None else d.match.label
        patch = Image.fromarray(lettering.tag(text, size, (255, 255, 255), colour, width))
        # Above the box, else below it, else inside its top (a box as large as the picture: detector none)
        top = y - patch.height if y >= patch.height else y + h if y + h + patch.height <= out.height else y
        out.paste(patch, (x, top))
    return out


def what(svc) -> str:
    """What the gallery's detector finds, in a word for the page's text."""
    name = svc.pipeline.detector_config["name"]
    return {"anime-face": "face", "anime-face-verified": "face", "anime-face-net": "face", "none": "picture"}.get(name, name)


def page_ui(name: str, page, svc) -> None:
    """One page of the app, its errors in one line: ours (a gallery removed or damaged while the
    server runs, bad input) as they are, a fault of ours as its kind, its traceback in the log of the
    server running the page (Streamlit would show it to whoever has the page open)."""
    try:
        page(svc)
    except ByakuganError as exc:
        st.error(md(str(exc)))
    except Exception as exc:  # Streamlit's st.stop and reruns are BaseExceptions: they pass through
        logging.getLogger("byakugan.ui").exception("the %s page failed", name)
        st.error(f"Internal error ({type(exc).__name__}) on the {name} page; nothing half-done was saved. "
                 "The details are in the log of the server running this page.")
