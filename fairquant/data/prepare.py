"""Decode and resize every image once into a uint8 store; draw calibration sets from training data only."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairquant.data.loaders import RawDataset
from fairquant.errors import FairquantError


def _square_resize(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


def decode_image(path: str | Path, size: int) -> np.ndarray | None:
    """Decode one file to (size, size, 3) uint8, using the JPEG decoder's draft (DCT downscale) mode.

    Returns None for an unreadable or corrupt file; the caller counts it.
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that is still >= size
            return _square_resize(image.convert("RGB"), size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _decode_chunk(args: tuple[list[str], int]) -> tuple[np.ndarray, list[int]]:
    paths, size = args
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    failed = []
    for i, path in enumerate(paths):
        pixels = decode_image(path, size)
        if pixels is None:
            failed.append(i)
        else:
            out[i] = pixels
    return out, failed


def _resize_arrays(arrays: np.ndarray, size: int) -> np.ndarray:
    if arrays.shape[-1] == 1:
        arrays = np.repeat(arrays, 3, axis=-1)
    if arrays.shape[1:3] == (size, size):
        return np.ascontiguousarray(arrays)
    return np.stack([_square_resize(Image.fromarray(a), size) for a in arrays])


def build_image_store(raw: RawDataset, size: int, workers: int, max_corrupt_fraction: float,
                      progress=None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Return the samples table (with ``row`` into the store), the uint8 store, and counts of dropped files."""
    if raw.arrays is not None:
        images, failed = _resize_arrays(raw.arrays, size), []
    else:
        paths = [str(p) for p in raw.paths]
        chunks = [paths[i:i + 512] for i in range(0, len(paths), 512)]
        parts, failed = [], []
        with ProcessPoolExecutor(workers) as pool:
            for k, (pixels, bad) in enumerate(pool.map(_decode_chunk, [(c, size) for c in chunks])):
                parts.append(pixels)
                failed += [k * 512 + i for i in bad]
                if progress:
                    progress(len(chunks[k]))
        images = np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)
    n = len(raw.table)
    if n and len(failed) / n > max_corrupt_fraction:
        first = raw.paths[failed[0]] if raw.paths else failed[0]
        raise FairquantError(
            f"{len(failed)} of {n} images could not be decoded (first: {first}), more than "
            f"data.max_corrupt_fraction={max_corrupt_fraction:g}; fix the files or raise the threshold")
    keep = np.ones(n, dtype=bool)
    keep[failed] = False
    table = raw.table[keep].reset_index(drop=True)
    table["row"] = np.arange(len(table), dtype=np.int64)
    counts = {"corrupt_images": len(failed), **raw.skipped}
    return table, images[keep], counts


def check_splits(table: pd.DataFrame, protected: list[str]) -> None:
    """Every split must exist and contain both labels; groups with no positives are allowed (metrics say undefined)."""
    for split in ("train", "val", "test"):
        part = table[table["split"] == split]
        if part.empty:
            raise FairquantError(f"the {split} split has no samples after loading; check the dataset's partition file")
        if part["y_true"].nunique() < 2:
            raise FairquantError(f"the {split} split has only label {int(part['y_true'].iloc[0])}; "
                                 f"the target needs both classes in every split (check data.target / data.positive)")


def calibration_indices(table: pd.DataFrame, size: int, seed: int, key: str = "calibration.size") -> np.ndarray:
    """Rows of ``size`` random training images for calibration. Never val or test: enforced, not assumed."""
    train_rows = table.loc[table["split"] == "train", "row"].to_numpy()
    if size > train_rows.size:
        raise FairquantError(f"{key}={size} is larger than the training split "
                             f"({train_rows.size} images); lower it")
    rows = np.sort(np.random.default_rng(seed).choice(train_rows, size, replace=False))
    assert_not_test(table, rows)
    return rows


def assert_not_test(table: pd.DataFrame, rows: np.ndarray) -> None:
    """Raise if any calibration row belongs to the test split (leakage the reference works suffered)."""
    test_rows = set(table.loc[table["split"] == "test", "row"].tolist())
    leaked = [int(r) for r in rows if int(r) in test_rows]
    if leaked:
        raise FairquantError(f"calibration set contains {len(leaked)} test images (first row {leaked[0]}); "
                             f"calibration data must come from the training split")


def load_prepared(folder: str | Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The prepare stage's outputs: samples table, memory-mapped image store, info."""
    from fairquant.io import read_images, read_json, read_table

    folder = Path(folder)
    return read_table(folder / "samples.parquet"), read_images(folder / "images.npy"), read_json(folder / "info.json")
