"""Images in, unit-length embeddings out: image loading, preprocessing, backbones and the embedder.

Names are imported on first use, so `embedder.images`, `embedder.preprocess` and
`embedder.errors` work without torch (an exported bundle relies on that).
"""

from importlib import import_module

_EXPORTS = {
    "ByakuganError": "errors", "ImageError": "errors", "ModelError": "errors",
    "DEFAULT_MAX_PIXELS": "images", "list_images": "images", "load_image": "images",
    "Preprocess": "preprocess",
    "create_backbone": "backbones", "list_backbones": "backbones",
    "DEFAULT_MODEL": "hub", "list_models": "hub", "load": "hub", "models_dir": "hub",
    "Embedder": "model", "create_embedder": "model", "load_saved": "model",
    "LandmarkEncoder": "landmarks", "load_landmarks": "landmarks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")
