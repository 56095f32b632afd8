"""A learned embedding of hand landmarks, fused with the CNN embedding of the hand crop.

The input is the `hand` detector's encoding (embedder.hands.encode_landmarks: up to two hands,
each relative to its wrist and scaled to unit size, 128 numbers); a small MLP trained with a
pytorch-metric-learning loss maps it to a unit vector. Saved like an embedder: config.json
(format byakugan-landmarks/1, with the fusion weight and a threshold) and model.safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .errors import ModelError
from .fusion import fuse, stack_landmarks
from .hands import LANDMARK_DIM

LANDMARKS_FORMAT = "byakugan-landmarks/1"
DEFAULT_LANDMARKS = "hand-landmarks"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class LandmarkEncoder(torch.nn.Module):
    """(N, 128) landmark encodings -> (N, dim) unit vectors; an all-zero row (no hands) stays zero."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = {"name": "landmarks", "in_dim": LANDMARK_DIM, "hidden": 256, "dim": 64, "weight": 0.5,
                       "threshold": 0.5, **config}
        c = self.config
        self.net = torch.nn.Sequential(
            torch.nn.Linear(c["in_dim"], c["hidden"]), torch.nn.ReLU(),
            torch.nn.Linear(c["hidden"], c["hidden"]), torch.nn.ReLU(),
            torch.nn.Linear(c["hidden"], c["dim"]),
        )
        self._fingerprint: Optional[str] = None

    name = property(lambda self: self.config["name"])
    dim = property(lambda self: int(self.config["dim"]))
    weight = property(lambda self: float(self.config["weight"]))  # share of the fused score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        present = (x.abs().sum(dim=1, keepdim=True) > 0).to(x.dtype)
        return F.normalize(self.net(x), dim=-1) * present

    @torch.inference_mode()
    def encode(self, marks: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(marks, dtype=np.float32).reshape(-1, self.config["in_dim"]))
        return self(x).numpy()

    def fingerprint(self) -> str:
        if self._fingerprint is None or self.training:
            identity = {k: v for k, v in self.config.items() if k not in ("name", "threshold", "description")}
            h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
            for key, t in sorted(self.state_dict().items()):
                h.update(key.encode())
                h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def save(self, directory: os.PathLike | str) -> Path:
        """config.json and model.safetensors (float32: the whole model is ~100 kB)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (WEIGHTS_FILE + ".tmp")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata={"format": LANDMARKS_FORMAT})
        os.replace(tmp, d / WEIGHTS_FILE)
        tmp = d / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(dict(self.config, format=LANDMARKS_FORMAT), indent=2) + "\n")
        os.replace(tmp, d / CONFIG_FILE)
        return d


def is_landmark_model(directory: Path) -> bool:
    try:
        return json.loads((directory / CONFIG_FILE).read_text()).get("format") == LANDMARKS_FORMAT
    except (OSError, ValueError):
        return False


def load_landmarks(name_or_path: Union[str, os.PathLike] = DEFAULT_LANDMARKS) -> LandmarkEncoder:
    """A landmark encoder from a directory, or by name from the shipped models/ folder."""
    from .hub import models_dir

    d = Path(name_or_path).expanduser()
    if not d.is_dir():
        d = models_dir() / str(name_or_path)
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelError(f"landmark model {name_or_path!r}: no {CONFIG_FILE} and {WEIGHTS_FILE} in {d}")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ModelError(f"landmark model config {cfg_path}: not valid JSON ({exc})") from None
    if config.pop("format", None) != LANDMARKS_FORMAT:
        raise ModelError(f"landmark model {cfg_path}: format is not {LANDMARKS_FORMAT!r}")
    model = LandmarkEncoder(config)
    try:
        model.load_state_dict({k: v.float() for k, v in load_file(str(w_path)).items()})
    except Exception as exc:
        raise ModelError(f"landmark model weights {w_path}: cannot be loaded ({exc})") from None
    return model.eval()


def resolve_landmarks(spec: Union[str, os.PathLike, LandmarkEncoder, None], detector: str) -> Optional[LandmarkEncoder]:
    """The encoder a gallery or command fuses in: "auto" is the shipped one for detector "hand" and
    none for any other; None or "none" is none; else an encoder, a shipped name or a directory.
    Landmarks exist only for "hand": naming one for another detector raises ValueError."""
    if spec == "auto":
        spec = DEFAULT_LANDMARKS if detector == "hand" else None
    if spec is None or spec == "none":
        return None
    if detector != "hand":
        raise ValueError(f"landmarks {spec!r} need detector 'hand', not {detector!r}")
    return spec if isinstance(spec, LandmarkEncoder) else load_landmarks(spec)


def embed_regions(model, encoder: Optional[LandmarkEncoder], crops: Sequence, marks: Sequence[Optional[np.ndarray]],
                  progress: bool = False) -> np.ndarray:
    """CNN embeddings of the crops, fused with the landmark embeddings when an encoder is given."""
    cnn = model.embed(list(crops), progress=progress)
    if encoder is None:
        return cnn
    return fuse(cnn, encoder.encode(stack_landmarks(marks)), encoder.weight)
