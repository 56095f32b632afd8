"""The pictures the pages are given, kept in the session: the Enrol page's files and photos until they
are enrolled or forgotten, the Search page's query until another replaces it or it is forgotten.
Streamlit keeps a widget's value only while the widget is drawn, so an upload was lost on going to
another page and back; what the uploader (or camera) holds is copied on the way out."""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import streamlit as st

from byakugan.ui.widgets import IMAGE_TYPES, md, short

KEPT = "enrol_kept"  # (name, digest) -> Kept: uploads that outlived their uploader
QUERY = "search_kept"  # Kept: the Search page's last picture, past its uploader or camera
QUERY_WIDGETS = {"search_upload": None, "search_camera": "camera.jpg"}  # key -> the name a kept one goes by


class Kept:
    """An upload's name and bytes past its uploader: what read_upload takes (name, size, getvalue())."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.size, self._data = name, len(data), data

    def getvalue(self) -> bytes:
        return self._data


def _key(upload) -> tuple[str, str]:
    return upload.name, hashlib.sha256(upload.getvalue()).hexdigest()


def uploader_key(round_: int) -> str:
    return f"enrol_upload_{round_}"  # a new round, a new key: an empty uploader after enrolling


def keep(page: str) -> None:
    """On any run that does not draw the Enrol page, the files its uploader held on the last run are
    kept: this run is the last that can read them (the widget's value goes when the run ends); on any
    that does not draw the Search page, its picture."""
    if page != "Search":
        keep_query(drawn=None)
    if page == "Enrol":
        return
    held = st.session_state.get(uploader_key(st.session_state.get("enrol_round", 0))) or []
    kept = st.session_state.setdefault(KEPT, {})
    for upload in held:
        kept.setdefault(_key(upload), Kept(upload.name, upload.getvalue()))


def keep_query(drawn: Optional[str]) -> None:
    """The picture held by the Search page's uploader or camera, whichever is not drawn this run (neither
    on another page; the uploader on turning the camera on), kept: it replaces the one kept before."""
    for key, name in QUERY_WIDGETS.items():
        if key != drawn and (held := st.session_state.get(key)) is not None:
            st.session_state[QUERY] = Kept(name or held.name, held.getvalue())


def forget() -> None:
    """After enrolling: nothing kept, no photo taken."""
    st.session_state[KEPT] = {}
    st.session_state["enrol_shots"] = {}


def kept_ui(names: list[str], until: str, button: str, key: str, on_forget: Callable[[], None], where=st) -> None:
    """"Kept from before, until ...: names" and a button that forgets them (before the run it starts)."""
    a, b = where.columns([3, 1])
    a.caption(f"Kept from before, until {until}: " + ", ".join(md(short(n, 24)) for n in names),
              help=", ".join(md(n) for n in names))
    b.button(button, key=key, on_click=on_forget)


def enrol_pictures_ui(round_: int) -> list:
    """Kept uploads, files in the uploader and camera shots, as (name, upload) to read."""
    kept = st.session_state.setdefault(KEPT, {})
    if kept:
        kept_ui([k.name for k in kept.values()], f"enrolled or forgotten ({len(kept)})", "Forget them",
                "enrol_forget_kept", lambda: st.session_state[KEPT].clear())
    uploads = st.file_uploader("Reference images", type=IMAGE_TYPES, accept_multiple_files=True,
                               key=uploader_key(round_)) or []
    shots = st.session_state.setdefault("enrol_shots", {})
    if st.toggle("Take pictures with the camera", key="enrol_use_camera"):
        shot = st.camera_input("Take a picture, then another: each one is added", key=f"enrol_camera_{round_}")
        # A shot stays the widget's value on every rerun until cleared: added once. Two shots of a still
        # scene can be the same file (the same id), so "new" means "since the last one was cleared".
        last = st.session_state.get("enrol_last_shot")
        if shot is not None and shot.file_id != last:
            shots[len(shots)] = shot
        st.session_state["enrol_last_shot"] = None if shot is None else shot.file_id
        if shots and st.button(f"Forget the {len(shots)} picture(s) taken", key="enrol_forget_shots"):
            shots.clear()
            st.rerun()
    # the same file uploaded again after coming back: once (hashed only when anything is kept)
    fresh = [u for u in uploads if _key(u) not in kept] if kept else uploads
    return ([(k.name, k) for k in kept.values()] + [(u.name, u) for u in fresh]
            + [(f"camera-{n}.jpg", s) for n, s in enumerate(shots.values(), 1)])


def search_picture_ui():
    """The picture to search: a new upload or photo, else the one kept from before (shown as such)."""
    camera = st.toggle("Use the camera", key="use_camera")
    key = "search_camera" if camera else "search_upload"
    keep_query(drawn=key)
    above = st.container()  # the kept picture's line, above the widget that may replace it
    if camera:
        picture = st.camera_input("Take a picture", key=key)
    else:
        picture = st.file_uploader("Image to search", type=IMAGE_TYPES, key=key)
    if picture is not None:  # a new one: nothing kept from before any more
        st.session_state.pop(QUERY, None)
        return picture
    if (kept := st.session_state.get(QUERY)) is not None:
        kept_ui([kept.name], "another is chosen or it is forgotten", "Forget it", "search_forget_kept",
                lambda: st.session_state.pop(QUERY, None), where=above)
    return kept
