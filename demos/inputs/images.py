"""Decoding user images safely: bounded size, decompression-bomb guard, every mode to RGB.

Shared by the image-classification and CLIP tasks. Raises ValueError with a message meant for
the user; never returns a half-decoded image.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024  # per image file
MAX_PIXELS = 36_000_000  # width x height accepted before decoding (e.g. 6000 x 6000)


def _check_pixels(img: Image.Image) -> None:
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(_too_many_pixels("Image", img.width, img.height))
    if img.width < 1 or img.height < 1:
        raise ValueError("Image has no pixels.")


UNREADABLE = (
    "Could not read the image: the file is not a picture in a supported format, or it is damaged. "
    "Please upload a PNG, JPEG, WebP or GIF."
)


def _open_file(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ValueError("The uploaded image could not be found; please upload it again.")
    size = path.stat().st_size
    if size == 0:
        raise ValueError("The image file is empty (0 bytes).")
    if size > MAX_BYTES:
        raise ValueError(f"The image file is {size / 2**20:.1f} MB; the limit is {MAX_BYTES / 2**20:.0f} MB.")
    img = None
    try:
        img = Image.open(path)
        _check_pixels(img)  # header only: nothing decoded yet
        img.seek(0)  # animated images: first frame
        img.load()
    except Image.DecompressionBombError:
        raise ValueError(_too_many_pixels("The image")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, struct.error, ZeroDivisionError, IndexError):
        # PIL decoders raise these on truncated or corrupt data (not on our own checks)
        _close(img)
        raise ValueError(UNREADABLE) from None
    except ValueError:
        _close(img)
        raise
    return img


def _close(img: Image.Image | None) -> None:
    if img is not None:
        img.close()


def _too_many_pixels(what: str, width: int | None = None, height: int | None = None) -> str:
    size = f" is {width}x{height} pixels" if width is not None else " declares more pixels than can be decoded safely"
    return f"{what}{size}; the limit is {MAX_PIXELS // 1_000_000} megapixels."


def from_array(arr: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) array with C in 1..4, of any real dtype -> PIL image, or ValueError.

    bool -> 0/255; floats in [0, 1] -> x 255; other values outside 0..255 rescaled to their own
    range (as 16-bit files are); NaN or infinity refused.
    """
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"Image array has shape {arr.shape}; expected (height, width) or (height, width, channels).")
    if arr.ndim == 3 and not 1 <= arr.shape[2] <= 4:
        raise ValueError(f"Image array has {arr.shape[2]} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA).")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ValueError(_too_many_pixels("Image", arr.shape[1], arr.shape[0]))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind not in "uif":
        raise ValueError(f"Image array has values of type {arr.dtype}; expected numbers.")
    elif arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    return Image.fromarray(np.ascontiguousarray(arr))  # (H, W) L, (H, W, 2) LA, 3 RGB, 4 RGBA


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("Image array contains NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        x = x * 255.0
    elif lo < 0.0 or hi > 255.0:
        x = np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is composited on white; 16-bit and float images
    are rescaled to their own range; EXIF orientation is applied."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(source: Any) -> Image.Image:
    """A file path, PIL image or (H, W[, C]) array (see `from_array`) -> RGB PIL image, or ValueError."""
    if source is None:
        raise ValueError("Please upload an image.")
    if isinstance(source, (str, os.PathLike)):
        img = _open_file(source)
    elif isinstance(source, Image.Image):
        _check_pixels(source)
        img = source
    elif isinstance(source, np.ndarray):
        img = from_array(source)
    else:
        raise ValueError(f"Unsupported image input of type {type(source).__name__}.")
    try:
        return to_rgb(img)
    except (OSError, SyntaxError, EOFError, struct.error, ZeroDivisionError, IndexError):  # lazy decoders, bad EXIF
        raise ValueError(UNREADABLE) from None
