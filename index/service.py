"""A gallery shared by many users of one process (the HTTP server, the Streamlit page).

Reads use an in-memory copy, refreshed when another process saved the folder. Every edit takes
the folder lock, applies itself to a copy of the gallery as the folder holds it (the one in
memory, copied, when nobody else saved since; else read again) and saves, so concurrent writers,
here or in other processes, never lose each other's changes, and readers never see half an edit.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import numpy as np
from PIL import Image

from byakugan.embedder.scoring.calibration import Calibration

from . import db, store
from .choosing import Candidates
from .errors import GalleryError, GalleryGoneError
from .gallery import Gallery
from .pipeline import Pipeline
from .ranking import Recognition
from .records import Crop, Removed
from .settings import threshold_reach
from .sequences import Sequence
from .tracker import Tracker, TrackerSettings
from .warnings import blank_warnings, enrol_warnings

T = TypeVar("T")
if TYPE_CHECKING:  # torch would come with it: a server of bundles never loads it
    from byakugan.embedder.embedding.hub import ModelChoice


class GalleryService:
    def __init__(self, path: Path | str, model=None, detector: Optional[str] = None) -> None:
        """model: an Embedder or a model name (default: the gallery's own, or for a new one Pipeline.create's
        choice); detector: what a new gallery crops with (an existing one keeps its own)."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._restored: set[str] = set()  # tokens of the removals an undo has put back
        self._gallery: Optional[Gallery] = None
        self._stamp: Optional[tuple[int, int]] = None
        self._live: Optional[Pipeline] = None  # the pipeline on onnxruntime, made for the first tracker
        # A gallery once there and then gone is an error, never an empty one to start again in.
        self._existed = Gallery.exists(self.path)
        if self._existed:  # refuses a model other than the gallery's
            stamp, g = self._disk_stamp(), Gallery.open(self.path)  # opened once: kept for the first request
            self.pipeline = Pipeline.for_gallery(g, model, runtime="onnx")
            self._gallery, self._stamp = g, stamp
        else:
            store.check_new(self.path)
            self.pipeline = Pipeline.create(model, detector or "none")
        self.undecided = model is None and (detector or "none") == "none" and self._gallery is None
        self._candidates = Candidates(self.pipeline)

    def _pipeline_for(self, crops: list[Crop]) -> Pipeline:
        """What crops are embedded with: for an undecided gallery, the model they call for (kept by _edit)."""
        with self._lock:
            if self.undecided and self._disk_stamp() is not None:
                self.gallery()  # made meanwhile by another process: _load takes its model
            return self._candidates([c.image for c in crops]) if self.undecided and crops else self.pipeline

    def version(self) -> Optional[tuple[int, int]]:  # changes with the gallery on disk: a download's bundle follows it
        return self._disk_stamp()

    def _disk_stamp(self) -> Optional[tuple]:
        generation = db.version(self.path)
        if generation is not None:
            return ("generation", generation)
        try:
            st = (self.path / store.META_FILE).stat()  # a gallery still in the first format
        except (FileNotFoundError, NotADirectoryError):  # gone, or a file put where the folder was
            return None
        return (st.st_mtime_ns, st.st_size)

    def gallery(self) -> Gallery:
        """The current gallery (read-only use); an empty unsaved one until the first enrolment."""
        with self._lock:
            stamp = self._disk_stamp()
            self._existed |= stamp is not None
            if self._gallery is None or stamp != self._stamp:
                self._gallery, self._stamp = self._load(stamp), stamp
            return self._gallery

    def _load(self, stamp: Optional[tuple[int, int]]) -> Gallery:
        if stamp is None:
            self._check_there()
            return self.pipeline.new_gallery(self.path)
        try:  # the server's own gallery damaged, replaced, or made with a model it cannot load: no request can fix it
            g = Gallery.open(self.path)
            if self.undecided:  # made meanwhile by another process: its model, none picked here
                self.pipeline, self._live, self.undecided = Pipeline.for_gallery(g, runtime="onnx"), None, False
        except GalleryError as exc:
            raise GalleryGoneError(str(exc)) from None
        if g.model_settings["fingerprint"] != self.pipeline.encoder.fingerprint():
            raise GalleryGoneError(f"gallery {self.path}: was rebuilt with model {g.model_name!r} while this "
                                   "server ran with another; restart it")
        return g

    def _check_there(self) -> None:
        if self._existed and self._disk_stamp() is None:  # it had one (at start, or saved or seen since)
            raise GalleryGoneError(f"gallery {self.path}: was moved or removed while this server ran; restart it")

    def _edit(self, fn: Callable[[Gallery], T], chosen: Optional[Pipeline] = None) -> T:
        self._check_there()  # before the lock, which would make a stray folder where it was
        # The folder's lock first: while another process edits, this waits without holding
        # self._lock, so searches of the gallery in memory go on.
        with store.locked(self.path), self._lock:
            stamp = self._disk_stamp()
            first = stamp is None and self.undecided  # a first enrolment: the gallery keeps `chosen` once saved
            if first and chosen is None:
                raise GalleryError(f"gallery {self.path}: is empty, and its model is picked by the first images "
                                   "enrolled; enrol some first")
            # Nobody saved since it was read (the same committed generation): copy the one in memory.
            g = self._gallery.clone() if self._gallery is not None and stamp is not None and stamp == self._stamp \
                and stamp[0] == "generation" else None
            g = (chosen.new_gallery(self.path) if first else self._load(stamp)) if g is None else g
            if chosen is not None and g.model_settings["fingerprint"] != chosen.encoder.fingerprint():
                raise GalleryError(f"gallery {self.path}: was made meanwhile with model {g.model_name!r}; enrol again")
            out = fn(g)
            g.save()
            self._existed = True
            if first:
                self.pipeline, self._live, self.undecided, self._candidates = chosen, None, False, None
            self._gallery, self._stamp = g, ("generation", g.generation)  # what it saved, whoever saved since
            # Read here, under both locks: once they are let go, another save (and a reload of it by
            # another tab) would pass for part of this edit
            after = self._stamp
        return out._replace(after=after) if isinstance(out, Removed) else out

    # ---- reading -------------------------------------------------------------------------
    def labels(self) -> dict[str, int]:
        return self.gallery().labels()

    def search(self, img: Image.Image, k: int = 5, threshold: Optional[float] = None,
               fallback: Optional[str] = "whole") -> list[Recognition]:
        """One answer per detection (box, match, hits, labels), in the detector's order; the whole image
        (found False) when nothing is detected."""
        g = self.gallery()
        if not len(g):
            raise GalleryError("the gallery is empty; enrol some images first")
        return self.pipeline.recognize(g, img, k=k, threshold=threshold, fallback=fallback)

    def crops(self, images: list[tuple[str, Image.Image]], fallback: Optional[str] = "whole") -> list[Crop]:
        """The first detection of each image, as enrolment would take them."""
        return [Crop(name, r.crop, r.landmarks, r.found) for name, img in images
                for r in [self.pipeline.crops(img, fallback=fallback, name=name)[0]]]

    def choice_for(self, crops: list[Crop]) -> Optional[ModelChoice]:  # a gallery still to pick its model (undecided)
        return self._pipeline_for(crops).choice if self.undecided and crops else None  # what these crops would pick

    def calibration(self) -> Calibration:  # how the gallery's scores read as a 0-1 confidence (index.confidence)
        g = self.gallery()  # first: on a new gallery it may take another process's model (and pipeline)
        return self.pipeline.calibration(g)

    def check(self, label: str, crops: list[Crop]) -> list[str]:
        """Warnings about crops before they are enrolled as `label` (index.warnings)."""
        g = self.gallery()
        if not crops or (not len(g) and len(crops) < 2):  # nothing to compare with: no embedding (the page asks on every rerun)
            return blank_warnings(crops)
        return self._warnings(self._pipeline_for(crops), label, crops)

    def _warnings(self, pipe: Pipeline, label: str, crops: list[Crop], emb: Optional[np.ndarray] = None) -> list[str]:
        g = self.gallery()  # a gallery still to pick its model is compared with none of another model
        return enrol_warnings(pipe, g if pipe is self.pipeline else pipe.new_gallery(), label, crops, emb)

    # ---- editing -------------------------------------------------------------------------
    def enroll(self, label: str, crops: list[Crop], progress: Optional[Callable[[int, int], None]] = None) -> list[int]:
        return self.enroll_checked(label, crops, progress, check=False)[0]

    def enroll_checked(self, label: str, crops: list[Crop], progress: Optional[Callable[[int, int], None]] = None,
                       check: bool = True) -> tuple[list[int], list[str]]:
        """enroll(), and what check() warns of, from the same vectors: for a program that enrols without
        asking first (enrolled all the same: the user may mean it). progress(done, total) as each is embedded."""
        pipe = self._pipeline_for(crops)
        # Embedding happens outside the lock so that other users wait only for the save.
        if progress is None:  # one batch; one image at a time only to report progress
            emb = pipe.embed_regions([c.image for c in crops], [c.landmarks for c in crops])
        else:
            rows = []
            for n, c in enumerate(crops):
                rows.append(pipe.embed_regions([c.image], [c.landmarks]))
                progress(n + 1, len(crops))
            emb = np.concatenate(rows) if rows else np.zeros((0, self.gallery().dim), np.float32)
        said = self._warnings(pipe, label, crops, emb) if check else []

        def add(g: Gallery) -> list[int]:
            return g.enroll(label, emb, sources=[c.name for c in crops], images=[c.image for c in crops])

        return self._edit(add, chosen=pipe), said

    def remove(self, label: str, count: Optional[int] = None) -> Removed:
        """Remove a label; what was removed comes back, for restore(). count: the number of references
        the user was shown; when the label holds another number now, nothing is removed."""
        def drop(g: Gallery) -> Removed:
            refs = g.references(label)
            if count is not None and len(refs) != count:
                raise GalleryError(f"label {label!r} holds {len(refs)} reference(s) now, not the {count} shown "
                                   "(edited in another tab or program since); nothing removed")
            kept = Removed(label, g.embeddings([r.id for r in refs]), [r.source for r in refs],
                           [g.thumbnail(r.id) for r in refs], uuid.uuid4().hex)
            g.remove(label)
            return kept

        return self._edit(drop)

    def remove_reference(self, ref_id: int) -> Removed:
        """Remove one reference; what was removed comes back, for restore()."""
        def drop(g: Gallery) -> Removed:
            thumb, vector = g.thumbnail(ref_id), g.embeddings([ref_id])  # an unknown id stops here, in one line
            ref = g.remove_reference(ref_id)
            return Removed(ref.label, vector, [ref.source], [thumb], uuid.uuid4().hex)

        return self._edit(drop)

    def restore(self, removed: Removed) -> list[int]:
        """Undo a removal: the same vectors, sources and thumbnails again (under new ids)."""
        mine = []

        def add(g: Gallery) -> list[int]:
            if removed.token and removed.token in self._restored:  # an undo pressed twice (two tabs, a retry)
                raise GalleryError(f"label {removed.label!r}: what was removed is back already; nothing to undo")
            ids = g.enroll(removed.label, removed.vectors, sources=removed.sources)
            self._restored.add(removed.token)  # under the lock: a second undo waiting for it sees this
            mine.append(removed.token)
            if thumbs := [(i, t) for i, t in zip(ids, removed.thumbnails) if t is not None]:
                g.set_thumbnails(*zip(*thumbs))
            return ids

        try:
            return self._edit(add)
        except Exception:
            self._restored.difference_update(mine)  # marked by this call, but its save failed: it can be tried again
            raise

    def rename(self, old: str, new: str) -> int:
        return self._edit(lambda g: g.rename(old, new))

    def set_threshold(self, value: float) -> None:
        self._edit(lambda g: setattr(g, "threshold", value))

    def threshold(self) -> float:  # what searches use now (the automatic one when the gallery has it)
        g = self.gallery()  # first: on a new gallery it may take another process's model (and pipeline)
        return self.pipeline.threshold(g)

    def set_threshold_auto(self) -> None:
        self._edit(lambda g: setattr(g, "threshold_auto", True))

    def set_threshold_confidence(self, confidence: float) -> float:
        """Set the threshold to the score that reads as `confidence` (0-1) now; returns that score."""
        cal = self.calibration()
        if not cal.fitted:
            raise GalleryError(f"the gallery's confidence is not calibrated yet ({cal.reason}): set a raw threshold instead")
        try:
            value = cal.score_at(confidence)
        except ValueError as exc:
            raise GalleryError(str(exc)) from None
        reach = threshold_reach(self.gallery().adapt)  # a cosine's 1, or an adapted score's reach
        self.set_threshold(value := min(reach, max(-reach, value)))
        return value

    def set_scoring(self, value: str) -> None:
        self._edit(lambda g: setattr(g, "scoring", value))

    # ---- sequences and live streams -------------------------------------------------------
    def sequences(self) -> list[Sequence]:
        return list(self.gallery().sequences)

    def add_sequence(self, name: str, steps: list[str], replace: bool = False) -> Sequence:
        return self._edit(lambda g: g.sequences.add(name, steps, replace))

    def remove_sequence(self, name: str) -> Sequence:
        return self._edit(lambda g: g.sequences.remove(name))

    def tracker(self, settings: Optional[TrackerSettings] = None) -> Tracker:
        """A tracker for one stream (a camera, a connection) over the gallery as it is now."""
        with self._lock:  # the gallery and its live pipeline as one: a first enrolment can change the model
            g = self.gallery()
            if not len(g):
                raise GalleryError("the gallery is empty; enrol some images first")
            live = self.live_pipeline()
        return Tracker(live, g, settings)

    def live_pipeline(self) -> Pipeline:
        """The pipeline trackers use, on onnxruntime (the first call may export it: seconds). A page calls
        it before its stream starts: streamlit-webrtc gives up on a stream whose frame takes over 10 s."""
        with self._lock:
            if self._live is None:
                self._live = self.pipeline.onnx()
            return self._live

    def export_bundle(self) -> bytes:  # a .zip bundle (index.export), for a download button
        from .export import export
        with tempfile.TemporaryDirectory() as tmp:
            return export(self.gallery(), Path(tmp) / "bundle.zip", pipeline=self.pipeline).read_bytes()
