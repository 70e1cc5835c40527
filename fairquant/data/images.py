"""Opening one dataset image as 8-bit RGB, whatever mode it is stored in, for the classification store
(:mod:`fairquant.data.prepare`) and the face stores (:mod:`fairquant.data.alignment`) alike.

A file that is no image (empty, text named .jpg, truncated) decodes to None: the caller counts or refuses it. An
image that cannot be read as RGB without a silent loss is refused by name (:class:`FairquantError`): a
floating-point image (no 8-bit scale to read it by), and one past PIL's decompression-bomb limit (its warning would
otherwise go to stderr, its error be counted as a corrupt file). 16-bit greyscale is scaled to 8 bits (PIL's own
conversion clips it to white); palette and greyscale images with transparency drop the alpha channel like RGBA.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from fairquant.errors import FairquantError

# What PIL's decoders raise on a damaged or foreign file (each plugin has its own): the file is undecodable.
UNDECODABLE = (OSError, ValueError, SyntaxError, EOFError, IndexError, ZeroDivisionError, struct.error)
WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
MIN_SIDE = 8  # pixels: below this a dataset image holds no face or object to learn from
MAX_ASPECT = 10  # longer side over shorter: resized to a square, anything beyond 10:1 is a smear of a few pixels


def _bomb(name: str, exc: Exception) -> FairquantError:
    return FairquantError(f"{name}: the image is larger than PIL's decompression-bomb limit of "
                          f"{Image.MAX_IMAGE_PIXELS:,} pixels ({exc}); a dataset image this large is damaged or not a "
                          f"photo: replace it or downscale it")


def _check_shape(image: Image.Image, name: str) -> None:
    """Refuse a degenerate shape (a 4000 x 1 strip, a 3 x 3 thumbnail) that resizing would turn into noise silently."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise FairquantError(f"{name}: the image is {width}x{height} pixels, under {MIN_SIDE} px on a side: no usable "
                             f"picture; replace the file with the dataset's original")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise FairquantError(f"{name}: the image is {width}x{height} pixels, more than {MAX_ASPECT}:1 (resized to a "
                             f"square it would be a smear); replace the file with the dataset's original, or crop it")


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode in WIDE_INTEGER_MODES:  # 16-bit (or 32-bit) greyscale: scale to 8 bits by the file's own depth
        pixels = np.asarray(image)
        depth = 8 if pixels.size == 0 or pixels.max() <= 255 else 16 if pixels.max() <= 65535 else 32
        if pixels.min(initial=0) < 0:
            raise FairquantError(f"{name}: a {mode} image with negative pixel values; save it as 8-bit RGB")
        scaled = (pixels.astype(np.uint64) >> (depth - 8)).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if mode == "F":
        raise FairquantError(f"{name}: a floating-point (mode F) image has no 8-bit scale to read it by; save it as "
                             f"8-bit RGB (or greyscale)")
    if mode in ("P", "PA") and ("transparency" in image.info or mode == "PA"):
        image = image.convert("RGBA")  # PIL warns when such a palette image goes straight to RGB
    return image.convert("RGB")


def open_rgb(source: str | Path | IO[bytes], *, name: str | None = None, draft: int | None = None
             ) -> Image.Image | None:
    """The image at ``source`` as a loaded RGB image, or None when the file is not a decodable image. ``draft``
    lets JPEG decode at 1/2, 1/4 or 1/8 scale while both sides stay >= ``draft``. ``name`` names the file in
    messages (``source`` by default)."""
    name = name or str(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on metadata (EXIF, ICC) would reach stderr
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                _check_shape(image, name)
                if draft is not None:
                    image.draft("RGB", (draft, draft))
                return _to_rgb(image, name)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise _bomb(name, exc) from None
        except UNDECODABLE:
            return None
