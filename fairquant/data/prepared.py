"""Reading the prepare stage's folder (``samples.parquet``, ``images.npy``, ``info.json``) checked: each file against
its schema, the three against each other, and the folder's record against the params the reading stage runs with.

A prepared folder from a shared remote, or one left from other params (``data.protected`` changed by hand without
re-running prepare), is refused in one line naming both values and the fix, before any training or prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.io import read_json_object, read_table

SPLITS = ("train", "val", "test")
RERUN = "re-run prepare (dvc repro prepare)"
INFO_TYPES = {"image_size": int, "synthetic": bool, "target": str, "protected": list}


def load_prepared(folder: str | Path, params, *, params_file: str | Path = "params.yaml"
                  ) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The samples table, the memory-mapped image store and the info record of the prepared folder ``folder``,
    each checked, and the record checked against ``params`` (the :class:`fairquant.params.Params` of
    ``params_file``, named in the message)."""
    folder = Path(folder)
    info = read_info(folder)
    check_record(info, params, folder=folder, params_file=params_file)
    table = read_samples(folder, info)
    images = read_store(folder, info, rows=table["row"].to_numpy())
    return table, images, info


def check_prepared(folder: str | Path, params, *, params_file: str | Path = "params.yaml") -> None:
    """:func:`load_prepared` for a stage whose library reads the folder later: refused now, before any work."""
    load_prepared(folder, params, params_file=params_file)


def read_prepared_samples(folder: str | Path, params, *, params_file: str | Path = "params.yaml") -> pd.DataFrame:
    """The checked samples table of the prepared folder ``folder`` and its record checked against ``params``, without
    the image store: for a stage that compares predictions with the prepared splits (evaluate, a post-processor)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FairquantError(f"{folder} is not a folder; point --data at the prepared data folder (data/prepared)")
    info = read_info(folder)
    check_record(info, params, folder=folder, params_file=params_file)
    return read_samples(folder, info)


def read_info(folder: Path) -> dict:
    path = folder / "info.json"
    info = read_json_object(path, f"the file is damaged: {RERUN}")
    missing = [key for key in INFO_TYPES if key not in info]
    if missing:
        raise FairquantError(f"{path}: lacks {missing}; the file is damaged or from an older fairquant: {RERUN}")
    for key, expected in {**INFO_TYPES, "task": str, "classes": list}.items():
        value = info.get(key)
        if key in info and (not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)):
            raise FairquantError(f"{path}: {key!r} should be {expected.__name__}, found {value!r}; {RERUN}")
    for key in ("protected", "classes"):
        if key in info and not (info[key] and all(isinstance(name, str) for name in info[key])):
            raise FairquantError(f"{path}: {key!r} should be a list of names, found {info[key]!r}; {RERUN}")
    if info["image_size"] < 1:
        raise FairquantError(f"{path}: image_size is {info['image_size']}; {RERUN}")
    return info


def check_record(info: dict, params, *, folder: Path, params_file: str | Path = "params.yaml") -> None:
    """The prepared folder was made with the params this stage runs with: target, protected attributes, image size
    and task (a multi-class folder records its classes)."""
    task = "multiclass" if info.get("classes") else "binary"
    pairs = [("target", info["target"], "data.target", params.data.target),
             ("protected", info["protected"], "data.protected", list(params.data.protected)),
             ("image_size", info["image_size"], "prepare.image_size", params.prepare.image_size),
             ("task", task, "data.task", params.data.task)]
    for name, recorded, key, wanted in pairs:
        if recorded != wanted:
            raise FairquantError(f"{folder} was made with {name} {recorded!r} but {Path(params_file).name} has {key} "
                                 f"{wanted!r}; {RERUN} with this params file, or put {key} back")


def read_samples(folder: Path, info: dict) -> pd.DataFrame:
    path = folder / "samples.parquet"
    table = read_table(path)
    columns = ("sample_id", "split", "y_true", "row", *info["protected"])
    absent = [name for name in columns if name not in table.columns]
    if absent:
        raise FairquantError(f"{path} lacks the columns {absent}; the file is damaged or from another run: {RERUN}")
    for name in columns:
        integer = name in ("y_true", "row")
        ok = pd.api.types.is_integer_dtype(table[name]) if integer else \
            pd.api.types.is_object_dtype(table[name]) or pd.api.types.is_string_dtype(table[name])
        nulls = int(table[name].isna().sum())
        if not ok or nulls:
            what = "integers" if integer else "strings"
            found = f"{nulls} null rows" if ok else str(table[name].dtype)
            raise FairquantError(f"{path}: column {name!r} should be {what} without nulls, found {found}; {RERUN}")
    classes = info.get("classes")
    allowed = range(len(classes)) if classes else (0, 1)
    if not table["y_true"].isin(allowed).all():
        found = sorted(set(table["y_true"].tolist()) - set(allowed))[:5]
        what = f"class indices 0..{len(classes) - 1}" if classes else "the labels 0 and 1"
        raise FairquantError(f"{path}: y_true holds {found}, not {what}; {RERUN}")
    unknown = sorted(set(table["split"]) - set(SPLITS))
    if unknown:
        raise FairquantError(f"{path}: split holds {unknown[:3]}, not one of {list(SPLITS)}; {RERUN}")
    if table["sample_id"].duplicated().any():
        raise FairquantError(f"{path}: sample {table['sample_id'][table['sample_id'].duplicated()].iloc[0]!r} appears "
                             f"more than once; {RERUN}")
    return table


def read_store(folder: Path, info: dict, *, rows: np.ndarray) -> np.ndarray:
    """The memory-mapped image store, its shape and dtype checked against the record and the table's rows."""
    from fairquant.io import read_images

    path = folder / "images.npy"
    images = read_images(path)
    size = info["image_size"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise FairquantError(f"{path} holds {images.dtype} {images.shape}, not uint8 images (N, H, W, C); {RERUN}")
    if images.shape[3] != 3:  # prepare always writes RGB; the models take three channels
        raise FairquantError(f"{path} holds {images.shape[3]}-channel images {images.shape}, not RGB (N, H, W, 3); "
                             f"{RERUN}")
    if images.shape[1:3] != (size, size):
        raise FairquantError(f"{path} holds {images.shape[1]}x{images.shape[2]} images but info.json says image_size "
                             f"{size}; {RERUN}")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= len(images)):
        raise FairquantError(f"{path} holds {len(images)} images but samples.parquet indexes rows up to "
                             f"{int(rows.max())}; the two are from different runs: {RERUN}")
    return images
