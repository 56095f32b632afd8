"""byakugan's Streamlit page: search by image, enrol without retraining, manage the gallery, follow a
webcam live (ui/live.py) and export.

Run with `byakugan ui` (sets BYAKUGAN_GALLERY / BYAKUGAN_MODEL and the upload limit). Model and
gallery code live in `byakugan.embedder` and `byakugan.index`; this file only lays out widgets.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import streamlit as st

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.scoring import SCORINGS
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.index.ranking import Recognition
from byakugan.index.service import GalleryService
from byakugan.ui.acting import (RENAME, act, class_error, notices, on_click, removed_class, rename_class, renamed, synced,
                                undoable)
from byakugan.ui.classes import FIND, PAGE, classes_ui, first, more_ui
from byakugan.ui.live import live_ui
from byakugan.ui.threshold import threshold_ui
from byakugan.index.labels import check_label, check_label_in
from byakugan.ui.uploads import enrol_pictures_ui, forget, keep, search_picture_ui
from byakugan.ui.widgets import (at_width, default_gallery_dir, draw_boxes, iso, md, page_style, page_ui, percents, preview,
                                 read_upload, short, transparent, what)

PAGES = ("Search", "Enrol", "Gallery", "Live", "Export")
TYPED = ("enrol_label", "live_seq_name", "live_seq_steps", "live_seq_replace",  # and each class's RENAME box
         "search_k", "use_camera", "enrol_use_camera", "live_embed_every", "live_window", "live_max_gap",
         FIND, PAGE)  # and chosen


@st.cache_resource(show_spinner="Loading the model…")
def get_service(gallery: str, model: Optional[str], detector: Optional[str]) -> GalleryService:
    # One per gallery for the whole server: it holds the model once and locks its own edits.
    return GalleryService(gallery, model, detector)


def results_ui(svc: GalleryService, detections: list[Recognition]) -> None:
    g = svc.gallery()
    for n, d in enumerate(detections, 1):
        m = d.match
        if not d.found:
            st.info(f"No {what(svc)} found in the picture: searched the whole picture instead.")
        elif d.whole:
            st.info(f"The whole picture was taken as the {what(svc)}: it fills the picture.")
        if d.blank:  # answered unknown whatever it scored (index.results.blank_answer): said why
            whole = not d.found or d.whole or g.detector_config["name"] == "none"
            st.warning(f"This {'picture' if whole else 'crop'} is blank ({md(d.blank)}): "
                       "answered unknown, whatever it looks most like.")
        prefix = f"Detection {n}: " if len(detections) > 1 else ""
        sure, needed = percents(m.confidence, m.threshold_confidence)
        st.subheader(f"{prefix}{iso(m.label) if m.known else 'unknown'} · {sure}")
        st.caption((f"confident it is {iso(m.label)}" if m.known else f"looks most like {iso(m.nearest)}, but "
                    + ("the crop is blank" if d.blank else "below the threshold"))
                   + f" · unknown below {needed}"
                   + (" · no hand landmarks found: scored by the image alone" if d.landmarks is False else ""))
        nearest = {}
        for hit in d.hits:
            nearest.setdefault(hit.label, hit)
        rows = [st.columns(5) for _ in range(0, len(d.labels), 5)]  # 5 a row: 20 columns would be slivers
        for col, (label, score) in zip((c for row in rows for c in row), d.labels):
            confidence = d.calibration.confidence(score)
            hit = nearest.get(label)  # its best reference among the hits, else any of its references
            ref_id = hit.id if hit is not None else next((r.id for r in g.references(label)), None)
            if ref_id is not None and (data := g.thumbnail(ref_id)):
                col.image(at_width(data, 96), width=96)
            col.markdown(f"**{iso(label)}** {confidence:.0%}")
            col.progress(confidence)
        with st.expander("Raw scores"):
            st.caption(f"best {m.score:.4f} (cosine {m.cosine:.4f}), threshold {m.threshold:.4f}; "
                       f"{'calibrated on the gallery' if d.calibration.fitted else 'not calibrated yet (' + md(d.calibration.reason) + ')'}")
            for hit in d.hits:  # a long source cut in the middle, whole in its tooltip
                source = short(hit.source, 40)
                st.text(f"{hit.score:.4f}  {hit.label}  reference {hit.id}  {source}",
                        help=None if source == hit.source else md(hit.source))


def search_ui(svc: GalleryService) -> Optional[list[Recognition]]:
    st.header("Search by image")
    if not svc.labels():
        st.info("The gallery is empty: enrol some images on the Enrol page first.")
        return None
    st.session_state.setdefault("search_k", 5)  # kept across pages (TYPED): a default given too would warn
    k = st.slider("Matches to show", 1, 20, key="search_k")
    upload = search_picture_ui()
    if upload is None or (img := read_upload(upload)) is None:
        return None
    try:
        detections = svc.search(img, k=k)
    except ByakuganError as exc:
        st.error(md(str(exc)))
        return None
    left, right = st.columns([2, 3])
    left.image(at_width(draw_boxes(img, detections), 480), width=min(480, img.width))
    see_through_ui(left, [upload])
    with right:
        results_ui(svc, detections)
    return detections


def see_through_ui(where, uploads) -> None:
    if any(transparent(u) for u in uploads):  # shown as embedded: the white is no fault of the preview
        where.caption("Transparent parts are shown on white, as the model sees them.")


def enrol_ui(svc: GalleryService) -> None:
    st.header("Enrol a character or gesture")
    svc.labels()  # a gallery moved or removed while the page runs is said now, not once a label is typed
    st.caption("Type a label (new or existing) and add a few images of it; no retraining needed.")
    label = st.text_input("Label", key="enrol_label").strip()
    round_ = st.session_state.setdefault("enrol_round", 0)  # a new key empties the uploader after enrolling
    named = enrol_pictures_ui(round_)
    crops = svc.crops([(name, img) for name, u in named if (img := read_upload(u)) is not None])
    if crops:
        cropping = svc.pipeline.detector_config["name"] != "none"
        cut = [md(c.name) for c in crops if short(c.name, 12) != c.name]  # names cut under their pictures: whole here
        st.markdown(f"What will be enrolled: the {what(svc)} found in each picture, or the whole picture where none is"
                    if cropping else "What will be enrolled:", help=", ".join(cut) or None)
        cols = st.columns(min(6, len(crops)))
        for i, crop in enumerate(crops):
            found = (f" · {what(svc)} found" if crop.found else f" · no {what(svc)}: whole picture") if cropping else ""
            # The name in the picture's own caption, which shows with the picture: as a caption of its own it
            # showed before, and a photo taken right after "Clear photo" on seeing it was lost to the run still going.
            cols[i % len(cols)].image(at_width(preview(crop.image), 96), caption=md(short(crop.name, 12)) + found, width=96)
        see_through_ui(st, [u for _, u in named])
        if (choice := svc.choice_for(crops)) is not None:  # a new gallery's model, kept once these are enrolled
            st.caption(f"A new gallery: these will be embedded with model {choice.name} ({choice.why}); it keeps it.")
        if label:
            for warning in svc.check(label, crops):
                st.warning(md(warning))
    bad = None
    try:  # a label the gallery would refuse is said before any image is embedded
        label = check_label_in(label, svc.labels()) if label else label
    except ByakuganError as exc:
        bad = str(exc)
        st.error(md(bad))
    ready = bool(label and crops and not bad)
    text = f"Enrol {len(crops)} image(s) as {md(repr(label))}" if ready else "Enrol (add a label and images first)"
    if st.button(text, key="enrol_button", disabled=not ready, type="primary"):
        bar = st.progress(0.0, text="Embedding…")
        try:
            ids = svc.enroll(label, crops, progress=lambda done, total: bar.progress(done / total, f"Embedded {done} of {total}"))
        except ByakuganError as exc:
            st.error(md(str(exc)))
            return
        st.session_state["enrol_round"] = round_ + 1
        forget()
        st.session_state["enrol_done"] = f"Enrolled {len(ids)} image(s) as {label!r}."
        st.rerun()
    if done := st.session_state.pop("enrol_done", None):
        st.success(md(done))
        st.button("Search now →", key="to_search", on_click=lambda: st.session_state.update(page="Search"))


def gallery_ui(svc: GalleryService) -> None:
    st.header("Gallery")
    g = svc.gallery()
    labels = g.labels()
    chosen = svc.pipeline.choice
    model = ("model picked by the first images enrolled (anime faces get the anime model)" if svc.undecided
             else f"model {g.model_name}" + (f" (picked by the first images enrolled: {chosen.why})"
                                              if chosen is not None and chosen.name == g.model_name else ""))
    st.caption(f"{md(str(svc.path))} · {model} · {len(g)} references in {len(labels)} classes")
    # A notice and the Undo button come and go: each keeps its place (an empty one when absent), or the
    # classes below would move and Streamlit would draw them anew, closing the one being edited.
    if not labels:
        st.info("The gallery is empty: enrol some images on the Enrol page first.")
    notices(st.empty(), labels)
    with st.container():
        undo_ui(svc)
    if labels:
        threshold_ui(svc)
    if svc.undecided:  # its scoring comes with the model the first images pick
        return
    synced("scoring", g.scoring)
    scoring = st.radio("Rank labels by", list(SCORINGS), horizontal=True, key="scoring",
                       captions=["best reference", "class mean (steadier with 5+ references)"])
    if scoring != g.scoring:
        act(svc, lambda: svc.set_scoring(scoring), f"Labels now ranked by {scoring}." + ("" if g.threshold_auto else
            " The threshold was set by hand for the other ranking: check it with `byakugan evaluate` on pictures "
            "like this gallery's (as the command line says)."), widget="scoring")
    if g.adapt:
        st.caption(f"Each label's score is adapted to this gallery's classes (a ridge regression on its references, "
                   f"{md(str(Adaptation.from_dict(g.adapt)))}); `byakugan scoring GALLERY --no-adapt` turns it off.")
    if g.colourless_queries:
        st.caption("A picture without colour (a manga panel) searched here scores by its CNN part alone, leaving out "
                   "the colour histogram, while most references have colour; `byakugan scoring GALLERY --grey-queries "
                   "all` scores it as any other.")
    editing = st.session_state.get("editing")
    for key in [k for k in st.session_state if k.startswith(RENAME) and json.loads(k[len(RENAME):]) not in labels]:
        del st.session_state[key]  # a name typed for a class gone since (renamed, removed) is not kept for a later one
    for label in classes_ui(labels):
        count = labels[label]
        # Keyed by its label: a panel drawn again with another count (an edit in another tab) stays as it was.
        failed = (st.session_state.get("gallery_error") or ("", None))[1] == label  # its panel open, to say why
        with st.expander(f"{iso(label)} · {count} reference(s)", expanded=label == editing or failed,
                         key=f"class_{json.dumps(label)}"):
            cols = st.columns(6)  # 6 a row: "#id name" fits one line under each (at 8, even IMG_1121.jpg wrapped)
            refs = g.references(label)
            for i, ref in enumerate(first(label, refs)):
                col = cols[i % 6]
                if data := g.thumbnail(ref.id):
                    col.image(at_width(data, 72), width=72)
                # one line under its picture (a name over two pushed the row apart); whole on Remove's tooltip
                col.caption(f"#{ref.id} {md(short(ref.source, 12))}", wrap=False)
                col.button("Remove", key=f"rm_ref_{ref.id}", help=f"Reference {ref.id}: {md(ref.source)}", on_click=on_click, args=(
                    svc, lambda r=ref.id: svc.remove_reference(r),
                    lambda r=ref.id, label=label: f"Removed reference {r} from {label!r}.", lambda label=label: label))
            more_ui(label, refs)
            a, b = st.columns(2)
            typed = RENAME + json.dumps(label)
            new = a.text_input("Rename to", key=typed)
            a.button("Rename", key=f"rename_btn_{json.dumps(label)}", disabled=not new.strip(), on_click=on_click, args=(
                svc, lambda label=label, typed=typed: rename_class(svc, label, st.session_state[typed]),
                lambda label=label, typed=typed: renamed(svc, label, st.session_state[typed]),
                lambda typed=typed: check_label(st.session_state[typed]), label))  # as stored (NFC): the class to show
            # The count is in the key: references added since it was ticked (another tab) untick it, and
            # the removal itself refuses a class that holds another number than the one shown.
            sure = b.checkbox(f"Remove all {count} reference(s) of {md(repr(label))}", key=f"rm_sure_{json.dumps(label)}_{count}")
            b.button("Remove class", key=f"rm_{json.dumps(label)}", disabled=not sure, on_click=on_click, args=(
                svc, lambda label=label, count=count: svc.remove(label, count),
                lambda label=label, count=count: removed_class(svc, label, count), lambda: None, label))
            if error := class_error(label):
                st.error(md(error))


def undo_ui(svc: GalleryService) -> None:
    if (removed := undoable(svc)) is not None and st.button(
            f"Undo: put back {len(removed.sources)} reference(s) of {md(repr(removed.label))}", key="undo_remove",
            help="Offered until the gallery is edited again (here or elsewhere) or this page is reloaded: the "
                 "removed references are held by this page, not saved."):
        act(svc, lambda: svc.restore(removed), f"Put back {len(removed.sources)} reference(s) of {removed.label!r}.",
            removed.label)


def export_ui(svc: GalleryService) -> None:
    st.header("Export")
    st.caption("A bundle (ONNX model, FAISS index, labels, thresholds, manifest) that other services load "
               "with `byakugan.index.bundle.load` or serve with `byakugan serve`.")
    if not svc.labels():
        st.info("Nothing to export yet: the gallery is empty.")
        return
    built = st.session_state.get("bundle")
    if built is not None and built[0] != svc.version():  # never hand out a bundle of an older gallery
        del st.session_state["bundle"]
        built = None
        st.info("The gallery changed since the bundle was built: build it again.")
    if st.button("Build the bundle", key="build_bundle"):
        with st.spinner("Exporting…"):
            version = svc.version()
            built = st.session_state["bundle"] = (version, svc.export_bundle())
    if built is not None:  # made at the click: a gallery edited since (another tab, the CLI) is exported again
        st.download_button("Download bundle (.zip)", lambda: built[1] if svc.version() == built[0] else svc.export_bundle(),
                           file_name="byakugan-bundle.zip", mime="application/zip", key="download_bundle")


def main() -> None:
    st.set_page_config(page_title="byakugan", page_icon="👁", layout="wide")
    gallery = os.environ.get("BYAKUGAN_GALLERY") or str(default_gallery_dir())
    try:
        svc = get_service(gallery, os.environ.get("BYAKUGAN_MODEL") or None, os.environ.get("BYAKUGAN_DETECTOR") or None)
    except ByakuganError as exc:
        st.error(md(str(exc)))
        st.stop()
    # Streamlit forgets a widget's value on a run that does not draw it: what was typed on another page
    # is set again here, so it is still there on coming back (uploads cannot be set: keep() copies them).
    for key in [k for k in st.session_state if k in TYPED or k.startswith(RENAME)]:
        st.session_state[key] = st.session_state[key]
    page = st.sidebar.radio("Page", PAGES, key="page")
    keep(page)
    st.sidebar.caption(f"Gallery: {md(gallery)}")
    page_style()
    page_ui(page, {"Search": search_ui, "Enrol": enrol_ui, "Gallery": gallery_ui, "Live": live_ui, "Export": export_ui}[page], svc)


main()
