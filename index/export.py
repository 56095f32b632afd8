"""`export(gallery, out)`: a self-contained bundle another service can load without torch.

Contents: model.onnx (embedder on preprocessed pixels), index.faiss, references.json,
config.json (preprocessing, detector, model identity), thresholds.json, cohort.safetensors when
scores are cohort-normalised, and manifest.json with a format version and the SHA-256 of every file. Written to a directory, or a .zip / .tar.gz.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import zipfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from byakugan.embedder.embedding.onnx import export_onnx

from . import committed
from .archive import MAX_MANIFEST_BYTES
from .bundle import FORMAT, FORMAT_VERSION, MANIFEST, archive_kind
from .errors import GalleryError
from .gallery import Gallery
from .store import alive
from .labels import check_label
from .pipeline import Pipeline

OTHER_ARCHIVES = (".rar", ".7z", ".tar", ".gz", ".bz2", ".xz", ".zst", ".tbz2", ".txz")


def export(gallery: Gallery, out: os.PathLike | str, overwrite: bool = False,
           pipeline: Optional[Pipeline] = None) -> Path:
    """pipeline: the gallery's own (Pipeline.for_gallery), made here when not given."""
    if not isinstance(gallery, Gallery):
        raise GalleryError(f"export: expected a Gallery, got {type(gallery).__name__}")
    if not isinstance(out, (str, os.PathLike)):
        raise GalleryError(f"export: out {out!r}: must be a file or folder name (a str or os.PathLike)")
    if pipeline is not None and not isinstance(pipeline, Pipeline):
        raise GalleryError(f"export: pipeline {type(pipeline).__name__}: must be a Pipeline (or None: the gallery's own)")
    if gallery.path is not None and gallery.generation is not None and gallery.path.is_dir():
        try:  # a stale copy would bring back what a save removed
            committed.check_current(gallery.path, gallery.generation)
        except GalleryError:
            raise GalleryError(f"export: gallery {gallery.path}: another save changed it since this copy was opened; "
                               "open it again and export what it holds now") from None
    if not str(out).strip():
        raise GalleryError(f"export: {str(out)!r} is not a file or folder name")
    folder = str(out).endswith(("/", os.sep))  # "x.zip/": a folder of that name, as the slash says
    out = Path(out)
    if not len(gallery):
        raise GalleryError(f"export: gallery {gallery.path}: is empty; enrol images first")
    for label in gallery.labels():  # a gallery made before a label rule may hold one a bundle refuses
        try:
            check_label(label, new=False)
        except GalleryError as exc:
            raise GalleryError(f"export: {exc}; rename it first (byakugan rename)") from None
    if gallery.path is not None and Path(gallery.path).resolve() in out.resolve().parents:
        raise GalleryError(f"export: {out} is inside the gallery folder {gallery.path}; export somewhere else")
    made: list[Path] = []
    try:
        if file := next((p for p in out.parents if p.is_file()), None):
            raise GalleryError(f"export: {out}: {file} is a file, not a folder")
        made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed again if the export fails
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise GalleryError(f"export: {out} already exists; choose a new name, or --overwrite (overwrite=True) to replace an earlier bundle")
            check_replaceable(out, gallery)
        kind = None if folder else archive_kind(out)
        if kind is None and out.suffix.lower() in OTHER_ARCHIVES and not folder:  # would silently be a folder of that name
            raise GalleryError(f"export: {out}: {out.suffix} is not a bundle format; name it .zip or .tar.gz, or give a "
                               "folder name")
        out.parent.mkdir(parents=True, exist_ok=True)
        return _write(gallery, out, kind, pipeline, overwrite)
    except Exception as exc:  # a full disk, a name too long, a model that cannot be exported: nothing left
        for p in made:  # innermost first; a folder something else put files in meanwhile stays
            with contextlib.suppress(OSError):
                p.rmdir()
        if isinstance(exc, OSError):
            raise GalleryError(f"export: {out}: cannot write it ({exc.strerror or exc})") from None
        raise


def _is_bundle(manifest: bytes) -> bool:
    return json.loads(manifest).get("format") == FORMAT


def check_replaceable(out: Path, gallery: Gallery) -> None:
    """--overwrite replaces an earlier bundle, never anything else: not the gallery, not a folder
    of other files (its contents would be deleted), not a file that is not a bundle archive."""
    if gallery.path is not None and (out.resolve() == Path(gallery.path).resolve()
                                     or out.resolve() in Path(gallery.path).resolve().parents):
        raise GalleryError(f"export: {out} holds the gallery itself; export somewhere else")
    if out.is_symlink():
        raise GalleryError(f"export: {out} is a link; --overwrite replaces only an earlier bundle")
    try:
        if out.is_dir():
            names = {p.name for p in out.iterdir()}
            manifest = json.loads((out / MANIFEST).read_text()) if MANIFEST in names else {}
            ok = not names or (all((out / n).is_file() for n in names) and manifest.get("format") == FORMAT)
            if ok and (other := sorted(names - {MANIFEST} - set(manifest.get("files") or {}))):  # a user's own files
                raise GalleryError(f"export: {out} holds files its bundle's manifest does not list ({', '.join(other[:3])}"
                                   f"{', ...' if len(other) > 3 else ''}); --overwrite would delete them: move them out, "
                                   "or choose a new name")
        elif archive_kind(out) == "zip":
            with zipfile.ZipFile(out) as z:  # its manifest must say it is a bundle: another app's has a manifest.json too
                i = next(i for i in z.infolist() if str(PurePosixPath(i.filename)) == MANIFEST)  # "./manifest.json" too
                ok = i.file_size <= MAX_MANIFEST_BYTES and _is_bundle(z.read(i))
        elif archive_kind(out) == "tar.gz":
            with tarfile.open(out, "r:gz") as t:
                m = next(m for m in t.getmembers() if str(PurePosixPath(m.name)) == MANIFEST)
                ok = m.isfile() and m.size <= MAX_MANIFEST_BYTES and _is_bundle(t.extractfile(m).read())
        else:
            ok = False
    except (OSError, ValueError, StopIteration, tarfile.TarError, zipfile.BadZipFile, AttributeError, RecursionError):
        ok = False
    if not ok:
        raise GalleryError(f"export: {out} is not a byakugan bundle; --overwrite replaces only an earlier bundle "
                           "(remove it yourself, or choose a new name)")


def _write(gallery: Gallery, out: Path, kind: Optional[str], pipeline: Optional[Pipeline], overwrite: bool) -> Path:
    _clean_killed(out.parent)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f"{_staging_prefix()}{os.getpid()}-") as tmp:
        d = Path(tmp) / "bundle"
        d.mkdir()
        pipeline = pipeline or Pipeline.for_gallery(gallery)
        model = pipeline.encoder
        _write_onnx(model, d / "model.onnx")
        (d / "index.faiss").write_bytes(gallery.vectors.to_bytes())
        # a source's file name only: its folder on the exporting machine is not the receiver's business
        refs = [asdict(r) | {"source": _file_name(r.source)} for r in gallery.references()]
        _write_json(d / "references.json", {"references": refs, "labels": gallery.labels(),
                                            "sequences": {q.name: list(q.steps) for q in gallery.sequences}})
        _write_json(d / "config.json", {
            "model": {"name": model.name, "fingerprint": model.fingerprint(), "dim": model.dim,
                      "input": "pixels", "output": "embedding"},
            "preprocess": model.preprocess.to_dict(),
            "detector": _bundle_detector(gallery, d),
            "scoring": gallery.scoring,
            **_bundle_landmarks(gallery, pipeline, d),
            **_bundle_cohort(gallery, d),
            **({"colourless_queries": gallery.colourless_queries} if gallery.colourless_queries else {}),
            **({"adapt": gallery.adapt} if gallery.adapt else {}),
        })
        # "default" is the threshold searches use now (the automatic one when the gallery has it), so a
        # reader that knows nothing of "auto" still applies the same one.
        _write_json(d / "thresholds.json", {"default": pipeline.threshold(gallery), "per_label": {},
                                            "auto": gallery.threshold_auto})
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}
        _write_json(d / MANIFEST, {
            "format": FORMAT, "version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_fingerprint": model.fingerprint(), "files": files,
        })
        staged = Path(tmp) / "staged"  # short: the name asked for may be as long as names go
        if kind == "zip":
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(d.iterdir()):
                    z.write(p, p.name)
        elif kind == "tar.gz":
            # gzip records a file name in its header: the bundle's own, not the staging file's
            with open(staged, "wb") as raw, gzip.GzipFile(out.name, "wb", fileobj=raw) as gz, \
                    tarfile.open(fileobj=gz, mode="w") as t:
                for p in sorted(d.iterdir()):
                    t.add(p, p.name)
        else:
            staged = d
        _place(staged, out, overwrite, gallery, Path(tmp))
    return out


def _staging_prefix() -> str:
    # Named by machine and process: a folder of a killed export is known as such by the next export
    # here, and one of another machine sharing the folder is never taken for it.
    return f".export-{socket.gethostname().replace('-', '_')}-"


def _clean_killed(parent: Path) -> None:
    """Staging folders of exports from this machine killed before they could remove them (kill -9)."""
    for p in parent.glob(f"{_staging_prefix()}*-*"):
        pid = p.name[len(_staging_prefix()):].split("-", 1)[0]
        if pid.isdigit() and p.is_dir() and not alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _place(staged: Path, out: Path, overwrite: bool, gallery: Gallery, tmp: Path) -> None:
    """The bundle put at `out`. What is there now is checked again: the bundle took a while to make,
    and something may have appeared under that name since. Without overwrite nothing is replaced."""
    if overwrite and (out.exists() or out.is_symlink()):
        check_replaceable(out, gallery)
        if out.is_dir():  # an earlier bundle folder: moved aside first, deleted with the staging folder
            os.replace(out, tmp / "replaced")
        os.replace(staged, out)  # over an earlier archive file: atomically
        return
    try:
        if out.exists() or out.is_symlink():
            raise FileExistsError
        if staged.is_dir():  # rename() refuses a file, or a folder with anything in it, put there since
            os.rename(staged, out)
        else:
            try:
                os.link(staged, out)  # refuses any name in use
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                os.replace(staged, out)  # a file system without hard links: as checked just above
    except OSError as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError)) or exc.errno == errno.ENOTEMPTY:
            raise GalleryError(f"export: {out} appeared while the bundle was made; nothing was replaced (choose a "
                               "new name, or --overwrite (overwrite=True) to replace an earlier bundle)") from None
        raise


def _file_name(source: Optional[str]) -> Optional[str]:
    return source if not source else source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or source


def _write_onnx(model, path: Path) -> None:
    """The embedder as ONNX: exported from torch, or copied when it already runs on onnxruntime."""
    if getattr(model, "runtime", None) == "onnx":
        shutil.copyfile(model.path, path)
    else:
        export_onnx(model, path)


def _bundle_detector(gallery: Gallery, d: Path) -> dict:
    """The gallery's detector config; the cascade, verifier or network files it needs travel inside the bundle."""
    config = dict(gallery.detector_config)
    if config["name"] in ("anime-face", "anime-face-verified"):
        from byakugan.embedder.detection.assets import ANIMEFACE_CASCADE, ANIMEFACE_VERIFIER, fetch

        shutil.copyfile(fetch(ANIMEFACE_CASCADE, config.get("cascade")), d / "detector.xml")
        config["cascade"] = "detector.xml"
        if config["name"] == "anime-face-verified":
            shutil.copyfile(fetch(ANIMEFACE_VERIFIER, config.get("verifier")), d / "verifier.onnx")
            config["verifier"] = "verifier.onnx"
    elif config["name"] == "anime-face-net":
        from byakugan.embedder.detection.assets import ANIMEFACE_NET, ANIMEFACE_NET_VERIFIER, fetch

        shutil.copyfile(fetch(ANIMEFACE_NET, config.get("model")), d / "face_net.onnx")
        config["model"] = "face_net.onnx"
        if config.get("verify", True):
            shutil.copyfile(fetch(ANIMEFACE_NET_VERIFIER, config.get("verifier")), d / "verifier.onnx")
            config["verifier"] = "verifier.onnx"
        else:
            config.pop("verifier", None)  # not shipped, so not named
    return config


def _bundle_landmarks(gallery: Gallery, pipeline: Pipeline, d: Path) -> dict:
    """For a gallery that fuses hand landmarks: landmarks.onnx and how to fuse (embedder.scoring.fusion)."""
    if not gallery.fused:
        return {}
    encoder = pipeline.landmarks
    if getattr(encoder, "runtime", None) == "onnx":
        shutil.copyfile(encoder.path, d / "landmarks.onnx")
    else:
        import torch

        x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, encoder.config["in_dim"])).astype(np.float32))
        x[2] = 0  # an image without hands: the output must stay zero
        export_onnx(encoder, d / "landmarks.onnx", x, input_name="landmarks")
    return {"landmarks": {**gallery.landmark_settings, "split": pipeline.encoder.dim, "file": "landmarks.onnx",
                          "input": "landmarks", "output": "embedding"}}


def _bundle_cohort(gallery: Gallery, d: Path) -> dict:
    """For a gallery whose scores are cohort-normalised: the cohort file and its settings."""
    if gallery.cohort is None:
        return {}
    from byakugan.embedder.scoring.cohort import COHORT_FILE, save_cohort

    save_cohort(d, gallery.cohort)
    return {"cohort": {"top": int(gallery.cohort_settings["top"]), "file": COHORT_FILE}}


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
