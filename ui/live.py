"""The page's Live tab: the webcam through WebRTC (streamlit-webrtc), each frame through the
gallery's tracker, with boxes, smoothed labels, the frame rate and a banner when a sequence fires
drawn on the stream; the gallery's sequences are edited beside it.

The browser sends its camera to this server and gets the drawn frames back over a direct
WebRTC connection. On localhost or a LAN that needs no ICE server, so none is used by default and
the page works with no Internet (streamlit-webrtc would otherwise try a public STUN server).
To reach the server across NATs, set before `byakugan ui`:

    BYAKUGAN_ICE_SERVERS   comma-separated STUN/TURN URLs, e.g. "stun:stun.example.org:3478,turn:turn.example.org:3478"
    BYAKUGAN_ICE_USERNAME  and BYAKUGAN_ICE_CREDENTIAL: the TURN servers' login, when they need one
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Optional

import streamlit as st

from byakugan.embedder.errors import ByakuganError
from byakugan.index.service import GalleryService
from byakugan.index.labels import folded
from byakugan.index.smoothing import SmoothingSettings
from byakugan.index.tracker import TrackerSettings
from byakugan.ui.live_state import EVENTS_KEPT, LiveState
from byakugan.ui.widgets import md

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
POLL_SECONDS = 0.3
LAST_STREAM = f"Events of the last stream (the newest {EVENTS_KEPT}):\n\n"


class LiveError(ByakuganError):
    """A live-stream setting that cannot be used."""


def ice_servers(urls: Optional[str] = None, username: Optional[str] = None,
                credential: Optional[str] = None) -> list[dict]:
    """The ICE servers for WebRTC, from BYAKUGAN_ICE_SERVERS (and its login) unless given; [] when unset."""
    env = os.environ.get
    urls = env("BYAKUGAN_ICE_SERVERS", "") if urls is None else urls
    username = env("BYAKUGAN_ICE_USERNAME") if username is None else username
    credential = env("BYAKUGAN_ICE_CREDENTIAL") if credential is None else credential
    servers = []
    for url in (u.strip() for u in urls.split(",")):
        if not url:
            continue
        scheme, _, host = url.partition(":")
        if scheme.lower() not in ICE_SCHEMES or not host.strip("/"):
            raise LiveError(f"BYAKUGAN_ICE_SERVERS {url!r}: not a STUN or TURN URL "
                            "(such as stun:HOST:PORT or turn:HOST:PORT)")
        server: dict = {"urls": [url]}
        if scheme.lower().startswith("turn") and username:
            server.update(username=username, credential=credential or "")
        servers.append(server)
    return servers


def split_steps(text: str) -> list[str]:
    """A sequence's steps as typed: separated by spaces, or by commas when a label has a space."""
    return [t.strip() for t in text.split(",") if t.strip()] if "," in text else text.split()


def tracker_settings(embed_every: Optional[int] = None, window: Optional[int] = None,
                     max_gap: Optional[float] = None) -> TrackerSettings:
    """The default settings with the page's few knobs; a window other than the default brings an
    enter and leave in proportion, so that any window makes valid smoothing."""
    d = TrackerSettings()
    smoothing = d.smoothing
    if window is not None and window != smoothing.window:
        enter = window // 2 + 1
        leave = min(enter, max(1, round(window * smoothing.leave / smoothing.window)))
        smoothing = SmoothingSettings(window, enter, leave)
    return replace(d, smoothing=smoothing, embed_every=d.embed_every if embed_every is None else embed_every,
                   max_gap=d.max_gap if max_gap is None else max_gap)


def status_lines(tracks, events, fps: Optional[float]) -> tuple[str, str]:
    """(labels, events) as the page writes them under the stream."""
    rate = f"{fps:.1f} frames/s" if fps is not None else "waiting for frames…"
    labels = [f"- Track {tr.id}: {md(tr.said())}" for tr in tracks] or ["- nothing tracked"]
    fired = [f"- Sequence {md(repr(e.name))} fired at {e.t:.1f} s (track {e.track})" for e in reversed(events)]
    return f"**{rate}**\n\n" + "\n".join(labels), "\n".join(fired)


def _state(svc: GalleryService) -> LiveState:
    state = st.session_state.get("live_state")
    if state is None or state.svc is not svc:  # one per session, and per gallery server
        state = st.session_state["live_state"] = LiveState(svc)
    return state


def settings_ui() -> Optional[TrackerSettings]:
    d = TrackerSettings()
    # Kept across pages (ui.app.TYPED sets them again), so their defaults go in through the session:
    # a widget given both a default and a value set by the session warns on the page.
    for key, value in (("live_embed_every", d.embed_every), ("live_window", d.smoothing.window), ("live_max_gap", d.max_gap)):
        st.session_state.setdefault(key, value)
    with st.expander("Tracker settings"):
        every = st.number_input("Embed every n-th frame", 1, 30, key="live_embed_every",
                                help="Detection runs on every frame; embedding on fewer is faster on slow machines.")
        window = st.number_input("Smoothing window (frames)", 1, 60, key="live_window",
                                 help="A label shows once it wins more than half of this many frames.")
        gap = st.number_input("Seconds allowed between a sequence's steps", 0.1, 30.0, step=0.1, key="live_max_gap")
    try:
        return tracker_settings(int(every), int(window), float(gap))
    except ByakuganError as exc:
        st.error(md(str(exc)))
        return None


def sequences_ui(svc: GalleryService) -> None:
    st.subheader("Sequences")
    if st.session_state.pop("live_seq_clear", False):  # before the inputs exist: empty them after an add
        st.session_state["live_seq_name"] = st.session_state["live_seq_steps"] = ""
        st.session_state["live_seq_replace"] = False
    if error := st.session_state.pop("live_error", None):
        st.error(md(error))
    elif notice := st.session_state.pop("live_notice", None):
        st.success(md(notice))
    labels = svc.labels()
    seqs = sorted(svc.sequences(), key=lambda q: (folded(q.name), q.name))  # as a reader sorts: case aside
    for s in seqs:
        a, b = st.columns([2, 1])
        missing = s.missing(labels)
        a.markdown(f"**{md(s.name)}**: {' → '.join(map(md, s.steps))}"
                   + (f"  \n:red[no longer enrolled: {md(', '.join(missing))}]" if missing else ""))
        # A callback: a click on a sequence another tab removed since is answered, not dropped by a rerun
        # that no longer draws its button (ui.acting.on_click)
        b.button("Remove", key=f"live_rm_seq_{s.name}", on_click=_on_click,
                 args=(lambda name=s.name: svc.remove_sequence(name), f"Removed sequence {s.name!r}."))
    if not seqs:
        st.caption("No sequences yet: add one, and a banner shows on the stream when it is performed.")
    name = st.text_input("New sequence's name", key="live_seq_name")
    steps = st.text_input("Its steps: labels in order, separated by spaces (by commas if a label has one)",
                          key="live_seq_steps", help="A label may repeat. Labels: " + ", ".join(md(lab) for lab in labels))
    replace = st.checkbox("Replace the sequence of that name", key="live_seq_replace",
                          disabled=name.strip() not in {s.name for s in seqs})
    if st.button("Add sequence", key="live_add_seq", disabled=not (name.strip() and steps.strip())):
        done = "Replaced" if replace and name.strip() in {s.name for s in seqs} else "Added"
        _act(lambda: svc.add_sequence(name, split_steps(steps), replace=replace), f"{done} sequence {name.strip()!r}.",
             clear=True)


def _on_click(fn, notice: str) -> None:
    try:
        fn()
    except ByakuganError as exc:
        st.session_state["live_error"] = str(exc)
        return
    st.session_state["live_notice"] = notice


def _act(fn, notice: str, clear: bool = False) -> None:
    try:
        fn()
    except ByakuganError as exc:
        st.error(md(str(exc)))
        return
    st.session_state["live_notice"] = notice
    st.session_state["live_seq_clear"] = clear
    st.rerun()


def live_ui(svc: GalleryService) -> None:
    st.header("Live")
    if not svc.labels():
        st.info("The gallery is empty: enrol some images on the Enrol page first, then come back for the camera.")
        return
    try:
        servers = ice_servers()
    except LiveError as exc:
        st.error(md(str(exc)))
        return
    try:
        with st.spinner("Loading the model for live video…"):  # once per server; not in the stream's first frame
            svc.live_pipeline()
    except ByakuganError as exc:
        st.error(md(str(exc)))
        return
    state = _state(svc)
    seen = svc.version()  # before the sequences are drawn: an edit landing after is a change to draw again
    left, right = st.columns([3, 2])
    with right:
        settings = settings_ui()
        sequences_ui(svc)
    if settings is None:
        return
    state.configure(settings)
    # Imported here: aiortc and av load only for the page that streams.
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    def callback(frame):
        import av

        out = state.process(frame.to_ndarray(format="bgr24"))
        return av.VideoFrame.from_ndarray(out, format="bgr24")

    with left:
        st.caption("Press START and allow the camera: each frame is tracked and labelled on this server.")
        ctx = webrtc_streamer(key="live", mode=WebRtcMode.SENDRECV, rtc_configuration={"iceServers": servers},
                              media_stream_constraints={"video": True, "audio": False},
                              video_frame_callback=callback, on_video_ended=state.ended,
                              # the newest frame is processed once the last is done, the ones between
                              # dropped: a slow model lowers the frame rate instead of adding lag
                              async_processing=True)
        labels_box, events_box, error_box = st.empty(), st.empty(), st.empty()
    if not ctx.state.playing and (last := state.snapshot()[1]):  # what fired is still there to read after STOP
        events_box.markdown(LAST_STREAM + status_lines((), last, None)[1])
    # The stream's thread cannot write to the page: the script polls its state while it plays, and
    # draws the page again when the gallery changes on disk (another tab, the CLI), so the sequences
    # beside the stream are those it follows (the stream itself goes on: index.tracker.Renewed).
    while ctx.state.playing:
        if svc.version() != seen:
            st.rerun()
        tracks, events, fps, error = state.snapshot()
        labels, fired = status_lines(tracks, events, fps)
        labels_box.markdown(labels)
        # before the new stream's first frame, its events are still the last stream's: said so
        events_box.markdown(fired if state.started() or not events else
                            LAST_STREAM + fired)
        if error:
            error_box.error(md(error))  # it may name a label or a sequence
        else:
            error_box.empty()
        time.sleep(POLL_SECONDS)
