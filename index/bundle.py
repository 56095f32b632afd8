"""Load an exported bundle and search it: needs only onnxruntime, faiss, numpy, pillow and safetensors.

    from index import bundle
    b = bundle.load("gallery.zip")
    b.search("query.jpg", k=5)   # one result per detection
    b.embed("query.jpg")         # (D,) embedding, as the gallery stores it
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

import faiss
import numpy as np

from embedder.cohort import load_cohort, offsets
from embedder.detect import create_detector, regions
from embedder.errors import ByakuganError
from embedder.fusion import fuse, query_form, stack_landmarks
from embedder.images import ImageSource, load_image
from embedder.preprocess import Preprocess

from . import search as ranking

FORMAT = "byakugan-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ByakuganError):
    """A bundle is missing, damaged, unsafe, or of a format this loader does not know."""


def archive_kind(path: Path) -> Optional[str]:
    name = path.name.lower()
    return "zip" if name.endswith(".zip") else "tar.gz" if name.endswith((".tar.gz", ".tgz")) else None


def _safe_name(name: str, archive: Path) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or not p.parts:
        raise BundleError(f"bundle {archive}: member {name!r} would escape the target directory; refusing it")
    return name


def _extract(archive: Path, kind: str, target: Path) -> None:
    """Extract only plain files whose paths stay inside target."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _safe_name(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise BundleError(f"bundle {archive}: member {info.filename!r} is a symlink; refusing it")
                z.extractall(target)
        else:
            with tarfile.open(archive, "r:gz") as t:
                members = t.getmembers()
                for m in members:
                    _safe_name(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise BundleError(f"bundle {archive}: member {m.name!r} is not a plain file; refusing it")
                t.extractall(target, members=members, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"bundle {archive}: not a readable {kind} archive ({exc})") from None


def _verify(d: Path, origin: Path) -> dict:
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"bundle {origin}: {MANIFEST} missing; not a byakugan bundle") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {origin}: {MANIFEST} is not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {origin}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise BundleError(f"bundle {origin}: format version {manifest.get('version')!r} is unknown (this loader reads {FORMAT_VERSION})")
    for name, digest in manifest.get("files", {}).items():
        p = d / _safe_name(name, origin)
        if not p.is_file():
            raise BundleError(f"bundle {origin}: file {name} listed in the manifest is missing")
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            raise BundleError(f"bundle {origin}: file {name} does not match its SHA-256 in the manifest")
    for required in ("model.onnx", "index.faiss", "references.json", "config.json", "thresholds.json"):
        if required not in manifest.get("files", {}):
            raise BundleError(f"bundle {origin}: manifest does not list {required}")
    return manifest


class Bundle:
    def __init__(self, directory: Path, origin: Path, tmp: Optional[tempfile.TemporaryDirectory] = None):
        self._tmp = tmp  # keeps an extracted archive alive as long as the bundle
        self.manifest = _verify(directory, origin)
        self.config = json.loads((directory / "config.json").read_text())
        self.preprocess = Preprocess.from_dict(self.config["preprocess"])
        self.thresholds = json.loads((directory / "thresholds.json").read_text())
        refs = json.loads((directory / "references.json").read_text())["references"]
        self._refs = {r["id"]: ranking.Reference(**r) for r in refs}
        self._index = faiss.deserialize_index(np.frombuffer((directory / "index.faiss").read_bytes(), dtype=np.uint8))
        if self._index.ntotal != len(self._refs):
            raise BundleError(f"bundle {origin}: index holds {self._index.ntotal} vectors, references.json {len(self._refs)}")
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        self._input = self.config["model"]["input"]
        detector = dict(self.config.get("detector", {"name": "none"}))
        if "cascade" in detector:  # shipped inside the bundle, named relative to it
            detector["cascade"] = str(directory / _safe_name(detector["cascade"], origin))
        self.detector = create_detector(detector)
        self.scoring = ranking.check_scoring(self.config.get("scoring", "nearest"))
        self._protos = ranking.prototypes(self._index, self._refs) if self.scoring == "mean" else None
        self._cohort = None  # (top, vectors) when scores are cohort-normalised (embedder.cohort)
        if "cohort" in self.config:
            spec = self.config["cohort"]
            if spec.get("file") not in self.manifest["files"]:
                raise BundleError(f"bundle {origin}: manifest does not list {spec.get('file')}")
            self._cohort = (int(spec["top"]), load_cohort(directory, int(self.config["model"]["dim"]),
                                                          _safe_name(spec["file"], origin)))
        self.landmarks = self.config.get("landmarks")  # how hand landmarks are fused in, if they are
        self._marks = None
        if self.landmarks is not None:
            if self.landmarks["file"] not in self.manifest["files"]:
                raise BundleError(f"bundle {origin}: manifest does not list {self.landmarks['file']}")
            self._marks = ort.InferenceSession(str(directory / _safe_name(self.landmarks["file"], origin)),
                                               providers=["CPUExecutionProvider"])

    @property
    def threshold(self) -> float:
        return float(self.thresholds["default"])

    def labels(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self._refs.values():
            out[r.label] = out.get(r.label, 0) + 1
        return dict(sorted(out.items()))

    def _embed(self, crops: list, marks: list) -> np.ndarray:
        x = np.stack([self.preprocess.to_array(c) for c in crops])
        cnn = np.ascontiguousarray(self._session.run(None, {self._input: x})[0], np.float32)
        if self._marks is None:
            return cnn
        lm = self._marks.run(None, {self.landmarks["input"]: stack_landmarks(marks)})[0]
        return fuse(cnn, lm, float(self.landmarks["weight"]))

    def embed(self, image: ImageSource, fallback: Optional[str] = "whole") -> np.ndarray:
        """The (D,) unit embedding of the largest detection (the whole image for detector "none")."""
        img = load_image(image)
        found = regions(self.detector, img, fallback)
        if not found:
            raise BundleError(f"no {self.detector.name} found in the image")
        return self._embed([found[0].crop(img)], [found[0].landmarks])[0]

    def search(self, image: ImageSource, k: int = 5, threshold: Optional[float] = None,
               fallback: Optional[str] = None) -> list[dict]:
        """One result per detection, largest first: its box, the match (label or "unknown"), top-k hits and labels."""
        if k < 1:
            raise BundleError(f"k={k}: must be at least 1")
        img = load_image(image)
        found = regions(self.detector, img, fallback)
        if not found:
            return []
        emb = self._embed([d.crop(img) for d in found], [d.landmarks for d in found])
        fused = self.landmarks is not None
        if fused:
            emb = query_form(emb, int(self.landmarks["split"]), float(self.landmarks["weight"]))
        off = offsets(emb, self._cohort[1], self._cohort[0]) if self._cohort is not None else None
        results = ranking.search(self._index, self._refs, emb, k, self._protos, off)
        t = self.threshold if threshold is None else float(threshold)
        return [ranking.detection(list(d.box), r, t, (d.landmarks is not None) if fused else None)
                for d, r in zip(found, results)]


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
    _extract(p, kind, Path(tmp.name))
    return Bundle(Path(tmp.name), p, tmp)
