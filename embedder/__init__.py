"""Images in, unit-length embeddings out: image loading, preprocessing, backbones and the embedder."""

from .backbones import create_backbone, list_backbones
from .errors import ByakuganError, ImageError, ModelError
from .hub import DEFAULT_MODEL, list_models, load, models_dir
from .images import DEFAULT_MAX_PIXELS, list_images, load_image
from .model import Embedder, create_embedder, load_saved
from .preprocess import Preprocess

__all__ = [
    "ByakuganError",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "Embedder",
    "ImageError",
    "ModelError",
    "Preprocess",
    "create_backbone",
    "create_embedder",
    "list_backbones",
    "list_images",
    "list_models",
    "load",
    "load_image",
    "load_saved",
    "models_dir",
]
