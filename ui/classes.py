"""Which classes and references the Gallery page draws: a gallery of hundreds of classes is shown a page of
them at a time, found by name, and a class of hundreds of references its first few until asked for all.

Streamlit draws every picture and button inside a closed panel too: a gallery of 2,000 references sent
2,000 pictures and 2,200 buttons on every rerun, each key pressed in a rename box included.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Optional, Sequence, TypeVar

import streamlit as st

from byakugan.ui.widgets import md

CLASSES_SHOWN = 12  # a page of classes: more than the 10 digits or a handful of characters, still quick
REFERENCES_SHOWN = 24  # a class's first four rows of six, then "Show all"
FIND, PAGE, JUMP, WHOLE = "gallery_find", "gallery_page", "gallery_jump", "gallery_whole"

T = TypeVar("T")


def folded(text: str) -> str:
    # "Ｎａｒｕｔｏ", "NARUTO" and "naruto" are one name to someone looking for it
    return unicodedata.normalize("NFKC", text).casefold()


def classes_ui(labels: dict[str, int]) -> list[str]:
    """The classes to draw this run: all of a small gallery; else the page chosen among those whose name
    holds what was typed in the find box. A class just edited (renamed: its name moved) is shown once."""
    names = list(labels)
    jump = st.session_state.pop(JUMP, None)
    if len(names) <= CLASSES_SHOWN:  # no box, no pager: a small gallery's page is as it always was
        return names
    if jump in labels:
        if folded(st.session_state.get(FIND, "")) not in folded(jump):
            st.session_state[FIND] = ""  # a class renamed out of what was typed would be lost from sight
        found = matching(names, st.session_state.get(FIND, ""))
        st.session_state[PAGE] = found.index(jump) // CLASSES_SHOWN
    find = st.text_input("Find a class", key=FIND, placeholder="part of its name",
                         help="Letters of any case and width match: 'nar' finds 'Naruto' and 'ＮＡＲＵＴＯ'.")
    found = matching(names, find)
    if not found:
        st.info(f"No class name holds {md(repr(find))}.")
        return []
    pages = -(-len(found) // CLASSES_SHOWN)
    if not 0 <= st.session_state.get(PAGE, 0) < pages:  # fewer pages than before (a narrower find, a removal)
        st.session_state[PAGE] = 0
    of = f"{len(found)} whose name holds {find.strip()!r} ({len(names)} in all)" if find.strip() else f"{len(names)}"

    def pager(p: int) -> str:  # plain text: a select box's options are not Markdown
        on = names_on(found, p)
        return f"{cut(on[0])} … {cut(on[-1])}  ({p * CLASSES_SHOWN + 1}–{p * CLASSES_SHOWN + len(on)} of {of})"

    return names_on(found, st.selectbox("Classes", range(pages), key=PAGE, format_func=pager))


def cut(name: str, width: int = 20) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def matching(names: Sequence[str], find: str) -> list[str]:
    return [n for n in names if folded(find.strip()) in folded(n)]


def names_on(found: Sequence[T], page: int) -> list[T]:
    return list(found[page * CLASSES_SHOWN:(page + 1) * CLASSES_SHOWN])


def first(label: str, refs: Sequence[T]) -> Sequence[T]:
    """The references of a class to draw: its first rows, unless all were asked for."""
    return refs if label in st.session_state.get(WHOLE, ()) else refs[:REFERENCES_SHOWN]


def more_ui(label: str, refs: Sequence) -> None:
    """Under a class's first rows, a button for the rest."""
    if len(first(label, refs)) < len(refs):
        st.button(f"Show all {len(refs)} references", key=f"all_refs_{json.dumps(label)}",
                  on_click=lambda: st.session_state.setdefault(WHOLE, set()).add(label))


def jump_to(label: Optional[str]) -> None:
    """After an edit: the next run shows the page holding the class edited (a rename can move it)."""
    if label is not None:
        st.session_state[JUMP] = label
