"""Image loading: any source to an RGB PIL image, with EXIF orientation and a pixel limit."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, shown

# 40 megapixels covers phone and DSLR photos; beyond that decoding alone can take GBs of memory.
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Only raster formats are decoded: Pillow would hand EPS/PS to Ghostscript, and other rare
# plugins are attack surface with no use here.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def describe(source: ImageSource) -> str:
    """A short human name for an image source, used in error messages and results."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return "<array>"


def _eight_bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit greyscale ("I;16", "I", "F") as 8 bits: Pillow's own convert("RGB") clips every
    value above 255, so a 16-bit picture came out plain white."""
    a = np.asarray(img, np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535
                                       and a.max() > 255):
        a = a / 257.0  # the 16-bit range onto 8 bits, as image viewers show it
    elif img.mode == "F" or (a.size and (a.min() < 0 or a.max() > 255)):
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size and np.isfinite(a).any() else (0.0, 1.0)
        a = (np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)  # its own range
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _eight_bit(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels are undefined colour; a white backdrop is what a viewer shows.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image too large: {w}x{h} = {w * h} pixels, limit is {max_pixels}")
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Return an RGB PIL image, upright per its EXIF orientation.

    Accepts a path, encoded bytes, a PIL image or an HxWx3 uint8 array in RGB order (OpenCV's are
    BGR: pass arr[:, :, ::-1]). Raises ImageError with one line naming the source (or `name`, e.g. an
    upload's file name) and the reason.
    """
    if not isinstance(source, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
        raise ImageError(f"image {type(source).__name__}: expected a file path, encoded bytes, a PIL image or "
                         "an HxWx3 uint8 RGB array")
    name = name or describe(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, name, max_pixels)
        try:  # a lazily opened file is decoded here: truncated, closed or an odd mode is the same one line
            return _to_rgb(source)
        except (OSError, SyntaxError, ValueError, AttributeError) as exc:
            raise ImageError(f"{name}: cannot be read as a picture ({exc})") from None
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ImageError(f"{name}: expected an HxWx3 uint8 RGB array, got shape {source.shape} dtype {source.dtype}")
        _check_size((source.shape[1], source.shape[0]), name, max_pixels)
        return Image.fromarray(source, "RGB")
    if isinstance(source, bytes):
        if not source:  # an empty upload, as an empty file: nothing to recognise
            raise ImageError(f"{name}: is empty (0 bytes)")
        fp: object = io.BytesIO(source)
    else:
        path = Path(source)
        if not str(source).strip():  # Path("") is the working folder
            raise ImageError("image path '': is empty")
        try:
            if not path.exists():
                if path.is_symlink():  # exists() follows it: told apart from a name with nothing there
                    raise ImageError(f"{name}: is a symbolic link to {shown(os.readlink(path), 60)}, which does "
                                     "not exist (or links back to itself)")
                raise ImageError(f"{name}: no such file")
        except OSError as exc:  # a name too long
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image file")
        if not path.is_file():  # a FIFO or device would block the read forever, or never end
            raise ImageError(f"{name}: is not a regular file")
        if path.stat().st_size == 0:  # (not "format not recognised": there is nothing to recognise)
            raise ImageError(f"{name}: is empty (0 bytes)")
        fp = path
    try:
        # Pillow's own bomb check warns or raises at its own limit; ours is checked first, on the
        # header alone, before any pixel is decoded.
        with Image.open(fp, formats=FORMATS) as img:
            _check_size(img.size, name, max_pixels)
            img.load()
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own check, in open(), before ours could read the size
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageError(f"{name}: image too large: {pixels.group(1) + ' pixels' if pixels else 'past Pillow’s bomb check'}, "
                         f"limit is {min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)}") from None
    except PermissionError as exc:  # the file is sound; this user may not read it
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def image_list(images, what: str = "images") -> list:
    """images as a list; one path, bytes or picture where a list was wanted is refused, not read
    character by character."""
    if isinstance(images, (str, bytes, os.PathLike, Image.Image)):
        raise ImageError(f"{what}: expected a list of images, got one {type(images).__name__} (put it in a list)")
    if isinstance(images, np.ndarray) and images.ndim == 3:  # one picture, not three lists of rows
        raise ImageError(f"{what}: expected a list of images, got one image array of shape {images.shape} (put it in a list)")
    if isinstance(images, np.ndarray) and images.ndim == 1 and images.dtype.kind == "f":
        raise ImageError(f"{what}: got one vector of shape {images.shape}; vectors go as one (N, D) array "
                         "(v[None] for one)")
    try:
        return list(images)
    except TypeError:  # None, a number: not "'NoneType' object is not iterable" from deep inside
        raise ImageError(f"{what}: expected a list of images, got {type(images).__name__}") from None


def list_images(folder: Union[str, os.PathLike]) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def thumbnail_jpeg(image: ImageSource, size: int) -> bytes:
    """A small JPEG of an image (at most size x size), for people to look at."""
    small = load_image(image).copy()
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    return buf.getvalue()


# Below these a picture holds nothing to tell a class by: a few pixels, or one colour (the grey levels'
# spread under 2 of 255, as a blank scan, a black frame or a solid fill give; JPEG noise stays under it).
MIN_SIDE = 8
MIN_SPREAD = 2.0


def blank(image: Image.Image) -> Optional[str]:
    """Why a crop is blank (enrolled, it only adds weight to its class; searched, any label it gets
    means nothing), or None. Cheap: no embedding."""
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        return f"only {w}x{h} pixels, too few to tell a class by"
    grey = np.asarray(image.convert("L").resize((min(w, 64), min(h, 64))), np.float32)
    if grey.std() < MIN_SPREAD:
        return "one flat colour, nothing to tell a class by"
    return None
