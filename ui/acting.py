"""How the page edits a gallery: one action at a time, its notice shown after the rerun it asks for,
and an undo offered for a removal only while the gallery is as that removal left it."""

from __future__ import annotations

from typing import Callable, Optional

import streamlit as st

from byakugan.embedder.errors import ByakuganError
from byakugan.index.errors import GalleryError
from byakugan.index.labels import alike, check_label, differing
from byakugan.index.service import GalleryService, Removed
from byakugan.ui.classes import jump_to
from byakugan.ui.widgets import md

# A class's widgets are keyed by its label as JSON, which no other key's form can spell ("rm_sure_a_2" was
# both the tick of class "a" with 2 references and the button of a class named "sure_a_2").
RENAME = "rename_to_"


def synced(key: str, on_disk) -> None:
    """The widget `key` shows the gallery's value, as this session last saw it, unless the user
    changed it here: a save from another tab is shown, never undone by this tab's next rerun."""
    if key not in st.session_state or st.session_state.get(f"{key}_seen") != on_disk:
        st.session_state[key] = on_disk
    st.session_state[f"{key}_seen"] = on_disk


def act(svc: GalleryService, fn, notice: str | Callable[[object], str], editing: Optional[str] = None,
        widget: Optional[str] = None) -> None:
    """Run an edit; its error in one line, or its notice after a rerun (a callable: made from what the
    edit returned, where that may differ from what was asked). editing: the class to keep open.
    widget: the synced() widget whose change asked for it, shown again as on disk when it fails (else
    it kept the value not saved, and every rerun, whatever was clicked, tried the edit again)."""
    try:
        out = fn()
    except ByakuganError as exc:
        if widget is None:
            st.error(md(str(exc)))
            return
        st.session_state.pop(f"{widget}_seen", None)
        st.session_state["gallery_error"] = (str(exc), None)
        st.rerun()
    _done(svc, out, notice(out) if callable(notice) else notice, editing)
    st.rerun()


def on_click(svc: GalleryService, fn, notice: Callable[[], str], editing: Callable[[], Optional[str]] = lambda: None,
             where: Optional[str] = None) -> None:
    """act() as a button's callback, for buttons of one class or reference. A callback runs before the
    rerun its click asks for; a plain button's click is seen only if that rerun draws it again, and a
    class or reference another tab removed since is not drawn: the click was lost without a word.
    notice and editing are read after the edit (a name typed for the class is read at the click).
    where: the class whose panel shows the error (class_error), where its buttons are, not the page's top."""
    try:
        out = fn()
    except ByakuganError as exc:
        st.session_state["gallery_error"] = (str(exc), where)
        return
    _done(svc, out, notice(), editing())


def notices(slot, labels) -> None:
    """The last edit's notice, or its error, in the slot that keeps their place; an error of a class
    still there is left for its panel (class_error)."""
    if (error := st.session_state.get("gallery_error")) and error[1] not in labels:
        slot.error(md(st.session_state.pop("gallery_error")[0]))
    elif notice := st.session_state.pop("gallery_notice", None):
        slot.success(md(notice))


def class_error(label: str) -> Optional[str]:
    """The error of the last edit of this class, once."""
    if (error := st.session_state.get("gallery_error")) and error[1] == label:
        return st.session_state.pop("gallery_error")[0]
    return None


def _done(svc: GalleryService, out, notice: str, editing: Optional[str]) -> None:
    st.session_state["gallery_notice"] = notice
    st.session_state["editing"] = editing
    jump_to(editing)
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


def renamed(svc: GalleryService, old: str, new: str) -> str:
    """What a rename's notice says: done, and any class it now reads almost as (labels.ALIKE)."""
    new = check_label(new)
    said = f"Renamed {old!r} to {new!r}."
    if others := alike(new, svc.labels()):
        said += f" {', '.join(map(repr, others[:3]))} is enrolled too, {differing(new, others[0])}: another class."
    return said


def rename_class(svc: GalleryService, old: str, typed: str) -> int:
    if check_label(typed) == old:  # else saved as an edit that changed nothing, and said to be done
        raise GalleryError(f"rename {old!r} -> {typed.strip()!r}: it has that name already; nothing changed")
    return svc.rename(old, typed)


def removed_class(svc: GalleryService, label: str, count: int) -> str:
    """A class removal's notice, naming the sequences it leaves unable to fire."""
    broken = [s.name for s in svc.gallery().sequences if label in s.steps]
    return f"Removed {label!r} ({count} reference(s))." + (
        f" Sequence(s) {', '.join(map(repr, broken))} cannot fire until {label!r} is enrolled again." if broken else "")
