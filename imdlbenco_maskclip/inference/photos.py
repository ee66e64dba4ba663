"""Read any photo Pillow reads as the RGB picture a viewer shows.

Real photos come rotated by their EXIF orientation, in CMYK or YCCK (JPEG), with 16 bits per
channel, a palette, one gray channel or an alpha channel. The model wants 8-bit RGB at the
displayed orientation: rotation is applied, 16-bit values are scaled (not clipped) to 8 bits,
and transparency is flattened onto white, as a browser shows it. A file that is not an image,
is truncated or has more pixels than the limit raises ``UnreadableImage`` with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from imdlbenco_maskclip.common.errors import UserError

PhotoLike = Union[str, Path, Image.Image, np.ndarray]

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class UnreadableImage(ValueError):
    """An input that cannot be predicted on; the message says why, for a table or a web page."""


def default_max_pixels() -> int:
    """Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``), or no limit when it is switched off."""
    return Image.MAX_IMAGE_PIXELS or 0


def allow_pixels(max_pixels: int) -> int:
    """Make ``max_pixels`` (0: no limit) this process's limit, Pillow's own included, so that
    Pillow does not refuse an image the limit allows; returns it. For commands, which own their process."""
    if max_pixels < 0:
        raise UserError(f"--max_pixels: {max_pixels} is negative (0 means no limit)")
    Image.MAX_IMAGE_PIXELS = max_pixels or None
    return max_pixels


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels and width * height > max_pixels:
        raise UnreadableImage(f"{width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,}")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright, as 8-bit RGB: EXIF orientation applied, 16-bit scaled, alpha on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and np.asarray(image).max(initial=0) > 255):
        values = np.asarray(image).astype(np.float32) / 257.0
        image = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        if image.mode == "F" and values.max(initial=0) <= 1.0:  # a float image in [0, 1]
            values = values * 255.0
        image = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def open_photo(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """The file at ``path`` as upright 8-bit RGB; ``max_pixels`` defaults to Pillow's limit.

    The pixel count is checked from the header, before anything is decoded.
    """
    limit = default_max_pixels() if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            # The limit is checked below with its own message; Pillow's warning would repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixels(image.size, limit)
                image.load()
                return to_rgb(image)
    except Image.DecompressionBombError as error:  # not an OSError: past twice Pillow's own limit
        raise UnreadableImage(f"more pixels than Pillow allows (PIL.Image.MAX_IMAGE_PIXELS): {error}") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read") from None
    except UnreadableImage:
        raise
    except Exception as error:
        raise UnreadableImage(f"truncated or corrupt, cannot decode: {type(error).__name__}: {error}") from None


def as_photo(source: PhotoLike, max_pixels: int | None = None) -> Image.Image:
    """A path, a PIL image or a HxW / HxWx3 / HxWx4 uint8 array as upright 8-bit RGB."""
    if isinstance(source, (str, Path)):
        return open_photo(source, max_pixels)
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if isinstance(source, Image.Image):
        _check_pixels(source.size, limit)
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if (
            source.dtype != np.uint8
            or source.ndim not in (2, 3)
            or (source.ndim == 3 and source.shape[2] not in (3, 4))
        ):
            raise UnreadableImage(
                f"an array image must be uint8 HxW, HxWx3 or HxWx4, got {source.dtype} {source.shape}"
            )
        _check_pixels((source.shape[1], source.shape[0]), limit)
        return to_rgb(Image.fromarray(np.ascontiguousarray(source)))
    raise UnreadableImage(f"expected a path, a PIL image or a uint8 array, got {type(source).__name__}")
