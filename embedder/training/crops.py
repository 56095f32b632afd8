"""Training on what a gallery sees: each image cropped by the detector its galleries will use.

A gallery embeds the first detection of a picture (the whole picture when none is found), but
training used to see whole pictures: for a source of whole frames (drone-gestures, anime-scenes)
the model learnt rooms and bodies, then met tight hand or face crops. `crop_samples` gives each
sample the box `Pipeline.regions(every=False, fallback="whole")` would crop. Boxes are cached per
dataset and detector setting as JSON (the image's resolved path -> its box or null, with the file's
size and time so a changed file is detected again), so a later run, or a fold sampling other images
of the same source, detects only what is new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from ..atomic import write_atomic
from ..detection import create_detector, list_detectors
from ..errors import ByakuganError
from ..images import load_image
from .data import Sample

ALL = "*"  # the key of a detector for every dataset not named


def parse_detectors(specs: Sequence[str]) -> dict[str, str]:
    """["hand", "anime-scenes=anime-face"] -> {"*": "hand", "anime-scenes": "anime-face"}."""
    out: dict[str, str] = {}
    for spec in specs:
        dataset, eq, name = spec.rpartition("=")
        if eq and not dataset:
            raise ByakuganError(f"detector {spec!r}: name the data folder before '=' (DATASET=NAME), or give NAME alone")
        if (dataset or ALL) in out:
            raise ByakuganError(f"detector {spec!r}: {dataset or 'every dataset'} already has detector "
                                f"{out[dataset or ALL]!r}; give one detector a data folder")
        out[dataset or ALL] = name
    return out


def check_detectors(detectors: Mapping[str, str], data: Sequence[str]) -> None:
    names = {Path(d).name for d in data}
    for dataset, name in detectors.items():
        if name not in list_detectors():
            raise ByakuganError(f"detector {name!r} for {dataset if dataset != ALL else 'every dataset'}: "
                                f"not one of {', '.join(list_detectors())}")
        if dataset != ALL and dataset not in names:
            raise ByakuganError(f"detector for dataset {dataset!r}: no such data folder; the folders are "
                                f"{', '.join(sorted(names))}")


def detector_for(detectors: Mapping[str, str], dataset: str) -> str:
    return detectors.get(dataset, detectors.get(ALL, "none"))


def crop_samples(samples: Sequence[Sample], detectors: Mapping[str, str], cache: Optional[str] = None,
                 log: Callable[[str], None] = print) -> list[Sample]:
    """The samples with the box of their first detection; whole-picture samples (no box) where
    the dataset's detector is "none" or finds nothing."""
    out: list[Sample] = []
    for dataset, group in groupby(samples, key=lambda s: s.dataset):
        group = list(group)
        name = detector_for(detectors, dataset)
        if name == "none":
            out += group
            continue
        boxes = _boxes(group, name, cache)
        found = sum(b is not None for b in boxes)
        log(f"crops of {dataset} by {name}: found in {found} of {len(group)} images (the rest stay whole)")
        out += [replace(s, box=tuple(b) if b else None) for s, b in zip(group, boxes)]
    return out


def _boxes(group: list[Sample], name: str, cache: Optional[str]) -> list[Optional[list[int]]]:
    detector = create_detector(name)
    setting = hashlib.sha256(json.dumps(detector.config, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) / f"boxes-{group[0].dataset}-{name}-{setting}.json" if cache else None
    known: dict = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    keys = [(str(s.path.resolve()), _stamp(s.path)) for s in group]
    todo = [(s, k) for s, k in zip(group, keys) if known.get(k[0], {}).get("file") != k[1]]
    try:
        for s, (key, stamp) in tqdm(todo, desc=f"detecting {name}", unit="img", leave=False):
            found = detector(load_image(s.path))
            known[key] = {"box": list(map(int, found[0].box)) if found else None, "file": stamp}
    finally:  # an interrupted run keeps the boxes it found
        if hasattr(detector, "close"):
            detector.close()
        if path is not None and todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(known, sort_keys=True).encode())
    return [known[key]["box"] for key, _ in keys]


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def stamps(group: list[Sample]) -> str:
    """Each file's size and modification time, as a cache of what was computed from them records them."""
    return json.dumps([_stamp(s.path) for s in group])


def still_current(path: Optional[Path], files: str) -> bool:
    """Whether a cache file (safetensors) exists and was made from these files as they are now: one
    keyed by their paths alone would answer for images replaced under the same names. One made before
    caches recorded them is taken as it is."""
    if path is None or not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        made = (f.metadata() or {}).get("files")
    return made is None or made == files
