"""How the page edits a gallery: one action at a time, its notice shown after the rerun it asks for,
and an undo offered for a removal only while the gallery is as that removal left it."""

from __future__ import annotations

import json
from typing import Callable, Optional

import streamlit as st

from byakugan.embedder.errors import ByakuganError
from byakugan.index.service import GalleryService, Removed
from byakugan.ui.widgets import iso, md, short

# A class's widgets are keyed by its label as JSON, which no other key's form can spell ("rm_sure_a_2" was
# both the tick of class "a" with 2 references and the button of a class named "sure_a_2").
RENAME = "rename_to_"
# Streamlit draws what a closed panel holds all the same: 2,000 references took 25 s a rerun (each key typed).
LAZY_OVER = 300  # references in the gallery, beyond which a class's panel is drawn only while open
PER_CLASS = 60  # pictures shown in a class's panel until "Show all"


def synced(key: str, on_disk) -> None:
    """The widget `key` shows the gallery's value, as this session last saw it, unless the user
    changed it here: a save from another tab is shown, never undone by this tab's next rerun."""
    if key not in st.session_state or st.session_state.get(f"{key}_seen") != on_disk:
        st.session_state[key] = on_disk
    st.session_state[f"{key}_seen"] = on_disk


def act(svc: GalleryService, fn, notice: str, editing: Optional[str] = None) -> None:
    """Run an edit; its error in one line, or its notice after a rerun. editing: the class to keep open."""
    try:
        out = fn()
    except ByakuganError as exc:
        st.error(md(str(exc)))
        return
    _done(svc, out, notice, editing)
    st.rerun()


def on_click(svc: GalleryService, fn, notice: Callable[[], str], editing: Callable[[], Optional[str]] = lambda: None) -> None:
    """act() as a button's callback, for buttons of one class or reference. A callback runs before the
    rerun its click asks for; a plain button's click is seen only if that rerun draws it again, and a
    class or reference another tab removed since is not drawn: the click was lost without a word.
    notice and editing are read after the edit (a name typed for the class is read at the click)."""
    try:
        out = fn()
    except ByakuganError as exc:
        st.session_state["gallery_error"] = str(exc)
        return
    _done(svc, out, notice(), editing())


def notices(slot) -> None:
    """The last edit's notice, or its error, in the slot that keeps their place."""
    if error := st.session_state.pop("gallery_error", None):
        slot.error(md(error))
    elif notice := st.session_state.pop("gallery_notice", None):
        slot.success(md(notice))


def _done(svc: GalleryService, out, notice: str, editing: Optional[str]) -> None:
    st.session_state["gallery_notice"] = notice
    st.session_state["editing"] = editing
    # What Undo puts back, and the gallery's state just after: an edit since (another tab renamed the
    # class, say) ends the offer, where putting it back would undo part of that edit.
    st.session_state["removed"] = (out, out.after) if isinstance(out, Removed) else None


def undoable(svc: GalleryService) -> Optional[Removed]:
    """The removal this session may undo, if the gallery is as that removal left it."""
    held = st.session_state.get("removed")
    if held is None:
        return None
    removed, after = held
    if svc.version() != after:
        st.session_state["removed"] = None
        st.info(f"Undo of the removal of {md(repr(removed.label))} is no longer offered: the gallery was edited since "
                "(here, in another tab, or by another program).")
        return None
    return removed


def class_ui(svc: GalleryService, g, label: str, count: int, expanded: bool, lazy: bool) -> None:
    """A class's panel: its pictures, each with a Remove button, then rename and remove the class."""
    keyed = json.dumps(label)
    # Keyed by its label: a panel drawn again with another count (an edit in another tab) stays as it was.
    with st.expander(f"{iso(label)} · {count} reference(s)", expanded=expanded, key=f"class_{keyed}",
                     on_change="rerun" if lazy else "ignore") as panel:
        if lazy and not panel.open:
            return
        cols = st.columns(6)  # 6 a row: "#id name" fits one line under each (at 8, even IMG_1121.jpg wrapped)
        refs = g.references(label)
        shown = refs if st.session_state.get(f"all_{keyed}") else refs[:PER_CLASS]
        for i, ref in enumerate(shown):
            col = cols[i % 6]
            if data := g.thumbnail(ref.id):
                col.image(data, width=72)
            # one line under its picture (a name over two pushed the row apart); whole on Remove's tooltip
            col.caption(f"#{ref.id} {md(short(ref.source, 12))}", wrap=False)
            col.button("Remove", key=f"rm_ref_{ref.id}", help=f"Reference {ref.id}: {md(ref.source)}", on_click=on_click, args=(
                svc, lambda r=ref.id: svc.remove_reference(r),
                lambda r=ref.id: f"Removed reference {r} from {label!r}.", lambda: label))
        if len(shown) < len(refs):
            st.button(f"Show all {len(refs)} (the first {len(shown)} are shown)", key=f"all_btn_{keyed}",
                      on_click=lambda: st.session_state.update({f"all_{keyed}": True}))
        a, b = st.columns(2)
        typed = RENAME + keyed
        new = a.text_input("Rename to", key=typed)
        a.button("Rename", key=f"rename_btn_{keyed}", disabled=not new.strip(), on_click=on_click, args=(
            svc, lambda: svc.rename(label, st.session_state[typed]),
            lambda: f"Renamed {label!r} to {st.session_state[typed].strip()!r}.", lambda: st.session_state[typed].strip()))
        # The count is in the key: references added since it was ticked (another tab) untick it, and
        # the removal itself refuses a class that holds another number than the one shown.
        sure = b.checkbox(f"Remove all {count} reference(s) of {md(repr(label))}", key=f"rm_sure_{keyed}_{count}")
        b.button("Remove class", key=f"rm_{keyed}", disabled=not sure, on_click=on_click, args=(
            svc, lambda: svc.remove(label, count), lambda: f"Removed {label!r} ({count} reference(s))."))
