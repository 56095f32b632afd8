"""A learned embedding of hand landmarks, fused with the CNN embedding of the hand crop.

The input is the `hand` detector's encoding (embedder.detection.hands.encode_landmarks: up to two hands,
each relative to its wrist and scaled to unit size, 128 numbers); a small MLP trained with a
pytorch-metric-learning loss maps it to a unit vector. Two forms (config "hands"):
- "joint" (models saved before it existed): one MLP over both hands' 128 numbers;
- "each": one MLP shared by both hand slots, each hand embedded alone into half the output, the
  halves joined in slot order. Data with one hand per picture then trains the net that a second
  hand goes through too (the joint form never trains the weights of a slot it never sees filled);
- "sum": the same net, the two hands' vectors added instead of joined: no slot order, so a pair
  of hands whose handedness MediaPipe reads the other way round (a mirrored selfie camera against
  a photo) gives the same vector.
Saved like an embedder: config.json (format byakugan-landmarks/1, with the fusion weight and a
threshold) and model.safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..detection.hands import LANDMARK_DIM
from ..errors import ModelError
from .files import config_format, fingerprint, listed_config, load_weights, models_dir, read_config, save_folder

LANDMARKS_FORMAT = "byakugan-landmarks/1"
HANDS = ("joint", "each", "sum")
HAND_DIM = LANDMARK_DIM // 2
DEFAULT_LANDMARKS = "hand-landmarks-2"  # new hand galleries; older ones keep the model they name


class LandmarkEncoder(torch.nn.Module):
    """(N, 128) landmark encodings -> (N, dim) unit vectors; an all-zero row (no hands) stays zero."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = {"name": "landmarks", "in_dim": LANDMARK_DIM, "hidden": 256, "dim": 64, "weight": 0.5,
                       "threshold": 0.5, **config}
        c = self.config
        # "hands" is read, not defaulted into the config: a default there would change the
        # fingerprint of every model saved before it, and with it every gallery made with one.
        hands = c.get("hands", "joint")
        if hands not in HANDS:
            raise ModelError(f"landmark model hands {hands!r}: must be one of {', '.join(HANDS)}")
        self.per_hand, self.sum = hands in ("each", "sum"), hands == "sum"
        if hands == "each" and c["dim"] % 2 or self.per_hand and c["in_dim"] != LANDMARK_DIM:
            raise ModelError(f"landmark model with hands {hands!r}: needs in_dim {LANDMARK_DIM} and, for 'each', an "
                             f"even dim; not {c['in_dim']} and {c['dim']}")
        n_in, n_out = (HAND_DIM - 1, c["dim"] if self.sum else c["dim"] // 2) if self.per_hand else (c["in_dim"], c["dim"])
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, c["hidden"]), torch.nn.ReLU(),
            torch.nn.Linear(c["hidden"], c["hidden"]), torch.nn.ReLU(),
            torch.nn.Linear(c["hidden"], n_out),
        )
        self._fingerprint: Optional[str] = None

    name = property(lambda self: self.config["name"])
    dim = property(lambda self: int(self.config["dim"]))
    weight = property(lambda self: float(self.config["weight"]))  # share of the fused score
    # advice for the galleries it fuses into, as a model's "scoring" (embedder.scoring.adapt)
    adapt = property(lambda self: self.config.get("adapt"))
    adapted_threshold = property(lambda self: self.config.get("adapted_threshold"))  # theirs while they adapt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        present = (x.abs().sum(dim=1, keepdim=True) > 0).to(x.dtype)
        if not self.per_hand:
            return F.normalize(self.net(x), dim=-1) * present
        hands = x.reshape(-1, 2, HAND_DIM)  # per slot: a presence flag, then 21 points
        halves = F.normalize(self.net(hands[:, :, 1:]), dim=-1) * hands[:, :, :1]
        return F.normalize(halves.sum(1) if self.sum else halves.flatten(1), dim=-1) * present

    @torch.inference_mode()
    def encode(self, marks: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(marks, dtype=np.float32).reshape(-1, self.config["in_dim"]))
        return self(x).numpy()

    def fingerprint(self) -> str:
        if self._fingerprint is None or self.training:
            identity = {k: v for k, v in self.config.items() if k not in ("name", "threshold", "description", "detectors", "adapt", "adapted_threshold")}
            self._fingerprint = fingerprint(identity, self)
        return self._fingerprint

    def save(self, directory: os.PathLike | str) -> Path:
        """config.json and model.safetensors (float32: the whole model is ~100 kB)."""
        return save_folder(directory, self.config, LANDMARKS_FORMAT, self, half=False)


def is_landmark_model(directory: Path) -> bool:
    return config_format(directory) == LANDMARKS_FORMAT


def load_landmarks(name_or_path: Union[str, os.PathLike] = DEFAULT_LANDMARKS) -> LandmarkEncoder:
    """A landmark encoder from a directory, or by name from the shipped models/ folder."""
    d = Path(name_or_path).expanduser()
    if not (d / "config.json").is_file() and (models_dir() / str(name_or_path)).is_dir():
        d = models_dir() / str(name_or_path)  # a shipped name, not a folder here that merely shares it
    if not d.is_dir():
        raise ModelError(f"landmark model {name_or_path!r}: no config.json and model.safetensors in {d}")
    model = LandmarkEncoder(read_config(d, LANDMARKS_FORMAT, "landmark model"))
    load_weights(model, d, "landmark model")
    return model.eval()


def landmarks_for(detector: str) -> Optional[str]:
    """The landmark model fused into a new gallery with this detector: a shipped one whose config
    lists the detector under "detectors", else the default one for "hand", else none."""
    d = models_dir()
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if is_landmark_model(p) and detector in (listed_config(p).get("detectors") or ()):  # a half-made folder: not chosen
            return p.name
    return DEFAULT_LANDMARKS if detector == "hand" else None


def resolve_landmarks(spec: Union[str, os.PathLike, LandmarkEncoder, None], detector: str) -> Optional[LandmarkEncoder]:
    """The encoder a gallery or command fuses in: "auto" is the shipped one for detector "hand" and
    none for any other; None or "none" is none; else an encoder, a shipped name or a directory.
    Landmarks exist only for "hand": naming one for another detector raises ValueError."""
    if spec == "auto":
        spec = landmarks_for(detector)
    if spec is None or spec == "none":
        return None
    if detector != "hand":
        raise ValueError(f"landmarks {spec!r} need detector 'hand', not {detector!r}")
    return spec if isinstance(spec, LandmarkEncoder) else load_landmarks(spec)
