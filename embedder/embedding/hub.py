"""`load(name_or_path)`: the one way to get a ready model (eval mode) and its preprocessing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..errors import ModelError
from ..preprocess import Preprocess
from .backbones import get_spec, list_backbones
from .files import CONFIG_FILE, models_dir
from .landmarks import is_landmark_model
from .model import Embedder, create_embedder, load_saved

DEFAULT_MODEL = "default"
# "imagenet" is frozen ImageNet EfficientNet-Lite0 at 160 px, the baseline trained models are
# compared with (no longer "default" where models/default is missing: it passed for it). 160 px matched 224 px in 5-shot
# accuracy on sign-digits, anime-faces and hand-fingers at ~2x the speed.
IMAGENET_MODEL = "imagenet"
FALLBACK_BACKBONE, FALLBACK_SIZE = "efficientnet_lite0", 160
# Cosine that accepts 95% of known queries on sign-digits, 5 shots (benchmarks/open_set.py: 0.75;
# anime-faces and hand-fingers gave 0.57). Galleries keep their own, set by `byakugan threshold`.
FALLBACK_THRESHOLD = 0.75


def list_models() -> list[str]:
    """Names load() accepts: shipped model folders, then backbones with ImageNet weights."""
    shipped = sorted(p.name for p in models_dir().glob("*")
                     if (p / CONFIG_FILE).is_file() and not is_landmark_model(p)) if models_dir().is_dir() else []
    return [DEFAULT_MODEL, IMAGENET_MODEL] + [n for n in shipped if n != DEFAULT_MODEL] + list_backbones()


@dataclass(frozen=True)
class ModelChoice:
    name: str
    why: str  # for the user: "detector anime-face", "4 of 5 images look like anime faces"


def model_for(detector: str) -> str:
    """The model a new gallery uses when none is named: the shipped one whose config lists the
    detector under "detectors" (models/anime-finetuned: "anime-face"), else "default"."""
    for name in list_models():
        if detector in shipped_config(name).get("detectors", ()):
            return name
    return DEFAULT_MODEL


def choose_model(detector: str, images: Sequence = ()) -> ModelChoice:
    """model_for(detector); for detector "none" given the gallery's first images, the model for
    detection.looks.JUDGE (the detector whose verifier judges them) when most are anime faces, else "default"."""
    name = model_for(detector)
    if name != DEFAULT_MODEL or detector != "none" or not images:
        return ModelChoice(name, f"detector {detector}")
    from ..detection.looks import JUDGE, judge

    looks = judge(images)
    return ModelChoice(model_for(JUDGE) if looks.anime else DEFAULT_MODEL, str(looks))


def shipped_config(name: str) -> dict:
    """The config.json of a shipped model folder, or {} where there is none (no weights are read).
    ModelError for one that cannot be read: a new gallery would quietly take another model."""
    path = models_dir() / name / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"model {name}: {path} cannot be read ({exc}); restore the folder or reinstall") from None
    if not isinstance(config, dict):
        raise ModelError(f"model {name}: {path} is not a model config (a JSON object)")
    return config


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | None = None) -> tuple[Embedder, Preprocess]:
    """Return (model in eval mode, its preprocess).

    name_or_path: a directory saved by Embedder.save, a model folder name under models/,
    "default" (models/default), "imagenet" (frozen ImageNet features), a backbone name from
    list_backbones() (ImageNet weights at their own size, no head), or "timm/NAME".
    """
    model = _resolve(str(name_or_path))
    if device:
        model = model.to(device)
    return model.eval(), model.preprocess


def _resolve(name: str) -> Embedder:
    path = Path(name).expanduser()
    shipped = models_dir() / name
    # A folder that holds a model wins; any other folder of that name (a gallery called "anime")
    # does not hide the shipped model.
    if path.is_dir() and ((path / CONFIG_FILE).is_file() or not (shipped / CONFIG_FILE).is_file()):
        return load_saved(path)
    if (shipped / CONFIG_FILE).is_file():
        return load_saved(shipped)
    if name == DEFAULT_MODEL:  # frozen ImageNet features under its name would pass for it (1280 numbers, not its 1408)
        raise ModelError(f"model {name}: {shipped} is missing (it ships with byakugan: restore the folder or reinstall; "
                         f"{IMAGENET_MODEL!r} names frozen ImageNet features)")
    if name == IMAGENET_MODEL:
        return create_embedder(
            FALLBACK_BACKBONE,
            pretrained=True,
            preprocess=replace(get_spec(FALLBACK_BACKBONE).preprocess, size=FALLBACK_SIZE),
            name=name,
            threshold=FALLBACK_THRESHOLD,
        )
    if os.sep in name or name.endswith((".json", ".safetensors")):
        raise ModelError(f"model {name!r}: no such model directory (it needs {CONFIG_FILE} and model.safetensors)")
    try:
        get_spec(name)
    except ModelError:
        raise ModelError(
            f"unknown model {name!r}; valid: {', '.join(list_models())}, 'timm/NAME', or a saved model directory"
        ) from None
    return create_embedder(name, pretrained=True)
