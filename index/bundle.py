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
import os
import tempfile
from pathlib import Path
from typing import Optional

from byakugan.embedder.embedding.onnx import OnnxEmbedder, OnnxLandmarks
from byakugan.embedder.images import ImageSource
from byakugan.embedder.preprocess import Preprocess
from byakugan.embedder.scoring import check_scoring
from byakugan.embedder.scoring.cohort import load_cohort

from .archive import MANIFEST, BundleError, archive_kind, extract, safe_name
from .gallery import Gallery
from .pipeline import Pipeline
from .sequences import check_sequences
from .ranking import Recognition
from .vectors import FlatStore

FORMAT = "byakugan-bundle"
FORMAT_VERSION = 1
REQUIRED = ("model.onnx", "index.faiss", "references.json", "config.json", "thresholds.json")

__all__ = ["Bundle", "BundleError", "FORMAT", "FORMAT_VERSION", "MANIFEST", "archive_kind", "load"]


def _verify(d: Path, origin: Path) -> dict:
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise BundleError(f"bundle {origin}: {MANIFEST} missing; not a byakugan bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {origin}: {MANIFEST} is not valid JSON ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"bundle {origin}: {MANIFEST} must be an object whose 'files' maps names to SHA-256 digests")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {origin}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise BundleError(f"bundle {origin}: format version {manifest.get('version')!r} is unknown (this loader reads {FORMAT_VERSION})")
    for name, digest in manifest.get("files", {}).items():
        p = d / safe_name(name, origin)
        if not p.is_file():
            raise BundleError(f"bundle {origin}: file {name} listed in the manifest is missing")
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            raise BundleError(f"bundle {origin}: file {name} does not match its SHA-256 in the manifest")
    for required in REQUIRED:
        if required not in manifest.get("files", {}):
            raise BundleError(f"bundle {origin}: manifest does not list {required}")
    return manifest


class Bundle:
    def __init__(self, directory: Path, origin: Path, tmp: Optional[tempfile.TemporaryDirectory] = None):
        self._tmp = tmp  # keeps an extracted archive alive as long as the bundle
        self.manifest = _verify(directory, origin)
        listed = self.manifest["files"]

        def member(name: str) -> Path:
            if name not in listed:
                raise BundleError(f"bundle {origin}: manifest does not list {name}")
            return directory / safe_name(name, origin)

        self.config = json.loads((directory / "config.json").read_text())
        self.preprocess = Preprocess.from_dict(self.config["preprocess"])
        self.thresholds = json.loads((directory / "thresholds.json").read_text())
        model = self.config["model"]
        detector = dict(self.config.get("detector", {"name": "none"}))
        for key in ("cascade", "verifier", "model"):  # shipped inside the bundle, named relative to it
            if key in detector:
                detector[key] = str(member(detector[key]))
        cohort = None
        meta = {"model": {k: model[k] for k in ("name", "fingerprint", "dim")}, "detector": detector,
                "threshold": float(self.thresholds["default"]), "read_only": True,
                "threshold_mode": "auto" if self.thresholds.get("auto") is True else "fixed",
                "scoring": check_scoring(self.config.get("scoring", "nearest")),
                **{k: v for k, v in json.loads((directory / "references.json").read_text()).items()
                   if k in ("references", "sequences")}}
        if "cohort" in self.config:  # scores are cohort-normalised (byakugan.embedder.scoring.cohort)
            spec = self.config["cohort"]
            member(spec.get("file"))  # listed, so checked against its digest
            cohort = load_cohort(directory, int(model["dim"]), safe_name(spec["file"], origin))
            meta["cohort"] = {"top": int(spec["top"]), "size": len(cohort)}
        self.landmarks = self.config.get("landmarks")  # how hand landmarks are fused in, if they are
        marks = None
        if self.landmarks is not None:
            lm = self.landmarks
            meta["landmarks"] = {k: lm[k] for k in ("name", "fingerprint", "dim", "weight")}
            marks = OnnxLandmarks(member(lm["file"]), lm["name"], lm["dim"], lm["weight"], lm["fingerprint"], lm["input"])
        vectors = FlatStore.from_bytes((directory / "index.faiss").read_bytes())
        if len(vectors) != len(meta["references"]):
            raise BundleError(f"bundle {origin}: index holds {len(vectors)} vectors, references.json {len(meta['references'])}")
        try:
            check_sequences(meta.get("sequences"))
        except ValueError as exc:
            raise BundleError(f"bundle {origin}: references.json: {exc}") from None
        self.gallery = Gallery(meta, vectors, None, cohort)
        encoder = OnnxEmbedder(directory / "model.onnx", self.preprocess, model["name"], model["dim"],
                               model["fingerprint"], model["input"])
        self.pipeline = Pipeline(encoder, detector, marks)
        self.scoring = self.gallery.scoring

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
        """The (D,) unit embedding of the largest detection (the whole image for detector "none")."""
        found = self.pipeline.regions(image, every=False, fallback=fallback)
        if not found:
            raise BundleError(f"no {self.pipeline.detector_config['name']} found in the image")
        return self.pipeline.embed_regions([found[0].crop], [found[0].landmarks])[0]

    def recognize(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
                  fallback: Optional[str] = "whole") -> list[Recognition]:
        """One answer per detection, largest first; the whole image (found False) when nothing is
        detected, unless fallback is None."""
        if k < 1:
            raise BundleError(f"k={k}: must be at least 1")
        return self.pipeline.recognize(self.gallery, image, k, threshold, fallback)

    def search(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
               fallback: Optional[str] = "whole") -> list[dict]:
        """One result per detection, largest first: its box, whether it was detected, the match
        (label or "unknown", with its confidence), top-k hits and labels."""
        return [r.to_dict() for r in self.recognize(image, k, threshold, fallback)]


def load(path: os.PathLike | str) -> Bundle:
    """Open a bundle directory, .zip or .tar.gz, checking every file against the manifest."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"bundle {p}: does not exist")
    kind = archive_kind(p)
    if p.is_dir():
        return Bundle(p, p)
    if kind is None:
        raise BundleError(f"bundle {p}: expected a directory, .zip or .tar.gz")
    tmp = tempfile.TemporaryDirectory(prefix="byakugan-bundle-")
    extract(p, kind, Path(tmp.name))
    return Bundle(Path(tmp.name), p, tmp)
