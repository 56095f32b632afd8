"""The embedding model: backbone -> pooled features -> projection head -> L2-normalised vectors."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ByakuganError, ModelError
from ..images import ImageSource, image_list, load_image
from ..preprocess import Preprocess
from ..scoring import SCORINGS
from ..scoring.cohort import COHORT_FILE, cohort_settings, load_cohort, offsets, save_cohort
from .backbones import WeightsArg, create_backbone
from .colour import ColourHistogram, colour_config
from .files import fingerprint, load_weights, read_config, save_folder
from .heads import Head
from .progress import bar as progress_bar

CONFIG_FORMAT = "byakugan-embedder/1"
# Config entries that advise how the model is used (a gallery's default threshold and scoring,
# the detectors it is chosen for, its cohort) but do not change a vector: not in the fingerprint.
ADVICE = ("name", "threshold", "description", "scoring", "cohort", "detectors", "adapt", "adapted_threshold")
# Test-time augmentation: None; "flip" (embed the mirror image too and average; twice the work);
# "crop" (a centre crop of TTA_CROP of each side, enlarged back, with the picture: twice; no mirror,
# which swaps a left hand for a right one); or "flip_crop" (both, and the crop mirrored: four times).
TTA = (None, "flip", "crop", "flip_crop")
TTA_CROP = 0.85  # the share measured: benchmarks/adapt_views.py, then tta_folds.py (models/anime-tuned-tta)


_CONVERTING = threading.Lock()  # see Embedder.embed_tensors

class Embedder(torch.nn.Module):
    """Maps images to unit-length float32 vectors; `config` describes it fully (saved with the weights)."""

    def __init__(self, backbone: torch.nn.Module, config: dict) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.preprocess = Preprocess.from_dict(config["preprocess"])
        # "scoring": how a gallery built with the model ranks labels unless told otherwise
        if config.get("scoring", "nearest") not in SCORINGS:
            raise ModelError(f"model scoring {config['scoring']!r} is not one of {', '.join(SCORINGS)}")
        self.head = Head(head_config(config), config["feature_dim"])
        if config.get("tta") not in TTA:
            raise ModelError(f"model tta {config['tta']!r} is not one of {', '.join(map(str, TTA))}")
        # Optional colour histogram joined to the CNN part (see embedder.embedding.colour); no weights.
        self.colour = ColourHistogram(config["colour"], self.preprocess) if config.get("colour") else None
        # Optional cohort score normalisation (see embedder.scoring.cohort): settings in the config, the
        # vectors (unit rows, N x dim) in a file beside the weights; set by training or load_saved.
        cohort_settings(config.get("cohort"))  # refuse bad settings when the model is made
        self.cohort: Optional[np.ndarray] = None
        self._fingerprint: Optional[str] = None

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def cohort_settings(self) -> Optional[dict]:
        return cohort_settings(self.config.get("cohort"))

    @property
    def dim(self) -> int:
        return self.head.out_dim + (self.colour.dim if self.colour is not None else 0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.get("tta") == "flip":  # the mean of the picture and its mirror image
            return F.normalize(self._embed(x) + self._embed(torch.flip(x, dims=[3])), dim=-1)
        if self.config.get("tta") in ("crop", "flip_crop"):
            mirror = self.config["tta"] == "flip_crop"
            return F.normalize(self._embed(views(x, mirror)).reshape(4 if mirror else 2, -1, self.dim).sum(0), dim=-1)
        return self._embed(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.head(self.backbone(x)), dim=-1)
        if self.colour is None:
            return e
        # cosine = (CNN cosine + weight * histogram cosine) / (1 + weight)
        return F.normalize(torch.cat([e, self.colour.weight ** 0.5 * self.colour(x)], -1), dim=-1)

    def fingerprint(self) -> str:
        """SHA-256 of the config and every weight, so a gallery can tell if its model changed."""
        if self._fingerprint is None or self.training:
            self._fingerprint = fingerprint(self._identity_config(), self)
        return self._fingerprint

    def _identity_config(self) -> dict:
        # Settings that do not change the vectors stay out, so galleries accept a re-tuned model.
        return {k: v for k, v in self.config.items() if k not in ADVICE}

    def cohort_offsets(self, emb: np.ndarray) -> Optional[np.ndarray]:
        """What cohort normalisation takes off each row's scores; None for a model without a cohort."""
        if self.cohort is None or self.cohort_settings is None:
            return None
        return offsets(emb, self.cohort, self.cohort_settings["top"])

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        # channels_last was 1.6x faster than NCHW for EfficientNet-Lite0 on this CPU (oneDNN kernels).
        # Converted once, under a lock: two threads converting one model at once (a server's two
        # requests) could leave a weight half swapped, and every embedding after it wrong.
        with _CONVERTING:
            if next(self.backbone.parameters()).is_contiguous(memory_format=torch.channels_last) is False:
                self.backbone.to(memory_format=torch.channels_last)
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return self(x).float().cpu().numpy()

    def embed(
        self,
        images: Iterable[ImageSource],
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed images (paths, bytes, PIL or arrays) into an (N, D) float32 array; any bad image raises."""
        images = image_list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        bar = progress_bar(len(images), progress)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.stack([self.preprocess(load_image(im)) for im in chunk])
            out[start : start + len(chunk)] = self.embed_tensors(x)
            bar.update(len(chunk))
        bar.close()
        return out

    def save(self, directory: os.PathLike | str, half: bool = True) -> Path:
        """Write config.json and model.safetensors (fp16 by default) into `directory`."""
        cohort = {} if self.cohort is None else {COHORT_FILE: lambda d: save_cohort(d, self.cohort)}  # before the config
        return save_folder(directory, self.config, CONFIG_FORMAT, self, half, beside=cohort)


def views(x: torch.Tensor, mirror: bool = True) -> torch.Tensor:
    """"flip_crop"'s four views of a batch, one batch after another: the pictures, their mirror images,
    their centre crops keeping TTA_CROP of each side (enlarged back to the input size, bilinear), and
    those mirrored; without the mirror ("crop"), the pictures and their crops. The crop is two
    products with fixed matrices, not a resize: onnxruntime's Resize differs from torch's by 1e-4,
    past what an exported model is checked to (1e-5)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])  # constants in an ONNX export: a model's input size is fixed
    rows, cols = (torch.from_numpy(enlarge(n, round(n * (1 - TTA_CROP) / 2))).to(x) for n in (h, w))
    crop = rows @ x @ cols.T
    if not mirror:
        return torch.cat([x, crop])
    return torch.cat([x, torch.flip(x, dims=[3]), crop, torch.flip(crop, dims=[3])])


def enlarge(n: int, margin: int) -> np.ndarray:
    """[n, n]: the centre n - 2·margin of n values enlarged back to n, by linear interpolation as
    torch's F.interpolate(mode="bilinear", align_corners=False) does it along one axis."""
    inner = n - 2 * margin
    at = np.clip((np.arange(n) + 0.5) * inner / n - 0.5, 0, inner - 1)
    low = np.floor(at).astype(int)
    high = np.minimum(low + 1, inner - 1)
    m = np.zeros((n, n), np.float32)
    np.add.at(m, (np.arange(n), margin + low), 1 - (at - low))
    np.add.at(m, (np.arange(n), margin + high), at - low)
    return m


def head_config(config: dict) -> dict:
    """The head settings; a bare `dim` means a linear projection, none means the raw features."""
    if "head" in config:
        return config["head"]
    return {"type": "linear", "dim": config["dim"]} if config.get("dim") else {"type": "none"}


def create_embedder(
    backbone: str = "efficientnet_lite0",
    pretrained: WeightsArg = True,
    dim: Optional[int] = None,
    preprocess: Optional[Preprocess] = None,
    name: Optional[str] = None,
    threshold: float = 0.5,
    head: Optional[dict] = None,
    colour: Optional[dict] = None,
    taps: Optional[Sequence[int]] = None,
) -> Embedder:
    """Build an embedder from a backbone name.

    dim=None and head=None use the pooled features as they are; dim=N adds a linear projection;
    head={"type": "concat", "dim": N, ...} is the head byakugan trains (see embedder.embedding.heads).
    colour={"weight": W} joins a colour histogram of the crop (see embedder.embedding.colour).
    taps=[i, ...] joins pooled features of earlier backbone levels (see embedder.embedding.taps).
    """
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise ModelError(f"embedding dim {dim!r} must be a positive integer or None")
    net, spec = create_backbone(backbone, pretrained, taps)
    config = {
        "name": name or backbone,
        "backbone": backbone,
        **({"taps": sorted(taps)} if taps else {}),
        "feature_dim": int(net.num_features),
        "head": head or ({"type": "linear", "dim": dim} if dim else {"type": "none"}),
        "preprocess": (preprocess or spec.preprocess).to_dict(),
        "threshold": threshold,
    }
    if colour:
        config["colour"] = colour_config(colour)
    return Embedder(net, config).eval()


def load_saved(directory: os.PathLike | str) -> Embedder:
    """Rebuild an Embedder from a directory written by Embedder.save (no pickle is read)."""
    d = Path(directory)
    config = read_config(d, CONFIG_FORMAT)
    net, _ = create_backbone(config["backbone"], pretrained=False, taps=config.get("taps"))
    model = Embedder(net, config)
    load_weights(model, d)
    if model.cohort_settings is not None:
        try:
            model.cohort = load_cohort(d, model.dim)
        except ByakuganError as exc:
            raise ModelError(f"model directory {d}: {exc}") from None
    return model.eval()
