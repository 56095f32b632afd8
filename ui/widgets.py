"""Small pieces the Streamlit page is built from: uploads, pictures with boxes, names that fit."""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Optional

import streamlit as st
from PIL import Image, ImageDraw

from byakugan.embedder.errors import ByakuganError, ImageError
from byakugan.embedder.images import IMAGE_SUFFIXES, load_image
from byakugan.index.labels import BIDI_CONTROLS
from byakugan.index.ranking import Recognition
from byakugan.ui import lettering

IMAGE_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES]


def md(text: str) -> str:
    # Labels and names are the users' own text: shown literally, not as Markdown or Streamlit's :colour[...],
    # and a direction override in a file name (U+202E...) shown as such, not turning the line around.
    text = "".join(f"\\u{ord(c):04x}" if c in BIDI_CONTROLS else c for c in text)
    return re.sub(r"([\\`*_\[\]<>#~|$:])", r"\\\1", text)


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


def short(name: str, width: int = 16) -> str:
    """A file name that fits under a small preview: the start and the end, an ellipsis between."""
    name = Path(name).name
    return name if len(name) <= width else f"{name[: width - 7]}…{name[-6:]}"


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
