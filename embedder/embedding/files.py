"""A model folder, written once for every kind of model: config.json (with a format tag) beside
model.safetensors, a fingerprint of both, and where shipped models live. No pickle is ever read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..atomic import write_atomic
from ..errors import ModelError

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
WEIGHTS_SHA256 = "weights_sha256"  # in config.json, not in a model's config: a fingerprint never sees it


def models_dir() -> Path:
    """Where shipped models live: $BYAKUGAN_MODELS_DIR, else the repository's models/ folder."""
    env = os.environ.get("BYAKUGAN_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def config_format(directory: Path) -> Optional[str]:
    """The format tag of the config.json in directory, or None when there is no readable one."""
    return listed_config(directory).get("format")


def listed_config(directory: Path) -> dict:
    """The config.json in directory as a listing reads it, weights unchecked: {} when there is no
    readable one (loading the model names what is wrong; a listing of every model should not stop)."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def fingerprint(identity: dict, module: torch.nn.Module) -> str:
    """SHA-256 of the settings that shape the vectors and of every weight (32 hex digits)."""
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def save_folder(directory: os.PathLike | str, config: dict, fmt: str, module: torch.nn.Module, half: bool,
                beside: Optional[dict[str, Callable[[Path], object]]] = None) -> Path:
    """Write the files `beside` asks for (name: a writer of that file into the folder, such as the
    cohort), then the weights (fp16 when half), then the config that names their format and their
    SHA-256, each atomically: a save killed between them leaves weights its config does not vouch
    for, which read_config refuses (over an older save, they would have been loaded under its config)."""
    d = check_model_folder(directory)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in module.state_dict().items()}
    weights = save_tensors(state, metadata={"format": fmt})
    config = dict(config, format=fmt, **{WEIGHTS_SHA256: hashlib.sha256(weights).hexdigest()})
    beside = beside or {}
    # A save over another that fails part-way (a full disk, Ctrl-C, a file made immutable) puts the
    # old files back: the folder keeps the model it had, not one neither is.
    names = [*beside, WEIGHTS_FILE]
    had = {n: (d / n).is_file() for n in names} if (d / CONFIG_FILE).is_file() else {}
    for n in names:
        (d / f".{n}.before").unlink(missing_ok=True)  # (one a killed save left)
        if had.get(n):
            with contextlib.suppress(OSError):  # (a disk without links: as before, the old model is not kept)
                os.link(d / n, d / f".{n}.before")
    try:
        for write in beside.values():
            write(d)
        write_atomic(d / WEIGHTS_FILE, weights)
        write_atomic(d / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    except BaseException:
        for n in had:
            if (d / f".{n}.before").is_file():
                os.replace(d / f".{n}.before", d / n)
            elif not had[n]:  # new with this save, beside an old model that did not ask for it
                (d / n).unlink(missing_ok=True)
        raise
    finally:
        for n in names:
            (d / f".{n}.before").unlink(missing_ok=True)
    return d


# Files that say a folder is a gallery or a bundle: a model saved there would sit among its files.
NOT_MODEL_FILES = ("gallery.db", "gallery.json", "manifest.json")


def check_model_folder(directory: os.PathLike | str) -> Path:
    """The folder a model is saved into, made if needed; ModelError for a file, a gallery's or a
    bundle's folder, or one that cannot be made."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ModelError(f"model folder {d}: is a file; save a model into a folder")
    if found := [n for n in NOT_MODEL_FILES if (d / n).exists()]:
        raise ModelError(f"model folder {d}: holds {found[0]} (a gallery or a bundle); save the model into a folder of its own")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"model folder {d}: cannot be made ({exc.strerror or exc})") from None
    return d


def read_config(d: Path, fmt: str, what: str = "model") -> dict:
    """The config of the model folder d, without its format tag; one-line ModelError otherwise."""
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelError(f"{what} directory {d}: needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(cfg_path.read_text(), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{what} config {cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != fmt:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelError(f"{what} config {cfg_path}: format is not {fmt!r} (found {found!r})")
    config.pop("format")
    # A gallery stores them, and refuses to open past these: a cosine's, and an adapted score's (a cosine
    # plus up to the adaptation's weight, at most 2)
    for key, reach in (("threshold", 2), ("adapted_threshold", 3)):
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -reach <= v <= reach):
            raise ModelError(f"{what} config {cfg_path}: {key} {str(v)[:20]!r} must be a number from {-reach} to {reach}")
    expected = config.pop(WEIGHTS_SHA256, None)  # configs saved before it have none
    if expected is not None and hashlib.sha256(w_path.read_bytes()).hexdigest() != expected:
        raise ModelError(f"{what} directory {d}: {WEIGHTS_FILE} is not the file {CONFIG_FILE} was saved with "
                         "(a save stopped between the two, or one was copied over); save or train it again")
    return config


def _no_constant(name: str):
    # json reads NaN and Infinity by default; in a config they come only from a run that diverged
    raise ValueError(f"{name} is not a number a model config may hold")


def load_weights(module: torch.nn.Module, d: Path, what: str = "model") -> None:
    """Load model.safetensors into module (as float32); one-line ModelError when it does not fit."""
    path = d / WEIGHTS_FILE
    try:
        state = load_tensors(path.read_bytes())
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except Exception as exc:  # safetensors and torch raise many kinds for a damaged or foreign file
        raise ModelError(f"{what} weights {path}: cannot be loaded ({exc})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # every vector would be NaN, and every search would quietly match nothing or anything
        raise ModelError(f"{what} weights {path}: {bad[0]} holds NaN or infinite values (a run that diverged); retrain it")
