from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """Models exported for onnxruntime go to a folder of this run, not the user's cache (subprocesses inherit it)."""
    import os

    old = os.environ.get("BYAKUGAN_CACHE")
    os.environ["BYAKUGAN_CACHE"] = str(tmp_path_factory.mktemp("byakugan-cache"))
    yield
    if old is None:
        os.environ.pop("BYAKUGAN_CACHE", None)
    else:
        os.environ["BYAKUGAN_CACHE"] = old


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"real-data test: {DATASETS} is absent (CI always has ../shared beside the clone)")
    return DATASETS


@pytest.fixture(scope="session")
def model():
    import byakugan.embedder as embedder

    return embedder.load("default")[0]


def new_gallery(model, path=None, threshold=None, detector="none", landmarks="auto"):
    """(pipeline, new gallery) for a model, as `byakugan enroll` makes them."""
    from byakugan.index import Pipeline

    pipe = Pipeline.create(model, detector, landmarks)
    return pipe, pipe.new_gallery(path, threshold)


@pytest.fixture(scope="session")
def digits(datasets) -> dict[str, list[Path]]:
    """sign-digits, 15 seeded images per class: the first 5 to enrol, the other 10 to query."""
    rng = random.Random(0)
    out = {}
    for d in sorted((datasets / "sign-digits").iterdir()):
        files = sorted(d.glob("*.jpg"))
        rng.shuffle(files)
        out[d.name] = files[:15]
    return out


@pytest.fixture()
def tiny_images(tmp_path) -> list[Path]:
    """Three small generated images with different colours and shapes."""
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        arr = np.full((64, 48, 3), colour, np.uint8)
        arr[10 + 10 * i : 30 + 10 * i, 5:40] = 255
        p = tmp_path / f"tiny{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def heldout_anime(datasets: Path, per_class: int) -> tuple[list[Path], list[str]]:
    """A seeded sample of the 4 anime characters both shipped models were trained without."""
    rng = random.Random(0)
    files, labels = [], []
    for name in ("ame", "ceci", "fauna", "irys"):
        files += rng.sample(sorted((datasets / "anime-faces" / name).glob("*.jpg")), per_class)
        labels += [name] * per_class
    return files, labels


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def digit_gallery(model, digits, tmp_path_factory):
    """A saved gallery of 5 sign-digits images for each of 0, 3 and 7 (build once, copy to edit)."""
    path = tmp_path_factory.mktemp("digits") / "gallery"
    pipe, g = new_gallery(model, path)
    for label in ("0", "3", "7"):
        pipe.enroll(g, label, digits[label][:5])
    g.save()
    return path


def disk_state(path) -> str:
    """Everything a gallery folder holds, to compare before and after what must change nothing:
    its database's rows (WAL included) and every other file's bytes."""
    import hashlib
    import sqlite3

    parts = []
    if (Path(path) / "gallery.db").is_file():
        con = sqlite3.connect(f"file:{Path(path) / 'gallery.db'}?mode=ro", uri=True)
        parts += list(con.iterdump())
        con.close()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and not p.name.startswith("gallery.db") and p.name != ".lock":
            parts.append(f"{p.relative_to(path)} {hashlib.sha256(p.read_bytes()).hexdigest()}")
    return "\n".join(parts)
