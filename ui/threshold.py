"""The Gallery page's threshold: automatic, a confidence chosen by hand, or a raw score."""

from __future__ import annotations

import math

import streamlit as st

from byakugan.embedder.scoring.calibration import AUTO_KEEPS, MIN_AUTO
from byakugan.index.confidence import strangers_note
from byakugan.index.service import GalleryService
from byakugan.index.settings import threshold_reach
from byakugan.ui.acting import act, synced
from byakugan.ui.widgets import md


def threshold_ui(svc: GalleryService) -> None:
    g, cal = svc.gallery(), svc.calibration()
    now_raw = svc.threshold()
    now = min(99, max(1, round(cal.confidence(now_raw) * 100)))
    modes = ["automatic", "set by hand"]
    synced("threshold_mode", modes[0] if g.threshold_auto else modes[1])
    mode = st.radio("Answer “unknown” below", modes, horizontal=True, key="threshold_mode",
                    captions=[f"keeps about {AUTO_KEEPS:.0%} of true matches, from this gallery's own references",
                              "a confidence you choose"])
    if mode == "automatic":
        if not g.threshold_auto:
            act(svc, svc.set_threshold_auto, "The gallery's own references choose the threshold now.", widget="threshold_mode")
        how = ("now, held down to the best score a reference reaches against another class" if cal.held else
               "now" if cal.auto_threshold is not None else
               f"the model's until the gallery has {MIN_AUTO} true-match scores (two classes of five references); "
               f"it has {cal.genuine}" if cal.fitted else f"the model's, as the references cannot choose one: {cal.reason}")
        st.caption(f"Unknown below {now}% confidence ({how}; raw threshold {now_raw:.4f}).")
    elif not cal.fitted:  # the uncalibrated curve is centred on the threshold itself: only a raw one makes sense
        raw_threshold_ui(svc, now_raw)
    else:
        synced("threshold_pct", now)  # a save here (raw), in another tab or by the CLI is shown
        value = st.slider("Unknown below this confidence (%)", 1, 99, key="threshold_pct")
        if st.button("Save threshold", key="save_threshold", disabled=value == now and not g.threshold_auto):
            act(svc, lambda: svc.set_threshold_confidence(value / 100), lambda raw: confidence_said(value, cal, raw))
        with st.expander("Raw threshold"):
            raw_threshold_ui(svc, now_raw)
    st.caption("Confidence is calibrated on this gallery's own references." if cal.fitted else
               f"Confidence is not calibrated yet ({md(cal.reason)}): 50% is the threshold.")
    if said := strangers_note(cal, now_raw):
        (st.warning if cal.strangers_passing(now_raw) > 0.5 else st.caption)(md(said[0].upper() + said[1:]) + ".")


def confidence_said(asked: int, cal, raw: float) -> str:
    """The notice of a confidence saved: the one the saved threshold reads as, where the gallery's
    scores cannot reach the one asked (set_threshold_confidence holds it within their range)."""
    got = min(99, max(1, round(cal.confidence(raw) * 100)))
    if got == asked:
        return f"Unknown below {asked}% confidence now."
    return (f"{asked}% is past what this gallery's scores reach (raw threshold {raw:.4f}, the end of their range): "
            f"unknown below {got}% confidence now.")


def raw_threshold_ui(svc: GalleryService, now_raw: float) -> None:
    g = svc.gallery()
    unit = "adapted score" if g.adapt else "cohort-normalised score" if g.cohort_settings else "cosine"
    reach = threshold_reach(g.adapt)  # an adapted score reaches past 1
    shown = f"{float(now_raw):.4f}"
    synced("threshold", shown)
    # A text box, read here: a number box put a value past its bounds at the other end (1e309 became
    # -1) or kept the last good one, red, for Save to store instead of what was typed.
    typed = st.text_input(f"Threshold ({unit}, from {-reach:g} to {reach:g})", key="threshold").strip()
    try:
        raw = float(typed)
    except ValueError:
        raw = math.nan
    bad = None if -reach <= raw <= reach else f"{typed!r} is not a number from {-reach:g} to {reach:g}"
    if bad and typed:
        st.error(md(bad))
    if st.button("Save raw threshold", key="save_raw_threshold", disabled=bool(bad) or typed == shown):
        act(svc, lambda: svc.set_threshold(raw), f"Threshold set to {raw:.4f}.")
