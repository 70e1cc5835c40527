"""Face crops: the alignment geometry, and decoding face files into an image store.

Test images are aligned once, at prepare: with landmarks, by the similarity transform that puts the two eyes
where insightface's 112 x 112 template puts them (:data:`CANONICAL_EYES`, the geometry of MS1MV2's aligned
crops); without, by a central square crop of :data:`CENTRE_CROP_SHARE` of the loose image. Training and
synthetic images are taken as aligned crops (central square, resized).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from fairquant.data.images import open_rgb
from fairquant.data.parallel import in_chunks, map_in_order
from fairquant.errors import FairquantError
from fairquant.io import image_store_writer

# insightface's 112 x 112 ArcFace template, eyes only, as shares of the crop
CANONICAL_EYES = ((38.2946 / 112, 51.6963 / 112), (73.5318 / 112, 51.5014 / 112))
CENTRE_CROP_SHARE = 0.7


def _similarity_to(size: int, eyes: tuple) -> tuple[float, ...]:
    """PIL AFFINE data (output pixel -> input pixel) of the similarity that puts ``eyes`` at CANONICAL_EYES."""
    (x1, y1), (x2, y2) = sorted(eyes)
    source1, source2 = complex(x1, y1), complex(x2, y2)
    target1, target2 = (complex(x * size, y * size) for x, y in CANONICAL_EYES)
    a = (source2 - source1) / (target2 - target1)
    b = source1 - a * target1
    return a.real, -a.imag, b.real, a.imag, a.real, b.imag


def _centre_square(image: Image.Image, size: int, share: float) -> np.ndarray:
    """The central square of side ``share`` x the shorter side, resized (antialiased) to (size, size, 3)."""
    side = share * min(image.size)
    left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
    face = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0)
    return np.asarray(face, dtype=np.uint8)


def align_face(image: Image.Image, size: int, eyes: tuple | None) -> np.ndarray:
    """(size, size, 3) uint8: aligned by the two eye points when given (warped at the source's own scale, then
    resized, antialiased), else the central square of CENTRE_CROP_SHARE of the image."""
    if eyes is None:
        return _centre_square(image, size, CENTRE_CROP_SHARE)
    scale = abs(complex(*_similarity_to(size, eyes)[:2]))  # source pixels per output pixel
    # bilinear sampling is sharp and barely aliases up to 2x downscaling; beyond, warp larger and resize down
    work = size if scale <= 2 else min(8 * size, math.ceil(size * scale / 2))
    face = image.transform((work, work), Image.AFFINE, _similarity_to(work, eyes), Image.BILINEAR)
    if work != size:
        face = face.resize((size, size), Image.BILINEAR)
    return np.asarray(face, dtype=np.uint8)


def load_face(path: str | Path | IO[bytes], size: int, mode: str = "plain", eyes: tuple | None = None, *,
              name: str | None = None) -> np.ndarray | None:
    """Decode one file (RGB, :func:`fairquant.data.images.open_rgb`) as 'plain' (an aligned crop: central square,
    resized), 'centre-crop' or 'landmarks' (:func:`align_face`). None when the file cannot be decoded; ``name``
    names it in messages (a record of a RecordIO file)."""
    if mode == "landmarks":  # no draft: the landmarks are in the file's full-size pixels
        image = open_rgb(path, name=name)
        return None if image is None else align_face(image, size, eyes)
    share = CENTRE_CROP_SHARE if mode == "centre-crop" else 1.0
    image = open_rgb(path, name=name, draft=math.ceil(size / share))  # JPEG: decode at 1/2..1/8 scale if large
    return None if image is None else _centre_square(image, size, share)


def _decode_chunk(args: tuple[list[tuple], int]) -> tuple[np.ndarray, list[int]]:
    items, size = args
    out = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    failed = []
    for i, (path, mode, eyes) in enumerate(items):
        pixels = load_face(path, size, mode, eyes)
        if pixels is None:
            failed.append(i)
        else:
            out[i] = pixels
    return out, failed


def write_face_store(path: Path, items: list[tuple], size: int, workers: int, *,
                     skip_unreadable: bool = False) -> list[str]:
    """Decode ``items`` (``(path, mode, eyes)``, as :func:`load_face` takes them) into the image store at
    ``path``, in order, in chunks over ``workers`` processes; an undecodable file raises, or with
    ``skip_unreadable`` is left out and listed."""
    skipped: list[str] = []
    with image_store_writer(path, len(items), (size, size, 3)) as store:
        chunks = in_chunks(items)
        decoded = map_in_order(_decode_chunk, [(chunk, size) for chunk in chunks], workers)
        for chunk, (pixels, failed) in zip(chunks, decoded):
            if failed and not skip_unreadable:
                raise FairquantError(f"{chunk[failed[0]][0]}: cannot be decoded as an image; replace the file "
                                     f"(or remove it and any line that names it)")
            skipped += [str(chunk[i][0]) for i in failed]
            store.append(np.delete(pixels, failed, axis=0) if failed else pixels)
    return skipped

