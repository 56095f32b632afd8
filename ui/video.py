"""Frames in and out for the live interfaces: reading a video file or a camera, drawing tracks,
labels and sequence banners on frames, and writing an annotated video (OpenCV)."""

from __future__ import annotations

import errno
import glob
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.images import DEFAULT_MAX_PIXELS
from byakugan.index.store import alive
from byakugan.index.tracker import FrameResult
from byakugan.ui.lettering import paste, tag

_CV2_LOG = threading.Lock()
BANNER_SECONDS = 2.0  # how long an event's banner stays on the picture
_COLOURS = [(80, 220, 80), (60, 160, 255), (255, 140, 60), (220, 80, 220), (60, 220, 220)]  # BGR, by track id


class VideoError(ByakuganError):
    """A video file or camera that cannot be opened, read or written."""


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the start (the file's own clock; the wall clock for a camera)
    index: int
    bgr: np.ndarray

    @property
    def rgb(self) -> np.ndarray:
        return np.ascontiguousarray(self.bgr[:, :, ::-1])


def read(source: str, max_frames: Optional[int] = None,
         warn: Optional[Callable[[str], None]] = None) -> tuple[Iterator[Frame], float]:
    """The frames of a video file, or of a camera when source is a number ("0": the first);
    with the stream's frames per second (30 when it does not say). warn: told when a file ends
    well before the frames its header lists (cut short or damaged), which reads as a shorter video."""
    import cv2

    is_camera = source.isascii() and source.isdecimal() and not Path(source).exists()
    if Path(source).is_dir():
        raise VideoError(f"video {source}: is a folder; give a video file (a folder of frames is not read)")
    if not is_camera and Path(source).exists() and not Path(source).is_file():  # /dev/null, a pipe
        raise VideoError(f"video {source}: is not a regular file (give a video file, or a camera number such as 0)")
    if not is_camera and not Path(source).is_file():
        raise VideoError(f"video {source}: no such file (give a video file, or a camera number such as 0)")
    quiet_ffmpeg()
    with _CV2_LOG:  # its level is the process's: two streams opening at once would leave it at ERROR
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its own "[ WARN:0] ... can't open camera"
        try:
            cap = cv2.VideoCapture(int(source) if is_camera else source)
        finally:
            cv2.utils.logging.setLogLevel(level)
    if not cap.isOpened():
        raise VideoError(f"video {source}: cannot be opened as a {'camera' if is_camera else 'video'}")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if w * h > DEFAULT_MAX_PIXELS:  # before a frame is decoded: one of 16000x16000 takes gigabytes
        cap.release()
        raise VideoError(f"video {source}: frames of {w}x{h} = {w * h} pixels, over the limit of {DEFAULT_MAX_PIXELS} "
                         "a picture may have")
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise VideoError(f"video {source}: no frame could be read (not a video, or an empty or damaged one)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    # A slow video (a frame every few seconds) keeps its own clock, or its gaps shrink and sequences
    # fire that were never performed; a rate no video has (0, NaN, billions) is a header that does not say.
    if not 0.01 <= fps <= 1000.0:
        if warn is not None and not is_camera:  # sequences are timed by it: a wrong clock fires them wrongly
            warn(f"video {source}: its header gives {fps:g} frames/s, which no video has; timed at 30 frames/s")
        fps = 30.0
    listed = 0 if is_camera else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def frames() -> Iterator[Frame]:
        start, frame, n, t = time.monotonic(), first, 0, 0.0
        try:
            while frame is not None and (max_frames is None or n < max_frames):
                yield Frame(time.monotonic() - start if is_camera else t, n, frame)
                n += 1
                ok, frame = cap.read()
                frame = frame if ok else None
                # A file's frames by their own times: a variable-rate video (a phone's, a screen recording)
                # is not evenly spaced. Where a container gives no time that moves on, its rate does.
                own = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if frame is not None and not is_camera else float("nan")
                t = own if t < own < t + 3600 else t + 1 / fps
        finally:
            cap.release()
        # A header's count is an estimate in some containers (duration x rate): far off only when cut short.
        # (A variable-rate file lists its duration x rate: far more than its frames, but its times reach it.)
        if frame is None and warn is not None and listed > max(n + 1, n * 1.1, (t + 1 / fps) * fps * 1.1):
            warn(f"video {source}: read {n} of the {listed} frames its header lists (cut short or damaged?)")

    return frames(), fps


def quiet_ffmpeg() -> None:
    """No lines of FFmpeg's own ("moov atom not found", "ac-tex damaged") around the one that says what
    is wrong. OpenCV reads this when it first uses FFmpeg in the process; a user's own setting is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def check_out(path: str, source: str = "", overwrite: bool = False) -> Path:
    """Where an annotated video may go; VideoError before any work is done otherwise. An existing
    file is replaced only when `overwrite` (never the video being read)."""
    p = Path(path)
    if not path.strip():
        raise VideoError(f"--out {path!r}: names no file; name a video file (.mp4 or .avi)")
    if source and Path(source).exists() and p.exists() and p.resolve() == Path(source).resolve():
        raise VideoError(f"--out {path}: is the video being read; choose another file")
    if path.endswith(("/", os.sep)):
        raise VideoError(f"--out {path}: names a folder; name a video file")
    if p.suffix.lower() not in (".mp4", ".avi"):
        raise VideoError(f"--out {path}: must end in .mp4 or .avi")
    if not p.parent.is_dir():
        raise VideoError(f"--out {path}: folder {p.parent} does not exist")
    if p.is_dir():
        raise VideoError(f"--out {path}: is a folder; name a video file")
    if not os.access(p.parent, os.W_OK):
        raise VideoError(f"--out {path}: folder {p.parent} is not writable")
    if os.path.lexists(p) and not overwrite:  # a link to nothing too: it would be replaced
        raise VideoError(f"--out {path}: exists; add --overwrite to replace it, or name another file")
    return p


MAX_HELD = 10.0  # seconds one frame of an annotated video may be held (a jump in a file's clock)


class Writer:
    """An annotated video, written to a temporary name and moved into place when closed, so a
    half-written file never carries the final name."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], overwrite: bool = False) -> None:
        import cv2

        self.path, self.overwrite = check_out(path, overwrite=overwrite), overwrite
        quiet_ffmpeg()
        # Named by machine and process: the next run here removes one a killed run (kill -9) left, and
        # never one of another machine writing into a shared folder.
        part, mine = f".part{self.path.suffix}", f".{self.path.stem}.{socket.gethostname().replace('.', '_')}."
        for old in self.path.parent.glob(f"{glob.escape(mine)}*-*{part}"):
            pid = old.name[len(mine):].split("-", 1)[0]
            if pid.isdigit() and not alive(int(pid)):
                old.unlink(missing_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f"{mine}{os.getpid()}-", suffix=part)
        except OSError as exc:  # a folder that takes no new file (/proc), whatever its permissions say
            raise VideoError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a file the user wrote, not mkstemp's private 0600
        self._tmp, self.frames, self.fps = Path(tmp), 0, fps
        self._held: Optional[np.ndarray] = None  # the last frame written at its time (write_at)
        self._cut = 0.0  # seconds of the source left out: its first frame's time, and gaps past MAX_HELD
        codec = "mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"
        self._out = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self._out.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"--out {path}: cannot write a video there")

    def write(self, bgr: np.ndarray) -> None:
        self._out.write(bgr)  # (OpenCV says nothing of a failed write here: close() checks the file)
        self.frames += 1

    def write_at(self, bgr: np.ndarray, t: float) -> None:
        """The frame at its own time t (seconds), the one before held until then: a variable-rate
        video (or a camera slower than its rate) plays as long as it lasted and in step with the
        times shown; a gap past MAX_HELD (a jump in a file's clock, a camera stopped) is held that long."""
        most = max(1, int(MAX_HELD * self.fps))
        if self._held is None:
            self._cut = t
        target = round((t - self._cut) * self.fps)  # its place in the video
        if target - self.frames > most:
            self._cut += (target - self.frames - most) / self.fps
            target = self.frames + most
        while self._held is not None and self.frames < target:
            self.write(self._held)
        self.write(bgr)
        self._held = bgr

    def close(self, keep: bool = True) -> None:
        """Moves the video into place when `keep` and it reads back (a full disk leaves a file without
        its index, or none): else removes it, and says so when it was to be kept."""
        self._out.release()
        if keep and self.frames and (read := self._frames_in(self._tmp)) < self.frames:
            self._tmp.unlink(missing_ok=True)
            raise OSError(errno.EIO, f"the video could not be written, {read} of its {self.frames} frames read back "
                                     "(a full disk?); nothing was kept", str(self.path))
        if not keep:
            self._tmp.unlink(missing_ok=True)
            return
        try:
            if self.overwrite:
                self._tmp.replace(self.path)
            elif not _placed(self._tmp, self.path):
                aside = next((p for n in range(2, 1000) if _placed(self._tmp, p := self.path.with_name(
                    f"{self.path.stem}-{n}{self.path.suffix}"))), self._tmp)
                raise VideoError(f"--out {self.path}: a file appeared there while the video was made; nothing was "
                                 f"replaced: the annotated video is {aside}")
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"--out {self.path}: the video cannot be put there ({exc.strerror or exc}); "
                             "nothing was kept") from None

    @staticmethod
    def _frames_in(path: Path) -> int:
        import cv2

        back, n = cv2.VideoCapture(str(path)), 0
        while back.grab():  # (no decoding: a cut-off file stops short)
            n += 1
        back.release()
        return n


def _placed(tmp: Path, path: Path) -> bool:
    """tmp moved to path unless something is there (False): a link is refused where a file appeared
    meanwhile, so none is replaced; where the disk makes no links (FAT), looked at, then moved."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK) or os.path.lexists(path):
            raise
        tmp.replace(path)
        return True
    tmp.unlink()
    return True


class Annotator:
    """Draws each frame's tracks (box, smoothed label, score) and a banner for each event."""

    def __init__(self) -> None:
        self._banner: Optional[tuple[str, float]] = None

    def draw(self, bgr: np.ndarray, result: FrameResult, fps: Optional[float] = None) -> np.ndarray:
        import cv2

        out = bgr.copy()
        if fps is not None:  # top right, under the labels: on a small frame a track's label is what matters
            patch = tag(f"{fps:.1f} frames/s", 17, (255, 255, 255), (0, 0, 0), 3)
            paste(out, patch, out.shape[1] - patch.shape[1] - 12, 4)
        for tr in result.tracks:
            x, y, w, h = tr.box
            colour = _COLOURS[tr.id % len(_COLOURS)]
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
            text = tr.said() if tr.label else "..."
            patch = _bgr(tag(text, 17, _bgr(colour), (0, 0, 0), 3))
            paste(out, patch, x, max(0, y - 2 - patch.shape[0]))
        if result.events:  # names as written (case may matter to them); sequences done at once, all of them
            self._banner = ("  ".join(f"{name}!" for name in dict.fromkeys(e.name for e in result.events)), result.t)
        if self._banner and result.t - self._banner[1] <= BANNER_SECONDS:
            patch = _bgr(tag(self._banner[0], 40, (255, 200, 40), (0, 0, 0), 12))
            if patch.shape[1] > out.shape[1] - 8:  # wider than the frame: smaller letters, not names cut off
                size = max(8, int(40 * (out.shape[1] - 8) / patch.shape[1]))
                patch = _bgr(tag(self._banner[0], size, (255, 200, 40), (0, 0, 0), max(2, size * 12 // 40)))
            paste(out, patch, (out.shape[1] - patch.shape[1]) // 2, out.shape[0] - 12 - patch.shape[0])
        return out


def _bgr(a):  # OpenCV's frames are BGR; Pillow draws in RGB
    return a[..., ::-1] if isinstance(a, np.ndarray) else a[::-1]
