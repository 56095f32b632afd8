"""byakugan's Streamlit page: search by image, enrol without retraining, manage and export the gallery.

Run with `byakugan ui` (sets BYAKUGAN_GALLERY / BYAKUGAN_MODEL and the upload limit). Model and
gallery code live in `byakugan.embedder` and `byakugan.index`; this file only lays out widgets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import streamlit as st
from PIL import Image, ImageDraw

from byakugan.embedder.errors import ByakuganError, ImageError
from byakugan.embedder.images import IMAGE_SUFFIXES, load_image
from byakugan.embedder.scoring import SCORINGS
from byakugan.index.ranking import Recognition
from byakugan.index.service import GalleryService

PAGES = ("Search", "Enrol", "Gallery", "Export")
IMAGE_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES]


def max_upload_mb() -> float:
    return float(os.environ.get("BYAKUGAN_MAX_UPLOAD_MB", "10"))


def default_gallery_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "byakugan" / "gallery"


@st.cache_resource(show_spinner="Loading the model…")
def get_service(gallery: str, model: Optional[str], detector: Optional[str]) -> GalleryService:
    # One per gallery for the whole server: it holds the model once and locks its own edits.
    return GalleryService(gallery, model, detector)


def read_upload(upload) -> Optional[Image.Image]:
    """The uploaded image, or None after showing why it cannot be used."""
    limit = max_upload_mb()
    if upload.size > limit * 2**20:
        st.error(f"{upload.name}: {upload.size / 2**20:.1f} MB is over the {limit:g} MB limit")
        return None
    try:
        return load_image(upload.getvalue(), name=upload.name)
    except ImageError as exc:
        st.error(str(exc))
        return None


def draw_boxes(img: Image.Image, detections: list[Recognition]) -> Image.Image:
    out = img.copy()
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(img.size) / 200))
    for d in detections:
        x, y, w, h = d.box
        pen.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 64, 64), width=width)
        pen.text((x + width + 2, y + width + 2), d.match.label, fill=(255, 64, 64))
    return out


def query_image_ui() -> Optional[Image.Image]:
    use_camera = st.toggle("Use the camera", key="use_camera")
    if use_camera:
        upload = st.camera_input("Take a picture", key="search_camera")
    else:
        upload = st.file_uploader("Image to search", type=IMAGE_TYPES, key="search_upload")
    return read_upload(upload) if upload is not None else None


def results_ui(svc: GalleryService, detections: list[Recognition]) -> None:
    g = svc.gallery()
    for n, d in enumerate(detections, 1):
        m = d.match
        verdict = m.label if m.known else f"unknown (nearest: {m.nearest})"
        st.subheader(f"Detection {n}: {verdict}")
        st.caption(f"best score {m.score:.3f}, threshold {m.threshold:.2f}"
                   + (" · no hand landmarks found: scored by the image alone" if d.landmarks is False else ""))
        for hit in d.hits:
            thumb, text = st.columns([1, 5])
            data = g.thumbnail(hit.id)
            if data:
                thumb.image(data, width=64)
            text.markdown(f"**{hit.label}** {hit.score:.3f} · reference {hit.id} · {hit.source}")
            text.progress(min(1.0, max(0.0, hit.score)))


def search_ui(svc: GalleryService) -> Optional[list[Recognition]]:
    st.header("Search by image")
    if not svc.labels():
        st.info("The gallery is empty: enrol some images on the Enrol page first.")
        return None
    k = st.slider("Matches to show", 1, 20, 5, key="search_k")
    img = query_image_ui()
    if img is None:
        return None
    try:
        detections = svc.search(img, k=k)
    except ByakuganError as exc:
        st.error(str(exc))
        return None
    st.image(draw_boxes(img, detections), width=min(480, img.width))
    results_ui(svc, detections)
    return detections


def enrol_ui(svc: GalleryService) -> Optional[list[int]]:
    st.header("Enrol a character or gesture")
    st.caption("Type a label (new or existing) and add a few images of it; no retraining needed.")
    label = st.text_input("Label", key="enrol_label").strip()
    round_ = st.session_state.setdefault("enrol_round", 0)  # a new key empties the uploader after enrolling
    uploads = st.file_uploader("Reference images", type=IMAGE_TYPES, accept_multiple_files=True,
                               key=f"enrol_upload_{round_}") or []
    images = [(u.name, img) for u in uploads if (img := read_upload(u)) is not None]
    if images:
        images = svc.crops(images)  # the largest detection of each, or the whole image when none
        st.write("What will be enrolled (the detector's crops):")
        cols = st.columns(min(6, len(images)))
        for i, crop in enumerate(images):
            cols[i % len(cols)].image(crop.image, caption=crop.name, width=96)
        if label:
            for warning in svc.check(label, images):
                st.warning(warning)
    ready = bool(label and images)
    if st.button(f"Enrol {len(images)} image(s)" + (f" as {label!r}" if label else ""), key="enrol_button", disabled=not ready):
        try:
            ids = svc.enroll(label, images)
        except ByakuganError as exc:
            st.error(str(exc))
            return None
        st.session_state["enrol_round"] = round_ + 1
        st.session_state["enrol_done"] = f"Enrolled {len(ids)} image(s) as {label!r}."
        st.rerun()
    if done := st.session_state.pop("enrol_done", None):
        st.success(done)
    return None


def gallery_ui(svc: GalleryService) -> None:
    st.header("Gallery")
    g = svc.gallery()
    labels = g.labels()
    st.caption(f"{svc.path} · model {g.model_name} · {len(g)} references in {len(labels)} classes")
    # With a cohort (models/anime) a score is a cosine less the query's likeness to other identities.
    unit = "cohort-normalised score" if g.cohort_settings else "cosine"
    value = st.number_input(f"Unknown threshold ({unit})", -1.0, 1.0, float(g.threshold), 0.01, key="threshold")
    if st.button("Save threshold", key="save_threshold"):
        _act(lambda: svc.set_threshold(value), f"Threshold set to {value:.2f}.")
    scorings = list(SCORINGS)
    scoring = st.radio("Rank labels by", scorings, index=scorings.index(g.scoring), horizontal=True, key="scoring",
                       captions=["best reference", "class mean (steadier with 5+ references)"])
    if scoring != g.scoring:
        _act(lambda: svc.set_scoring(scoring), f"Labels now ranked by {scoring}; re-check the threshold.")
    for label, count in labels.items():
        with st.expander(f"{label} · {count} reference(s)"):
            refs = g.references(label)
            cols = st.columns(8)
            for i, ref in enumerate(refs):
                data = g.thumbnail(ref.id)
                if data:
                    cols[i % 8].image(data, caption=f"#{ref.id}", width=72)
                else:
                    cols[i % 8].caption(f"#{ref.id} {Path(ref.source).name}")
            a, b, c = st.columns(3)
            new = a.text_input("Rename to", key=f"rename_{label}")
            if a.button("Rename", key=f"rename_btn_{label}", disabled=not new.strip()):
                _act(lambda: svc.rename(label, new), f"Renamed {label!r} to {new.strip()!r}.")
            ref_id = b.selectbox("Reference", [r.id for r in refs], key=f"ref_{label}")
            if b.button("Remove reference", key=f"rm_ref_{label}"):
                _act(lambda: svc.remove_reference(ref_id), f"Removed reference {ref_id}.")
            if c.button(f"Remove class {label!r}", key=f"rm_{label}", type="primary"):
                _act(lambda: svc.remove(label), f"Removed {label!r}.")
    if notice := st.session_state.pop("gallery_notice", None):
        st.success(notice)


def _act(fn, notice: str) -> None:
    try:
        fn()
    except ByakuganError as exc:
        st.error(str(exc))
        return
    st.session_state["gallery_notice"] = notice
    st.rerun()


def export_ui(svc: GalleryService) -> None:
    st.header("Export")
    st.caption("A bundle (ONNX model, FAISS index, labels, thresholds, manifest) that other services load "
               "with `byakugan.index.bundle.load` or serve with `byakugan serve`.")
    if not svc.labels():
        st.info("Nothing to export yet: the gallery is empty.")
        return
    if st.button("Build the bundle", key="build_bundle"):
        with st.spinner("Exporting…"):
            st.session_state["bundle"] = svc.export_bundle()
    if "bundle" in st.session_state:
        st.download_button("Download bundle (.zip)", st.session_state["bundle"], file_name="byakugan-bundle.zip",
                           mime="application/zip", key="download_bundle")


def main() -> None:
    st.set_page_config(page_title="byakugan", page_icon="👁", layout="wide")
    gallery = os.environ.get("BYAKUGAN_GALLERY") or str(default_gallery_dir())
    try:
        svc = get_service(gallery, os.environ.get("BYAKUGAN_MODEL") or None, os.environ.get("BYAKUGAN_DETECTOR") or None)
    except ByakuganError as exc:
        st.error(str(exc))
        st.stop()
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.caption(f"Gallery: {gallery}")
    {"Search": search_ui, "Enrol": enrol_ui, "Gallery": gallery_ui, "Export": export_ui}[page](svc)


main()
