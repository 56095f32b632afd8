"""The live path's models run by onnxruntime: a torch model exported once (checked against torch
to 1e-5 by export_onnx) and kept in a cache keyed by its fingerprint, so every later process
starts from the file. onnxruntime embedded 2.4-3.5x faster than torch on this 2-core CPU.
Sessions keep onnxruntime's default threads (here 2): 346 images/s one at a time against 207 with
one thread, and 355 against 176 in batches of 32 (benchmarks/onnx_threads.py)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np

from ..atomic import write_atomic
from ..preprocess import Preprocess
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
    identity = {"name": model.name, "fingerprint": model.fingerprint(), "dim": model.dim,
                "preprocess": model.preprocess.to_dict()}
    return _open(_key("model", model.name, model.fingerprint()), identity, lambda p: export_onnx(model, p),
                 _embedder)


def onnx_landmarks(encoder) -> OnnxLandmarks:
    """A LandmarkEncoder's twin on onnxruntime."""
    if getattr(encoder, "runtime", None) == "onnx":
        return encoder
    import torch

    def write(p: Path) -> None:
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, encoder.config["in_dim"])).astype(np.float32))
        x[2] = 0  # an image without hands: the output must stay zero
        export_onnx(encoder, p, x, input_name="landmarks")

    identity = {"name": encoder.name, "fingerprint": encoder.fingerprint(), "dim": encoder.dim, "weight": encoder.weight}
    twin = _open(_key("landmarks", encoder.name, encoder.fingerprint()), identity, write, _landmarks)
    # advice for new galleries: read from the model, so a cache made before it still gets it
    twin.adapt, twin.adapted_threshold = encoder.adapt, encoder.adapted_threshold
    return twin


def cached_embedder(name: str, fingerprint: str) -> Optional[OnnxEmbedder]:
    """The twin of model `name` with this fingerprint from the cache alone, without importing torch
    (a gallery knows both); None when it was never exported here or the file is unreadable."""
    return _cached(_key("model", name, fingerprint), _embedder)


def cached_landmarks(name: str, fingerprint: str) -> Optional[OnnxLandmarks]:
    return _cached(_key("landmarks", name, fingerprint), _landmarks)


def _embedder(path: Path, identity: dict) -> OnnxEmbedder:
    return OnnxEmbedder(path, Preprocess.from_dict(identity["preprocess"]), identity["name"], identity["dim"],
                        identity["fingerprint"])


def _landmarks(path: Path, identity: dict) -> OnnxLandmarks:
    return OnnxLandmarks(path, identity["name"], identity["dim"], identity["weight"], identity["fingerprint"])


# Bumped when export_onnx writes a different graph for the same weights (2: constant padding folded
# into the convolutions), so that files exported before are exported again, not reused.
EXPORT_FORM = 2


def _key(kind: str, name: str, fingerprint: str) -> Path:
    return cache_dir() / "onnx" / (re.sub(r"[^A-Za-z0-9._-]", "_", f"{kind}-{name}")[:120]
                                   + f"-{fingerprint[:32]}-e{EXPORT_FORM}.onnx")


def _fallback(path: Path) -> Path:
    """Where a model goes when the cache folder cannot be written: one folder of this user's."""
    return Path(tempfile.gettempdir()) / f"byakugan-{os.getuid()}" / "onnx" / path.name


def _cached(path: Path, make: Callable[[Path, dict], T]) -> Optional[T]:
    for where in (path, _fallback(path)):
        try:
            identity = json.loads(where.with_suffix(".json").read_text())
            if where.is_file():
                return make(where, identity)
        except Exception:  # a missing, half-copied or damaged entry: the caller exports it again
            pass
    return None


def _open(path: Path, identity: dict, write: Callable[[Path], None], make: Callable[[Path, dict], T]) -> T:
    """make(the cached file), exported by `write` first when it is missing or damaged; its identity
    (what a torch-free reader needs to run it) is written beside it, after it."""
    found = _cached(path, make)
    if found is not None:
        return found
    path = _export(path, write)
    write_atomic(path.with_suffix(".json"), json.dumps(identity).encode())
    return make(path, identity)


def _export(path: Path, write: Callable[[Path], None]) -> Path:
    """path written by `write`, atomically (a reader never sees half a file); an unwritable cache
    gets one folder of this user's in the temporary directory instead, reused by later runs."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    except OSError:
        path = _fallback(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
