"""The embedding model: backbone -> pooled features -> projection head -> L2-normalised vectors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .backbones import WeightsArg, create_backbone
from .cohort import cohort_settings, load_cohort, offsets, save_cohort
from .colour import ColourHistogram, colour_config
from .errors import ByakuganError, ImageError, ModelError
from .evaluation import SCORINGS
from .heads import Head
from .images import ImageSource, load_image
from .preprocess import Preprocess

CONFIG_FORMAT = "byakugan-embedder/1"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


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
        # Optional colour histogram joined to the CNN part (see embedder.colour); no weights.
        self.colour = ColourHistogram(config["colour"], self.preprocess) if config.get("colour") else None
        # Optional cohort score normalisation (see embedder.cohort): settings in the config, the
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
        e = F.normalize(self.head(self.backbone(x)), dim=-1)
        if self.colour is None:
            return e
        # cosine = (CNN cosine + weight * histogram cosine) / (1 + weight)
        return F.normalize(torch.cat([e, self.colour.weight ** 0.5 * self.colour(x)], -1), dim=-1)

    def fingerprint(self) -> str:
        """SHA-256 of the config and every weight, so a gallery can tell if its model changed."""
        if self._fingerprint is None or self.training:
            h = hashlib.sha256(json.dumps(self._identity_config(), sort_keys=True).encode())
            for key, t in sorted(self.state_dict().items()):
                h.update(key.encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def _identity_config(self) -> dict:
        # Settings that do not change the vectors stay out, so galleries accept a re-tuned model.
        return {k: v for k, v in self.config.items()
                if k not in ("name", "threshold", "description", "scoring", "cohort")}

    def cohort_offsets(self, emb: np.ndarray) -> Optional[np.ndarray]:
        """What cohort normalisation takes off each row's scores; None for a model without a cohort."""
        if self.cohort is None or self.cohort_settings is None:
            return None
        return offsets(emb, self.cohort, self.cohort_settings["top"])

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        # channels_last was 1.6x faster than NCHW for EfficientNet-Lite0 on this CPU (oneDNN kernels).
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
        images = list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        bar = _progress(len(images), progress)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.stack([self.preprocess(load_image(im)) for im in chunk])
            out[start : start + len(chunk)] = self.embed_tensors(x)
            bar.update(len(chunk))
        bar.close()
        return out

    def embed_each(
        self, images: Sequence[ImageSource], batch_size: int = 32, progress: bool = False
    ) -> tuple[np.ndarray, list[Optional[ImageError]]]:
        """Like embed, but a bad image gives a NaN row and its error instead of stopping the rest.

        An ImageError in `images` stands for an image already found bad (its row stays NaN).
        """
        out = np.full((len(images), self.dim), np.nan, dtype=np.float32)
        errors: list[Optional[ImageError]] = [None] * len(images)
        bar = _progress(len(images), progress)
        for start in range(0, len(images), batch_size):
            rows, tensors = [], []
            for i in range(start, min(start + batch_size, len(images))):
                try:
                    if isinstance(images[i], ImageError):
                        raise images[i]
                    tensors.append(self.preprocess(load_image(images[i])))
                    rows.append(i)
                except ImageError as exc:
                    errors[i] = exc
            if tensors:
                out[rows] = self.embed_tensors(torch.stack(tensors))
            bar.update(min(batch_size, len(images) - start))
        bar.close()
        return out, errors

    def save(self, directory: os.PathLike | str, half: bool = True) -> Path:
        """Write config.json and model.safetensors (fp16 by default) into `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = d / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": CONFIG_FORMAT})
        os.replace(tmp, d / WEIGHTS_FILE)
        if self.cohort is not None:
            save_cohort(d, self.cohort)
        cfg = dict(self.config, format=CONFIG_FORMAT)
        tmp = d / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        os.replace(tmp, d / CONFIG_FILE)
        return d


def head_config(config: dict) -> dict:
    """The head settings; a bare `dim` means a linear projection, none means the raw features."""
    if "head" in config:
        return config["head"]
    return {"type": "linear", "dim": config["dim"]} if config.get("dim") else {"type": "none"}


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="embedding", disable=not enabled or total < 2, leave=False)


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
    head={"type": "concat", "dim": N, ...} is the head byakugan trains (see embedder.heads).
    colour={"weight": W} joins a colour histogram of the crop (see embedder.colour).
    taps=[i, ...] joins pooled features of earlier backbone levels (see embedder.taps).
    """
    if dim is not None and (not isinstance(dim, int) or dim < 1):
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
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelError(f"model directory {d}: needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model config {cfg_path}: not valid JSON ({exc})") from None
    if config.get("format") != CONFIG_FORMAT:
        raise ModelError(f"model config {cfg_path}: format {config.get('format')!r}, expected {CONFIG_FORMAT!r}")
    config.pop("format")
    net, _ = create_backbone(config["backbone"], pretrained=False, taps=config.get("taps"))
    model = Embedder(net, config)
    try:
        sd = load_file(str(w_path))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    except Exception as exc:
        raise ModelError(f"model weights {w_path}: cannot be loaded ({exc})") from None
    if model.cohort_settings is not None:
        try:
            model.cohort = load_cohort(d, model.dim)
        except ByakuganError as exc:
            raise ModelError(f"model directory {d}: {exc}") from None
    return model.eval()
