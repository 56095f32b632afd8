"""Labelled image folders (one sub-folder per class), the splits training and evaluation need, and
the checks they make before any image is embedded: enough classes to learn from, paths to write."""

from __future__ import annotations

import math
import numbers
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from ..detection.base import Detection
from ..embedding.files import CONFIG_FILE, config_format
from ..atomic import check_writable
from ..errors import ByakuganError
from ..images import list_images, load_image


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # "dataset/class", so equal class names in two datasets stay apart
    dataset: str
    box: Optional[tuple[int, int, int, int]] = None  # x, y, w, h of the crop trained on (training.crops); None: whole

    def image(self) -> Image.Image:
        img = load_image(self.path)
        return img if self.box is None else Detection(self.box).crop(img)

    def source(self) -> Path | Image.Image:
        """What to hand model.embed: the path, or the crop when there is a box."""
        return self.path if self.box is None else self.image()


def scan(data_dirs: Sequence[os.PathLike | str], per_class: Optional[int] = None, seed: int = 0,
         classes: Optional[Sequence[str]] = None) -> list[Sample]:
    """Every image under DATA_DIR/CLASS/ for each DATA_DIR; per_class keeps a seeded sample of each
    class, and `classes` (folder names) keeps only those classes."""
    rng = random.Random(seed)
    out: list[Sample] = []
    seen: dict[Path, Path] = {}
    for d in map(Path, data_dirs):
        if not d.is_dir():
            raise ByakuganError(f"data folder {d}: not a folder")
        if (same := seen.setdefault(d.resolve(), d)) is not d:  # its images would count twice
            raise ByakuganError(f"data folder {d}: given twice ({same} is the same folder); name each once")
        # A hidden folder (.ipynb_checkpoints, .git) is no class.
        folders = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        if not folders:
            raise ByakuganError(f"data folder {d}: no class sub-folders (expected DATA_DIR/CLASS/image.jpg)")
        if classes is not None:
            missing = sorted(set(classes) - {c.name for c in folders})
            if missing:
                raise ByakuganError(f"data folder {d}: no class {missing}; it has {[c.name for c in folders]}")
            folders = [c for c in folders if c.name in set(classes)]
        listed = {c: list_images(c) for c in folders}
        empty = [c.name for c, files in listed.items() if not files]
        if empty:  # dropping them would train or evaluate other classes than the user thinks
            raise ByakuganError(f"data folder {d}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:5])}"
                                f"{' ...' if len(empty) > 5 else ''} hold{'' if len(empty) > 1 else 's'} no images; "
                                f"add images or move {'them' if len(empty) > 1 else 'it'} out")
        for c, files in listed.items():
            if per_class is not None:
                rng.shuffle(files)
                files = sorted(files[:per_class])
            out += [Sample(f, f"{d.name}/{c.name}", d.name) for f in files]
    return out


def split_classes(samples: list[Sample], holdout: Sequence[str]) -> tuple[list[Sample], list[Sample]]:
    """(train, held out): samples of the classes named in `holdout` go to the second.

    An entry is "dataset/class", or a dataset name alone to hold out all of its classes.
    """
    known, datasets = {s.label for s in samples}, {s.dataset for s in samples}
    unknown = sorted(h for h in set(holdout) if h not in known and h not in datasets)
    if unknown:
        raise ByakuganError(f"held-out classes {unknown} not found; classes look like {sorted(known)[:3]}, "
                            f"datasets are {sorted(datasets)}")
    held = set(holdout)
    is_held = [s.label in held or s.dataset in held for s in samples]
    return [s for s, h in zip(samples, is_held) if not h], [s for s, h in zip(samples, is_held) if h]


def pick_holdout(samples: list[Sample], dataset: str, n: int, seed: int = 0) -> list[str]:
    """A seeded choice of n class labels of one dataset to hold out of training."""
    classes = sorted({s.label for s in samples if s.dataset == dataset})
    if n > len(classes) - 2:
        raise ByakuganError(f"cannot hold out {n} of {dataset}'s {len(classes)} classes")
    return sorted(random.Random(seed).sample(classes, n))


def check_training_classes(train: Sequence[Sample], held: Sequence[Sample]) -> None:
    """Metric learning needs positives and negatives: 2 or more classes of 2 or more images each.
    Smaller classes may come along: MPerClassSampler draws their images again to fill its m per class."""
    counts = Counter(s.label for s in train)
    enough = sorted(c for c, n in counts.items() if n >= 2)
    if len(enough) < 2:
        out = f" after holding out {len({s.label for s in held})}" if held else ""
        raise ByakuganError(f"training needs at least 2 classes with 2 or more images each; found {len(counts)} "
                            f"class{'' if len(counts) == 1 else 'es'}{out}, {len(enough)} with 2 or more images"
                            + (f" ({', '.join(enough)})" if enough else ""))


def check_setting(name: str, value: object, low: float, high: float = math.inf, above: bool = False,
                  whole: bool = False) -> int | float:
    """A training setting is a number (whole when `whole`), finite, >= low (> low when `above`) and
    <= high; returned as Python's own int or float (numpy's are taken, but json and random refuse them)."""
    kind = numbers.Integral if whole else numbers.Real
    # a whole number is never NaN, and math.isfinite cannot take one past float's range
    if isinstance(value, bool) or not isinstance(value, kind) or not whole and not math.isfinite(value) \
            or value < low or (above and value == low) or value > high:
        rule = f"{'> ' if above else '>= '}{low}" + ("" if high == math.inf else f" and <= {high}")
        shown = value if isinstance(value, numbers.Number) and not isinstance(value, bool) else repr(value)
        raise ByakuganError(f"{name.replace('_', ' ')} {shown} must be {rule}, a {'whole' if whole else 'finite'} number")
    return int(value) if whole else float(value)


# What training.checkpoint.save_checkpoint writes, state.json last
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.pt", "state.json")
MAX_SIZE = 1024  # input pixels a side: a run's views and features grow with its square (100,000 filled 24 GB)


def check_places(out: os.PathLike | str, data: Sequence[os.PathLike | str], cache: Optional[str]) -> None:
    """Before any work: the model and cache folders are not inside a data folder (the next run would
    read them as classes), and the cache folder can be written."""
    for what, place in (("out", out), ("cache", cache)):
        o = Path(place).resolve() if place is not None else None
        for d in data if o is not None else ():
            if o == Path(d).resolve() or Path(d).resolve() in o.parents:
                raise ByakuganError(f"{what} {place}: lies inside the data folder {d}, where the next run would take it "
                                    "for a class; give a folder outside it")
    if cache is not None:
        check_writable(cache, "cache", folder=True)


def check_device(device: object) -> str:
    """A torch device this machine has: cpu, or cuda / cuda:N where a GPU is seen, or mps."""
    import torch

    try:
        kind = torch.device(device).type if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        kind = None
    have = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not have.get(kind, False):
        valid = ", ".join(k + (":N" if k == "cuda" else "") for k, ok in have.items() if ok)
        raise ByakuganError(f"device {device!r}: not one this machine has; valid: {valid}")
    return str(device)  # (json keeps it in training.json)


def check_model_out(path: os.PathLike | str, fmt: str, resume: Optional[bool] = None, overwrite: bool = False,
                    cache: Optional[str] = None) -> None:
    """That training may write its model folder `path`: new or empty; a model of format `fmt`
    (or an unfinished run's checkpoint) only when asked to go on (resume) or replace it (overwrite);
    never a folder holding anything else, whose files training would overwrite. resume None: the
    trainer cannot go on from a checkpoint. cache: the run's own --cache folder, which may lie inside."""
    check_writable(path, "out", folder=True)
    p = Path(path)
    mine = Path(cache).resolve() if cache else None
    entries = sorted(e.name for e in p.iterdir() if not e.name.startswith(".")  # .DS_Store, .gitkeep
                     and e.resolve() != mine) if p.is_dir() else []
    if not entries:
        return
    found = config_format(p)
    # a run stopped before it saved a model (other things, its --cache say, may sit beside its checkpoint),
    # perhaps in its first checkpoint, before state.json: files of its own that --overwrite may replace
    ckpt = p / "checkpoint"
    files = sorted(f.name for f in ckpt.iterdir()) if ckpt.is_dir() else []
    unfinished = resume is not None and found is None and ("state.json" in files or (
        any(f in CHECKPOINT_FILES for f in files) and all(f in CHECKPOINT_FILES or f.startswith(".") for f in files)))
    if found != fmt and not unfinished:
        what = f"a model of another kind ({found})" if found else f"not a model folder (it has {', '.join(entries[:3])})"
        raise ByakuganError(f"out {p}: {what}; training would write into it, give a new or empty folder")
    if not (resume or overwrite):
        what = "a trained model" if (p / CONFIG_FILE).is_file() else "an unfinished run's checkpoint"
        go_on = "" if resume is None else "--resume to go on from its checkpoint, "
        raise ByakuganError(f"out {p}: holds {what}; {go_on}--overwrite to replace it, or give a new folder")
