"""Decode and resize every image once into a uint8 store; draw calibration sets from training data only."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairquant.data.images import open_rgb
from fairquant.data.loaders import RawDataset, missing_values, null_like
from fairquant.errors import FairquantError


def _square_resize(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.BILINEAR, reducing_gap=2.0), dtype=np.uint8)


def decode_image(path: str | Path, size: int) -> np.ndarray | None:
    """Decode one file to (size, size, 3) uint8, using the JPEG decoder's draft (DCT downscale) mode.

    Returns None for an unreadable or corrupt file (the caller counts it); an image no RGB reading fits (a
    floating-point image, a decompression bomb) raises :class:`FairquantError` (:func:`open_rgb`)."""
    image = open_rgb(path, draft=size)
    return None if image is None else _square_resize(image, size)


CHUNK = 512  # images per decoding task


def _decode_chunk(args: tuple[list[str], int]) -> tuple[np.ndarray, list[int]]:
    """Decode files into (n, size, size, 3); the positions of undecodable files come back zero and listed."""
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


def _decoded_chunks(raw: RawDataset, size: int, workers: int) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    """Yield ``(first index, pixels, failed positions)`` chunk by chunk, in sample order.

    Files are decoded by ``workers`` processes with at most two chunks per worker in flight, so memory holds
    a few chunks whatever the dataset's size. Pixel arrays are resized a chunk at a time."""
    if raw.arrays is not None:
        for start in range(0, len(raw.arrays), CHUNK):
            yield start, _resize_arrays(raw.arrays[start:start + CHUNK], size), []
        return
    paths = [str(p) for p in raw.paths]
    tasks = ((start, (paths[start:start + CHUNK], size)) for start in range(0, len(paths), CHUNK))
    if workers == 1:
        for start, task in tasks:
            yield start, *_decode_chunk(task)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        for start, task in tasks:
            pending.append((start, pool.submit(_decode_chunk, task)))
            if len(pending) >= 2 * workers:
                first, future = pending.popleft()
                yield first, *future.result()
        while pending:
            first, future = pending.popleft()
            yield first, *future.result()


class _InMemoryStore:
    """The image store as one array, for callers that ask for no file (small sets, tests)."""

    def __init__(self, capacity: int, size: int) -> None:
        self._images = np.empty((capacity, size, size, 3), dtype=np.uint8)
        self.rows = 0

    def append(self, pixels: np.ndarray) -> None:
        self._images[self.rows:self.rows + len(pixels)] = pixels
        self.rows += len(pixels)

    @property
    def images(self) -> np.ndarray:
        return self._images[:self.rows]


def build_image_store(raw: RawDataset, size: int, workers: int, max_corrupt_fraction: float, *,
                      out: str | Path | None = None, progress=None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Decode every image once; return the samples table (with ``row`` into the store), the store, and counts
    of dropped files.

    With ``out``, the store is written to that ``.npy`` file as chunks are decoded and returned memory-mapped;
    memory then holds a few chunks, never the store. Undecodable files are left out of the store and the
    table alike, so ``row`` numbers the images kept, in sample order. Too many of them raise
    :class:`FairquantError`, and then nothing is written at ``out``."""
    from fairquant.io import image_store_writer, read_images

    n = len(raw.table)
    failed: list[int] = []
    with contextlib.ExitStack() as stack:
        store = (_InMemoryStore(n, size) if out is None
                 else stack.enter_context(image_store_writer(out, n, (size, size, 3))))
        for start, pixels, bad in _decoded_chunks(raw, size, workers):
            failed += [start + i for i in bad]
            store.append(np.delete(pixels, bad, axis=0) if bad else pixels)
            if progress:
                progress(len(pixels))
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
    return table, store.images if out is None else read_images(out), counts


def check_splits(table: pd.DataFrame, protected: list[str], classes: list[str] | None = None) -> None:
    """Every split must exist and contain at least two labels; groups with no positives are allowed (metrics say
    undefined). A multi-class target (``classes``) needs every class among the training images."""
    for split in ("train", "val", "test"):
        part = table[table["split"] == split]
        if part.empty:
            raise FairquantError(f"the {split} split has no samples after loading; check the dataset's partition file")
        if part["y_true"].nunique() < 2:
            only = int(part["y_true"].iloc[0])
            raise FairquantError(f"the {split} split has only label {classes[only] if classes else only}; "
                                 f"the target needs two classes or more in every split (check data.target / "
                                 f"data.positive)")
    if classes is not None:
        seen = set(table.loc[table["split"] == "train", "y_true"].tolist())
        absent = [name for k, name in enumerate(classes) if k not in seen]
        if absent:
            raise FairquantError(f"class {absent[0]!r} of target has no training image ({len(absent)} such classes); "
                                 f"the model cannot learn it: check data.class_imbalance or data.target")


def check_protected_values(table: pd.DataFrame, protected: list[str]) -> None:
    """Each protected attribute has a value in every kept sample (a missing one would become a group named 'nan')
    and at least two values (one group has nothing to be compared with)."""
    for name in protected:
        values = table[name].map(lambda value: "" if pd.isna(value) else str(value).strip())
        missing = null_like(table[name])
        if missing.any():
            first = table["sample_id"].iloc[int(np.flatnonzero(missing)[0])]
            raise FairquantError(missing_values(f"protected attribute {name!r}", int(missing.sum()), len(table), first,
                                                "group"))
        distinct = sorted(values.unique())
        if len(distinct) < 2:
            raise FairquantError(f"protected attribute {name!r} has the single value {distinct[0]!r} in all "
                                 f"{len(table)} samples: no group to compare with; protect an attribute with two "
                                 f"values or more (data.protected)")


def check_class_names(table: pd.DataFrame, classes: list[str] | None) -> None:
    """A multi-class target's values are all given: a missing one would become a class called 'nan'."""
    missing = [k for k, name in enumerate(classes or []) if null_like(pd.Series([name]))[0]]
    if missing:
        rows = table["y_true"].isin(missing).to_numpy()
        first = table["sample_id"].iloc[int(np.flatnonzero(rows)[0])] if rows.any() else None
        raise FairquantError(missing_values("the target", int(rows.sum()), len(table), first, "class"))


def check_groups_in_test(table: pd.DataFrame, protected: list[str]) -> None:
    """Every protected group (the intersection of data.protected) has test samples, where its metrics are measured
    (a group without any would silently drop out of every table). Groups absent from val are allowed: CEAG's checks
    and the post-processors skip them, as they do small groups."""
    groups = table[protected].astype(str).agg(" & ".join, axis=1)
    for group, part in table.groupby(groups.to_numpy(), sort=True):
        if not (part["split"] == "test").any():
            raise FairquantError(f"protected group {' & '.join(protected)} = {group} has no test sample "
                                 f"({len(part)} samples in all); its metrics would be undefined: protect coarser "
                                 f"attributes (data.protected), try another data.seed where the split is drawn "
                                 f"(UTKFace, FairFace's train CSV, a folder without a split column), or use a dataset "
                                 f"with that group in the test split")


def check_privileged_group(table: pd.DataFrame, protected: list[str], privileged_group: str | None) -> None:
    """evaluate.privileged_group names a group of the data (checked here, not after training at evaluate)."""
    groups = sorted(set(table[protected].astype(str).agg(" & ".join, axis=1)))
    if privileged_group is None:
        raise FairquantError(f"evaluate.privileged_group is null, but evaluate takes signed differences against it; "
                             f"set it to one of the groups: {', '.join(groups[:12])}")
    if privileged_group not in groups:
        raise FairquantError(f"evaluate.privileged_group is {privileged_group!r}, not a group of the data (groups of "
                             f"data.protected {protected}: {', '.join(groups[:12])}); set it to one of them")


def check_labels(table: pd.DataFrame, *, protected: list[str], privileged_group: str | None,
                 classes: list[str] | None) -> None:
    """The labels against the params, before anything is written: protected values, the target's classes in every
    split, the reference group among the groups, each group in the test split."""
    check_protected_values(table, protected)
    check_class_names(table, classes)
    check_splits(table, protected, classes)
    check_privileged_group(table, protected, privileged_group)
    check_groups_in_test(table, protected)


def label_counts(table: pd.DataFrame, protected: list[str], classes: list[str] | None) -> list[dict]:
    """Rows per split and group, with positives (binary) or rows per class (multi-class): prepare's info."""
    counts = []
    for key, part in table.groupby(["split", *protected]):
        row = {"split": key[0], "group": " & ".join(key[1:]), "n": len(part)}
        if classes is None:
            row["positives"] = int(part["y_true"].sum())
        else:
            per_class = part["y_true"].value_counts()  # classes the cell holds (class as group: one)
            row["per_class"] = {name: int(per_class[k]) for k, name in enumerate(classes) if k in per_class.index}
        counts.append(row)
    return counts


def calibration_indices(table: pd.DataFrame, size: int, seed: int, key: str = "calibration.size") -> np.ndarray:
    """Rows of ``size`` random training images for calibration. Never val or test: enforced, not assumed."""
    train_rows = table.loc[table["split"] == "train", "row"].to_numpy()
    if size > train_rows.size:
        raise FairquantError(f"{key}={size} is larger than the training split "
                             f"({train_rows.size} images); lower it")
    rows = np.sort(np.random.default_rng(seed).choice(train_rows, size, replace=False))
    assert_training_rows(table, rows)
    return rows


def assert_training_rows(table: pd.DataFrame, rows: np.ndarray) -> None:
    """Refuse calibration rows from the validation or test split: both are what the study evaluates on (leakage
    the reference works suffered)."""
    split = table.set_index("row").loc[np.asarray(rows), "split"]
    held_out = split[split != "train"]
    if len(held_out):
        raise FairquantError(f"calibration set contains {len(held_out)} {held_out.iloc[0]} images (first row "
                             f"{int(held_out.index[0])}); calibration data must come from the training split")


def load_prepared(folder: str | Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The prepare stage's outputs: samples table, memory-mapped image store, info."""
    from fairquant.io import read_images, read_json, read_table

    folder = Path(folder)
    return read_table(folder / "samples.parquet"), read_images(folder / "images.npy"), read_json(folder / "info.json")
