"""The live path's models run by onnxruntime: a torch model exported once (checked against torch
to 1e-5 by export_onnx) and kept in a cache keyed by its fingerprint, so every later process
starts from the file. onnxruntime embedded 2.4-3.5x faster than torch on this 2-core CPU
(benchmarks/watch.py measures it again side by side)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .onnx import OnnxEmbedder, OnnxLandmarks, export_onnx

CACHE_ENV = "BYAKUGAN_CACHE"
T = TypeVar("T")


def cache_dir() -> Path:
    """$BYAKUGAN_CACHE, else $XDG_CACHE_HOME/byakugan, else ~/.cache/byakugan."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "byakugan"


def onnx_embedder(model) -> OnnxEmbedder:
    """An Embedder's twin on onnxruntime: same name, dimension, fingerprint and preprocessing."""
    if getattr(model, "runtime", None) == "onnx":
        return model
    return _open(f"{model.name}-{model.fingerprint()}", lambda p: export_onnx(model, p),
                 lambda p: OnnxEmbedder(p, model.preprocess, model.name, model.dim, model.fingerprint()))


def onnx_landmarks(encoder) -> OnnxLandmarks:
    """A LandmarkEncoder's twin on onnxruntime."""
    if getattr(encoder, "runtime", None) == "onnx":
        return encoder
    import torch

    def write(p: Path) -> None:
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, encoder.config["in_dim"])).astype(np.float32))
        x[2] = 0  # an image without hands: the output must stay zero
        export_onnx(encoder, p, x, input_name="landmarks")

    return _open(f"landmarks-{encoder.name}-{encoder.fingerprint()}", write,
                 lambda p: OnnxLandmarks(p, encoder.name, encoder.dim, encoder.weight, encoder.fingerprint()))


def _open(key: str, write: Callable[[Path], None], session: Callable[[Path], T]) -> T:
    """session(the cached file for key), exported by `write` first when it is missing or damaged."""
    path = cache_dir() / "onnx" / (re.sub(r"[^A-Za-z0-9._-]", "_", key)[:160] + ".onnx")
    if path.is_file():
        try:
            return session(path)
        except Exception:  # onnxruntime's own error types: a truncated or damaged file is exported again
            pass
    return session(_export(path, write))


def _export(path: Path, write: Callable[[Path], None]) -> Path:
    """path written by `write`, atomically (a reader never sees half a file); an unwritable cache
    gets a private temporary folder instead."""
    folder, name = path.parent, path.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=".onnx")
        os.close(fd)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="byakugan-onnx-"))
        path, tmp = folder / name, str(folder / (".export-" + name))
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
