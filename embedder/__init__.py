"""Images in, unit-length embeddings out: image loading, preprocessing, detection, backbones and
heads, the embedder, scoring parts, training and evaluation.

Names are imported on first use, so `byakugan.embedder.images`, `.preprocess`, `.scoring` and
`.errors` work without torch (an exported bundle relies on that).
"""

from importlib import import_module

_EXPORTS = {
    "ByakuganError": "errors", "ImageError": "errors", "ModelError": "errors",
    "DEFAULT_MAX_PIXELS": "images", "list_images": "images", "load_image": "images",
    "Preprocess": "preprocess",
    "Detection": "detection", "create_detector": "detection", "list_detectors": "detection",
    "create_backbone": "embedding.backbones", "list_backbones": "embedding.backbones",
    "DEFAULT_MODEL": "embedding.hub", "list_models": "embedding.hub", "load": "embedding.hub",
    "models_dir": "embedding.files",
    "Embedder": "embedding.model", "create_embedder": "embedding.model", "load_saved": "embedding.model",
    "LandmarkEncoder": "embedding.landmarks", "load_landmarks": "embedding.landmarks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
