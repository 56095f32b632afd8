"""Files a detector needs that are not in this repository: found locally, else downloaded once
into the user's cache with a SHA-256 check. Offline and missing gives one error saying where to put it."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ModelError


@dataclass(frozen=True)
class Asset:
    filename: str
    url: str
    sha256: str
    env: str  # environment variable that may point at a local copy
    packaged: bool = False  # a copy ships with byakugan (its licence allows it) ...
    models_folder: Optional[str] = None  # ... in this folder of models/ (weights), else in the package's data/


ANIMEFACE_CASCADE = Asset(
    "lbpcascade_animeface.xml",
    "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml",
    "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30",
    "BYAKUGAN_ANIMEFACE_CASCADE",
    packaged=True,  # MIT (the licence text is inside the file), 246 KB: no first use needs the network
)
ANIMEFACE_VERIFIER = Asset(
    "anime_face_verifier.onnx",
    "",  # made here (byakugan.embedder.training.verifier) and shipped; nowhere to download it from
    "e6b295f1ee1376efb4c80dcb8a67a076b42d130a7eda62706753895877670cb8",
    "BYAKUGAN_ANIMEFACE_VERIFIER",
    packaged=True,
    models_folder="anime-face-verifier",  # with its model card
)
ANIMEFACE_NET = Asset(
    "anime_face_net.onnx",
    "",  # made here (byakugan.embedder.training.face_net) and shipped
    "809690d5e4ba211a3a8af1ab6311ba9a8ce14f818e11751c4bb59795ae5f6c85",
    "BYAKUGAN_ANIMEFACE_NET",
    packaged=True,
    models_folder="anime-face-net",
)
# The verifier `anime-face-net` checks its boxes with: ANIMEFACE_VERIFIER's recipe trained again with
# the network's own boxes in composed pictures (training.verifier --net-mined), so it knows its framing.
ANIMEFACE_NET_VERIFIER = Asset(
    "anime_face_net_verifier.onnx",
    "",  # made here (byakugan.embedder.training.verifier --net-mined) and shipped
    "f75f6ebd84172740e90fd1f8d995aea59e2f2b83b313c6cf26a597dea8702354",
    "BYAKUGAN_ANIMEFACE_NET_VERIFIER",
    packaged=True,
    models_folder="anime-face-net",
)
DATA_DIR = Path(__file__).resolve().parent / "data"


def shipped_path(asset: Asset) -> Path:
    """Where the copy that ships with byakugan lies (it may be absent, e.g. models/ not installed)."""
    if asset.models_folder:
        from ..embedding.files import models_dir

        return models_dir() / asset.models_folder / asset.filename
    return DATA_DIR / asset.filename


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "byakugan"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(asset: Asset, path: Optional[os.PathLike | str] = None, download: bool = True, timeout: float = 30) -> Path:
    """Path to the asset: `path` (as given), then $ENV, then the user cache, then the copy shipped in
    the package; downloads into the cache when there is none of these. Every copy but `path` is
    checked against the SHA-256 where the asset has a published file (a url)."""
    for candidate, from_env in ((path, False), (os.environ.get(asset.env), True)):
        if candidate:
            p = Path(candidate)
            if not p.is_file():
                raise ModelError(f"{asset.filename}: {p} {'is not a file' if p.exists() else 'does not exist'}")
            # $ENV stands in for the published file, so it is held to the SHA-256 a download is; a file
            # of one's own goes in as `path` (a detector setting). Files made here have no published
            # copy (no url): their variable may name a retrained one, which their loaders check.
            if from_env and asset.url and _sha256(p) != asset.sha256:
                raise ModelError(f"{asset.env}={p}: not {asset.filename} (its SHA-256 is not {asset.sha256}); point it "
                                 "at an unmodified copy or unset it (a file of your own goes in the detector's settings)")
            return p
    cached = cache_dir() / asset.filename
    if cached.is_file():
        if _sha256(cached) == asset.sha256:
            return cached
        cached.unlink()  # a damaged or partial copy; fetch it again
    shipped = shipped_path(asset)
    if asset.packaged and shipped.is_file() and _sha256(shipped) == asset.sha256:
        return shipped
    where = f"put it at {cached} or set {asset.env} to its path"
    if not download or not asset.url:
        raise ModelError(f"{asset.filename} not found; {where}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{asset.filename}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(asset.url, timeout=timeout) as r, open(tmp, "wb") as f:
            f.write(r.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"{asset.filename} is missing and could not be downloaded from {asset.url} "
                         f"({getattr(exc, 'reason', exc)}); {where}") from None
    if _sha256(tmp) != asset.sha256:
        tmp.unlink()
        raise ModelError(f"{asset.filename} downloaded from {asset.url} does not match its SHA-256 {asset.sha256}; {where}")
    os.replace(tmp, cached)
    return cached
