"""Load an exported bundle and search it: needs only onnxruntime, faiss, numpy, pillow and safetensors.

    from byakugan.index import bundle
    b = bundle.load("gallery.zip")
    b.search("query.jpg", k=5)   # one result per detection
    b.embed("query.jpg")         # (D,) embedding, as the gallery stores it

The bundle's files become a read-only Gallery and a Pipeline running the ONNX models, so a bundle
answers through the same code as the live gallery.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile
from pathlib import Path
from typing import Optional

from byakugan.embedder.embedding.onnx import OnnxEmbedder, OnnxLandmarks
from byakugan.embedder.images import ImageSource
from byakugan.embedder.scoring import check_scoring
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.embedder.scoring.cohort import load_cohort

from byakugan.embedder.detection import list_detectors
from byakugan.embedder.detection.hands import hand_settings, import_mediapipe
from byakugan.embedder.detection.requires import MissingPackage, mediapipe_ready
from byakugan.embedder.errors import ByakuganError

from . import bundle_check as check
from .archive import MANIFEST, BundleError, archive_kind, extract, safe_name
from .gallery import Gallery
from .pipeline import Pipeline
from .ranking import Recognition
from .settings import check_meta
from .vectors import FlatStore

FORMAT = "byakugan-bundle"
FORMAT_VERSION = 1
REQUIRED = ("model.onnx", "index.faiss", "references.json", "config.json", "thresholds.json")

def _last_line(exc: Exception) -> str:
    """A third-party error's last line, shortened: the error stays one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1][:200] if text else ''}"


__all__ = ["Bundle", "BundleError", "FORMAT", "FORMAT_VERSION", "MANIFEST", "archive_kind", "load"]


def _verify(d: Path, origin: Path) -> dict:
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (FileNotFoundError, IsADirectoryError):
        if d == origin and any((d / name).is_file() for name in ("gallery.db", "gallery.json")):  # taken for one
            raise BundleError(f"bundle {origin}: is a gallery folder, not a bundle; `byakugan export {origin} OUT.zip` "
                              "makes one (the CLI, the server and Gallery.open read the folder itself)") from None
        raise BundleError(f"bundle {origin}: {MANIFEST} missing; not a byakugan bundle") from None
    except (ValueError, RecursionError) as exc:  # nested too deep; a number of 5,000 digits (ValueError)
        raise BundleError(f"bundle {origin}: {MANIFEST} is not valid JSON ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"bundle {origin}: {MANIFEST} must be an object whose 'files' maps names to SHA-256 digests")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {origin}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if type(manifest.get("version")) is not int or manifest["version"] != FORMAT_VERSION:  # not true, not 1.0
        raise BundleError(f"bundle {origin}: format version {manifest.get('version')!r} is unknown (this loader reads {FORMAT_VERSION})")
    for required in REQUIRED:  # before hashing: a bundle without them is refused without reading gigabytes
        if required not in files:
            raise BundleError(f"bundle {origin}: manifest does not list {required}")
    for name, digest in files.items():
        p = d / safe_name(name, origin)
        if not p.is_file():
            raise BundleError(f"bundle {origin}: file {name} listed in the manifest is missing")
        with p.open("rb") as f:  # in pieces: memory stays flat whatever the file's size
            if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                raise BundleError(f"bundle {origin}: file {name} does not match its SHA-256 in the manifest")
    return manifest


class Bundle:
    def __init__(self, directory: Path, origin: Path, tmp: Optional[tempfile.TemporaryDirectory] = None):
        self._tmp = tmp  # keeps an extracted archive alive as long as the bundle
        self.manifest = _verify(directory, origin)
        self._dir, self._origin = directory, origin
        # Every file is checked (index.bundle_check) before any of it is used: a re-signed hand edit
        # is one BundleError line naming the file, never a traceback or a wrong answer later.
        self.config = check.read_json(directory, "config.json", origin)
        self.preprocess = check.check_config(self.config, origin, list_detectors())
        if self.manifest.get("model_fingerprint", self.config["model"]["fingerprint"]) != self.config["model"]["fingerprint"]:
            raise BundleError(f"bundle {origin}: {MANIFEST}: model_fingerprint {self.manifest['model_fingerprint']!r:.40} is "
                              f"not config.json's {self.config['model']['fingerprint']!r:.40}")
        self.thresholds = check.read_json(directory, "thresholds.json", origin)
        refs = check.read_json(directory, "references.json", origin)
        meta = self._meta(refs)
        cohort = self._cohort(meta)
        marks = self._landmarks(meta)
        vectors = self._vectors(meta, check.check_reference_set(refs, origin))
        self.gallery = Gallery(meta, vectors, None, cohort)
        model = self.config["model"]
        try:
            encoder = OnnxEmbedder(self._member("model.onnx"), self.preprocess, model["name"], model["dim"],
                                   model["fingerprint"], model["input"])
        except Exception as exc:  # onnxruntime's own error types for a file that is not a model
            raise BundleError(f"bundle {origin}: model.onnx: not a model onnxruntime can load ({_last_line(exc)})") from None
        check.check_embedder(encoder, origin)
        self.pipeline = Pipeline(encoder, meta["detector"], marks)
        self._check_detector(meta["detector"])
        self.scoring = self.gallery.scoring

    def _check_detector(self, detector: dict) -> None:
        """The detector is made now (the hand detector's settings only are checked: MediaPipe is slow
        to start), so a bad setting or file is refused here, not by every search as the client's fault."""
        files = [Path(detector[k]).name for k in ("cascade", "verifier", "model") if k in detector]
        try:
            if detector["name"] == "hand":
                hand_settings(detector)
                mediapipe_ready(import_mediapipe)  # imported (0.4 s), not started
            else:  # the pipeline's own: made once, kept for the searches
                self.pipeline.detector
        except MissingPackage as exc:  # this program's packages, not the bundle's files
            raise BundleError(f"bundle {self._origin}: {exc}") from None
        except Exception as exc:  # OpenCV's and onnxruntime's own error types, or ModelError
            raise BundleError(f"bundle {self._origin}: {', '.join(files) or 'config.json'}: not a working "
                              f"{detector['name']} detector ({_last_line(exc)})") from None

    def _member(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise BundleError(f"bundle {self._origin}: manifest does not list {name}")
        return self._dir / safe_name(name, self._origin)

    def _meta(self, refs: dict) -> dict:
        """The read-only gallery's metadata, checked by the rules a gallery folder's is."""
        model, origin = self.config["model"], self._origin
        detector = dict(self.config.get("detector", {"name": "none"}))
        for key in ("cascade", "verifier", "model"):  # shipped inside the bundle, named relative to it
            if key in detector:
                detector[key] = str(self._member(detector[key]))
        try:
            scoring = check_scoring(self.config.get("scoring", "nearest"))
            if self.config.get("adapt") is not None and Adaptation.from_dict(self.config["adapt"]).cohort \
                    and "cohort" not in self.config:  # as a gallery refuses it (index.settings.set_adapt)
                raise ValueError(f"adapt cohort {self.config['adapt']['cohort']:g}: the bundle holds no cohort to fit with")
        except ValueError as exc:
            raise BundleError(f"bundle {origin}: config.json: {exc}") from None
        meta = {"model": {k: model[k] for k in ("name", "fingerprint", "dim")}, "detector": detector,
                "threshold": check.check_thresholds(self.thresholds, origin, self.config.get("adapt")), "read_only": True,
                "threshold_mode": "auto" if self.thresholds.get("auto") is True else "fixed", "scoring": scoring,
                **{k: v for k, v in refs.items() if k in ("references", "sequences")},
                **{k: v for k, v in self.config.items() if k in ("colourless_queries", "adapt")}}
        check.check_references(refs, origin)
        try:
            check_meta({**meta, "next_id": 0})
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle {origin}: references.json: {exc}") from None
        return meta

    def _cohort(self, meta: dict):
        """The cohort rows when scores are cohort-normalised (byakugan.embedder.scoring.cohort)."""
        if "cohort" not in self.config:
            return None
        spec, origin = self.config["cohort"], self._origin
        self._member(spec["file"])  # listed, so checked against its digest
        try:
            cohort = load_cohort(self._dir, int(meta["model"]["dim"]), safe_name(spec["file"], origin))
        except BundleError:
            raise
        except ByakuganError as exc:
            raise BundleError(f"bundle {origin}: {spec['file']}: {str(exc).split(': ', 1)[-1]}") from None
        check.check_cohort(cohort, origin, spec["file"])
        meta["cohort"] = {"top": int(spec["top"]), "size": len(cohort)}
        return cohort

    def _landmarks(self, meta: dict):
        """The landmark encoder when hand landmarks are fused in."""
        self.landmarks = lm = self.config.get("landmarks")
        if lm is None:
            return None
        meta["landmarks"] = {k: lm[k] for k in ("name", "fingerprint", "dim", "weight")}
        try:
            marks = OnnxLandmarks(self._member(lm["file"]), lm["name"], lm["dim"], lm["weight"], lm["fingerprint"], lm["input"])
        except BundleError:
            raise
        except Exception as exc:  # onnxruntime's own error types
            raise BundleError(f"bundle {self._origin}: {lm['file']}: not a model onnxruntime can load ({_last_line(exc)})") from None
        check.probe_landmarks(marks, self._origin)
        return marks

    def _vectors(self, meta: dict, ids) -> FlatStore:
        origin = self._origin
        try:
            vectors = FlatStore.from_bytes(self._member("index.faiss").read_bytes())
        except ValueError as exc:
            raise BundleError(f"bundle {origin}: index.faiss: not a FAISS index ({exc})") from None
        dim = int(meta["model"]["dim"]) + (int(meta["landmarks"]["dim"]) if "landmarks" in meta else 0)
        check.check_index(vectors, dim, ids, origin)
        return vectors

    @property
    def threshold(self) -> float:
        """The threshold searches use (the gallery's automatic one when it had one)."""
        return self.pipeline.threshold(self.gallery)

    def labels(self) -> dict[str, int]:
        return self.gallery.labels()

    def tracker(self, settings=None):
        """Follows a stream of frames with the bundle's models and sequences (index.tracker.Tracker)."""
        from .tracker import Tracker

        return Tracker(self.pipeline, self.gallery, settings)

    def embed(self, image: ImageSource, fallback: Optional[str] = "whole"):
        """The (D,) unit embedding of the first detection (the whole image for detector "none")."""
        found = self.pipeline.regions(image, every=False, fallback=fallback)
        if not found:
            raise BundleError(f"no {self.pipeline.detector_config['name']} found in the image")
        return self.pipeline.embed_regions([found[0].crop], [found[0].landmarks])[0]

    def recognize(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
                  fallback: Optional[str] = "whole") -> list[Recognition]:
        """One answer per detection, in the detector's order; the whole image (found False) when nothing is
        detected, unless fallback is None."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise BundleError(f"k={k!r}: must be a whole number of at least 1")
        return self.pipeline.recognize(self.gallery, image, k, threshold, fallback)

    def search(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
               fallback: Optional[str] = "whole") -> list[dict]:
        """One result per detection, in the detector's order: its box, whether it was detected, the match
        (label or "unknown", with its confidence), top-k hits and labels."""
        return [r.to_dict() for r in self.recognize(image, k, threshold, fallback)]


def load(path: os.PathLike | str) -> Bundle:
    """Open a bundle directory, .zip or .tar.gz, checking every file against the manifest."""
    if not isinstance(path, (str, os.PathLike)):
        raise BundleError(f"bundle {path!r}: must be a path (a str or os.PathLike)")
    if not str(path).strip():  # Path("") is the working folder
        raise BundleError(f"bundle {str(path)!r}: is empty; give a bundle's directory, .zip or .tar.gz")
    p = Path(path)
    if not p.exists():
        raise BundleError(f"bundle {p}: does not exist")
    kind = archive_kind(p)
    if p.is_dir():
        return Bundle(p, p)
    if kind is None:
        raise BundleError(f"bundle {p}: expected a directory, .zip or .tar.gz")
    if not p.is_file():  # a FIFO would block the read until something writes into it
        raise BundleError(f"bundle {p}: is not a regular file (a pipe, socket or device); expected a .zip or .tar.gz file")
    tmp = tempfile.TemporaryDirectory(prefix="byakugan-bundle-")
    extract(p, kind, Path(tmp.name))
    return Bundle(Path(tmp.name), p, tmp)
