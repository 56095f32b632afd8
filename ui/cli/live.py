"""Time as an input: `sequence` (named sequences of a gallery's labels) and `watch` (a video file
or a camera through the tracker, with events when a sequence is performed)."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Union

from byakugan.embedder.errors import ByakuganError
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.smoothing import SmoothingSettings
from byakugan.index.tracker import Renewed, Tracker, TrackerSettings

from .common import given, print_json, printable, table, warn
from .gallery import edit_gallery


def cmd_sequence(a: argparse.Namespace) -> int:
    if a.action == "list":
        if a.name or a.steps:
            raise GalleryError("sequence list: takes no NAME or steps")
        g = Gallery.open(a.gallery)
        labels, seqs = g.labels(), list(g.sequences)
        if a.json:
            print_json({"sequences": [{"name": s.name, "steps": list(s.steps), "missing": s.missing(labels)} for s in seqs]})
        elif seqs:
            print(table([(s.name, cut(" ".join(s.steps)), ", ".join(s.missing(labels))) for s in seqs],
                        ("sequence", "steps", "labels no longer enrolled")))
        else:
            print(printable(f"{a.gallery}: no sequences (add one: byakugan sequence {a.gallery} add NAME LABEL LABEL...)"))
        return 0
    if not a.name:
        raise GalleryError(f"sequence {a.action}: needs NAME")
    if a.action == "remove":
        if a.steps:
            raise GalleryError("sequence remove: takes only NAME")
        with edit_gallery(a.gallery) as g:
            g.sequences.remove(a.name)
        print(printable(f"removed sequence {a.name!r}"))
        return 0
    with edit_gallery(a.gallery) as g:
        if not a.replace and a.name in g.sequences:  # the library's refusal cannot name this command's flag
            old = g.sequences.get(a.name)
            raise GalleryError(f"sequence {old.name!r}: already exists ({cut(' -> '.join(old.steps))}); add --replace "
                               "to replace it, or remove it first")
        seq = g.sequences.add(a.name, a.steps, replace=a.replace)
    print(printable(f"sequence {seq.name!r}: {' -> '.join(map(repr, seq.steps))}"))
    return 0


def cut(text: str, width: int = 60) -> str:
    """One long sequence (up to 64 steps) must not pad every row of the table to its width; --json has it whole."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _settings(a: argparse.Namespace) -> TrackerSettings:
    """The tracker's settings from the flags; an error names the flag (`--enter 5: ...`), not the field."""
    try:
        smoothing = SmoothingSettings(**given(a, ("window", "enter", "leave")))
        return TrackerSettings(smoothing, **given(a, ("embed_every", "max_gap", "min_hold", "iou", "max_jump",
                                                      "max_missed")))
    except GalleryError as exc:
        field, _, rest = str(exc).removeprefix("smoothing ").partition(" ")
        raise GalleryError(f"--{field.replace('_', '-')} {rest}" if hasattr(a, field) else str(exc)) from None


def _tracker(a: argparse.Namespace, settings: TrackerSettings) -> Union[Tracker, Renewed]:
    path = Path(a.gallery)
    if Gallery.exists(path):
        from byakugan.index.pipeline import Pipeline

        from byakugan.index.committed import version
        from byakugan.index.model_check import check_fits

        g = Gallery.open(path)
        if not len(g):
            raise GalleryError(f"gallery {path}: is empty; enrol images first")
        for seq in g.sequences:
            if gone := seq.missing(g.labels()):
                warn(f"sequence {seq.name!r} cannot fire: {', '.join(map(repr, gone))} no longer enrolled")
        pipe, last = Pipeline.for_gallery(g, runtime="onnx"), [g]

        def gallery_now() -> Gallery:
            # An edit while it runs (a label renamed or removed, a sequence added) is followed, as the
            # server's /watch and the page follow it; the tracks and the sequences under way go on. A
            # gallery removed, or rebuilt with another model, is said, and watched on as it last was.
            try:
                fresh = Gallery.open(path)
                check_fits(fresh, pipe.encoder, pipe.landmarks)
                last[0] = fresh
            except ByakuganError as exc:
                warn(f"{exc}; watching on with the gallery as it last was")
            return last[0]

        return Renewed(lambda: version(path), lambda now: Tracker(pipe, gallery_now() if last[0].generation != now
                                                                    else last[0], settings))
    from byakugan.index import bundle
    from byakugan.index.archive import archive_kind

    if (path / bundle.MANIFEST).is_file() or archive_kind(path):  # as serve and export name them (.ZIP, .tgz too)
        return bundle.load(path).tracker(settings)
    Gallery.open(path)  # the precise "missing" or "not a gallery" error
    raise GalleryError(f"gallery {path}: not a gallery folder or bundle")


PROGRESS_EVERY = 10.0  # seconds between progress lines on a terminal
SLOW_HOLD = 1.0  # seconds a gesture must be held before its label shows, past which a video is told so


class _Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`): stops `watch` as Ctrl-C does, with its own exit code (128 + 15)."""


def _interrupted(signum, frame) -> None:
    hold_on(True)  # a second one must not break off the clean-up
    raise _Terminated


def hold_on(main_thread: bool) -> None:
    if main_thread:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def check_not_still(source: str, gallery: str) -> None:
    """OpenCV opens a JPEG or PNG as a video of one frame: a still image is refused, told by its content
    (what `search` reads: one frame of JPEG, PNG, BMP, GIF, WebP or TIFF), whatever its name. An animated
    GIF, WebP or PNG is left to OpenCV, and a camera number or a video file is opened as before."""
    import warnings

    from PIL import Image

    from byakugan.embedder.images import FORMATS
    from byakugan.ui.video import VideoError

    try:
        if not Path(source).is_file():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=FORMATS) as img:
                still, kind = getattr(img, "n_frames", 1) == 1, img.format
    except Image.DecompressionBombError:  # a still image all the same (search refuses it as too large)
        still, kind = True, "image"
    except Exception:  # not an image Pillow reads (a video), or unreadable: video.read says what it is
        return
    if still:  # `search` takes gallery folders; a bundle answers it through `serve` or the Python API
        how = f"`byakugan search {shlex.quote(gallery)} {shlex.quote(source)}`" if not looks_like_bundle(gallery) else \
            f"POST /search of `byakugan serve {shlex.quote(gallery)}`, or byakugan.index.bundle.load(...).search"
        raise VideoError(f"video {source}: is a still image ({kind}), not a video; to recognise it use {how}")


def looks_like_bundle(path: str) -> bool:
    """An exported bundle: an archive, or a folder with a bundle's manifest (a gallery folder has none)."""
    return Path(path).is_file() or (Path(path) / "manifest.json").is_file()


def cmd_watch(a: argparse.Namespace) -> int:
    from byakugan.embedder.errors import ImageError
    from byakugan.ui import video
    from byakugan.ui.video import VideoError

    if a.max_frames is not None and a.max_frames < 1:
        raise GalleryError(f"--max-frames {a.max_frames}: must be at least 1")
    if a.out is not None:
        video.check_out(a.out, a.source, a.overwrite)
    check_not_still(a.source, a.gallery)
    settings = _settings(a)  # bad flags, then a bad video, fail before the models load
    frames, fps = video.read(a.source, a.max_frames, warn=warn)
    hold = settings.embed_every * settings.smoothing.enter / fps  # votes are counted in frames, not seconds
    if hold > SLOW_HOLD and not a.source.isdigit():
        warn(f"video {a.source}: at {fps:g} frames/s a label shows only after {hold:g} s held (--embed-every "
             f"{settings.embed_every} x --enter {settings.smoothing.enter} frames); for this video try --embed-every 1"
             + (" and a smaller --window and --enter" if settings.smoothing.enter > 1 else ""))
    tracker = _tracker(a, settings)
    writer, annotator = None, video.Annotator()
    shown: dict[int, object] = {}
    count, busy, start, code, failed = 0, 0.0, time.perf_counter(), 0, False
    said = start
    main_thread = threading.current_thread() is threading.main_thread()  # where Python lets a handler be set
    before = signal.signal(signal.SIGTERM, _interrupted) if main_thread else None  # `kill` stops it as Ctrl-C does
    try:
        for frame in frames:
            try:
                result = tracker.update(frame.rgb, frame.t)
            except ImageError as exc:  # "<array>: too large" says nothing of where it came from
                raise VideoError(f"video {a.source}: frame {frame.index}: {str(exc).removeprefix('<array>: ')}") from None
            count, busy = count + 1, busy + result.seconds
            if a.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                for tr in result.tracks:
                    if shown.get(tr.id) != tr.label:
                        shown[tr.id] = tr.label
                        what = f"{tr.label} ({tr.confidence:.0%} confident; score {tr.score:.2f})" if tr.label \
                            else "no steady label"
                        print(f"{frame.t:8.2f}s  track {tr.id}: {what}")
            for e in result.events:
                print(json.dumps(e.to_dict(), ensure_ascii=False) if a.json
                      else f"{e.t:8.2f}s  track {e.track}: sequence {e.name!r}")
            if sys.stderr.isatty() and time.perf_counter() - said > PROGRESS_EVERY:  # a long video with nothing in it
                said = time.perf_counter()
                print(f"byakugan: {count} frames ({frame.t:.1f} s of video), {count / (said - start):.1f} frames/s",
                      file=sys.stderr)
            if a.out is not None:
                if writer is None:
                    writer = video.Writer(a.out, fps, (frame.bgr.shape[1], frame.bgr.shape[0]), a.overwrite)
                writer.write_at(annotator.draw(frame.bgr, result, count / max(busy, 1e-9)), frame.t)
            sys.stdout.flush()
    except KeyboardInterrupt as exc:  # how a camera is stopped: what was recorded is kept
        code = 143 if isinstance(exc, _Terminated) else 130
    except BrokenPipeError:  # `| head`: the reader of the lines left, the video so far is kept as on Ctrl-C
        raise
    except BaseException:
        failed = True
        raise
    finally:
        hold_on(main_thread)  # the clean-up is not broken off by another `kill`
        try:
            try:
                tracker.close()
            finally:  # the video is closed (or its temporary file removed) whatever closing the tracker does
                if writer is not None:
                    writer.close(keep=not failed)
        finally:
            if main_thread:  # as it was (a caller in this process, a test, keeps its own)
                signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)
    wall = time.perf_counter() - start
    print(f"byakugan: {count} frames in {wall:.1f} s ({count / max(wall, 1e-9):.1f} frames/s)"
          + (f", annotated video {printable(a.out)}" if writer else ""), file=sys.stderr)
    return code


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sequence", help="add, list or remove named sequences of labels (events for watch)")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("action", choices=["add", "list", "remove"])
    s.add_argument("name", metavar="NAME", nargs="?")
    s.add_argument("steps", metavar="LABEL", nargs="*", help="the labels in order (add)")
    s.add_argument("--replace", action="store_true", help="add: replace a sequence of the same name")
    s.add_argument("--json", action="store_true", help="list: as JSON")
    s.set_defaults(func=cmd_sequence)

    d = TrackerSettings()
    s = sub.add_parser("watch", help="recognise a video file or a camera over time; events when sequences are performed")
    s.add_argument("gallery", metavar="GALLERY", help="a gallery folder or an exported bundle")
    s.add_argument("source", metavar="SOURCE", help="a video file, or a camera number (0 for the first)")
    s.add_argument("--json", action="store_true", help="one JSON object per frame and per event")
    s.add_argument("--out", metavar="FILE.mp4", help="write the video with boxes, labels and event banners")
    s.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists (else it is refused)")
    s.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    for flag, kind, default, text in [
            ("--embed-every", int, d.embed_every, "embed every n-th frame (detection runs on all)"),
            ("--window", int, d.smoothing.window, "frames the smoothed label is voted over"),
            ("--enter", int, d.smoothing.enter, "votes a label needs to show"),
            ("--leave", int, d.smoothing.leave, "a shown label goes below this many votes"),
            ("--max-gap", float, d.max_gap, "seconds allowed between two steps of a sequence"),
            ("--min-hold", float, d.min_hold, "seconds a steady label must last to count as a step"),
            ("--iou", float, d.iou, "box overlap that continues a track"),
            ("--max-jump", float, d.max_jump, "else how far a box may move, in box diagonals, and continue its track"),
            ("--max-missed", int, d.max_missed, "frames a track outlives its last detection")]:
        s.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"{text} (default {default})")
    s.set_defaults(func=cmd_watch)
