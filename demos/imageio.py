"""Decoding user images safely: bounded size, decompression-bomb guard, every mode to RGB.

Shared by the image-classification and CLIP tasks. Raises ValueError with a message meant for
the user; never returns a half-decoded image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024  # per image file
MAX_PIXELS = 36_000_000  # width x height accepted before decoding (e.g. 6000 x 6000)


def _check_pixels(img: Image.Image) -> None:
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(
            f"Image is {img.width}x{img.height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
        )
    if img.width < 1 or img.height < 1:
        raise ValueError("Image has no pixels.")


def _open_file(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError("The image file is empty (0 bytes).")
    if size > MAX_BYTES:
        raise ValueError(f"The image file is {size / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB.")
    try:
        img = Image.open(path)
        _check_pixels(img)  # header only: nothing decoded yet
        img.seek(0)  # animated images: first frame
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Could not read the image ({type(exc).__name__}); please upload a PNG, JPEG, WebP or GIF.") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is composited on white; 16-bit and float images
    are rescaled to their own range; EXIF orientation is applied."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(source: Any) -> Image.Image:
    """A file path, PIL image or (H, W[, C]) uint8 array -> RGB PIL image, or ValueError."""
    if source is None:
        raise ValueError("Please upload an image.")
    if isinstance(source, (str, os.PathLike)):
        img = _open_file(source)
    elif isinstance(source, Image.Image):
        _check_pixels(source)
        img = source
    elif isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise ValueError(f"Image array has shape {source.shape}; expected (height, width) or (height, width, channels).")
        img = Image.fromarray(source.astype(np.uint8) if source.dtype != np.uint8 else source)
        _check_pixels(img)
    else:
        raise ValueError(f"Unsupported image input of type {type(source).__name__}.")
    return to_rgb(img)
