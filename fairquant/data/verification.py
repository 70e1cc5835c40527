"""The prepared verification data as the training, compression and evaluation stages read it: tables,
memory-mapped image stores and info (written by :mod:`fairquant.data.prepare_verification`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.io import read_images, read_json, read_table
from fairquant.params.verify import VerifyDataParams


@dataclass(frozen=True)
class PreparedVerification:
    """The prepared folder: tables, memory-mapped image stores and info."""

    train: pd.DataFrame  # row, path, identity (0..K-1), identity_name, race
    train_images: np.ndarray
    test: pd.DataFrame  # row, path, race, identity_name, alignment
    test_images: np.ndarray
    pairs: pd.DataFrame  # pair_id, race, fold, genuine, row1, row2, line
    info: dict

    @property
    def train_rows(self) -> np.ndarray:
        return self.train["row"].to_numpy()

    @property
    def identities(self) -> np.ndarray:
        return self.train["identity"].to_numpy()

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])


def load_verification(folder: str | Path, *, data: VerifyDataParams) -> PreparedVerification:
    """Read a folder written by :func:`fairquant.data.prepare_verification.prepare_verification` (stores
    memory-mapped), each part checked: the tables' columns and integer dtypes, the stores' shape against the
    recorded image size, every row a table or pair indexes inside its store, identities from 0; then its record
    against the params the stage runs with (``data``, params.yaml's verify.data: image size, source, races)."""
    folder = Path(folder)
    if not (folder / "info.json").is_file():
        raise FairquantError(f"{folder} is not a prepared verification folder; run `dvc repro verify_prepare` first")
    info = read_json(folder / "info.json")
    size = info.get("image_size") if isinstance(info, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise FairquantError(f"{folder / 'info.json'}: no integer image_size (found {size!r}); the file is damaged: "
                             f"{RERUN}")
    prepared = PreparedVerification(read_table(folder / "train.parquet"), read_images(folder / "train_images.npy"),
                                    read_table(folder / "test.parquet"), read_images(folder / "test_images.npy"),
                                    read_table(folder / "pairs.parquet"), info)
    _check_table(folder / "train.parquet", prepared.train, ("row", "identity"), ("race",))
    _check_table(folder / "test.parquet", prepared.test, ("row",), ("race",))
    _check_table(folder / "pairs.parquet", prepared.pairs, ("row1", "row2", "fold"), ("pair_id", "race"))
    if "genuine" not in prepared.pairs.columns or not pd.api.types.is_bool_dtype(prepared.pairs["genuine"]):
        raise FairquantError(f"{folder / 'pairs.parquet'}: column 'genuine' should be booleans; {RERUN}")
    for store, table, columns in (("train_images.npy", prepared.train, ("row",)),
                                  ("test_images.npy", prepared.test, ("row",)),
                                  ("test_images.npy", prepared.pairs, ("row1", "row2"))):
        images = prepared.train_images if store == "train_images.npy" else prepared.test_images
        _check_store(folder / store, images, size, [table[column].to_numpy() for column in columns])
    _check_identities(folder / "train.parquet", prepared.identities)
    _check_record(folder / "info.json", info, data)
    return prepared


def _check_identities(path: Path, identities: np.ndarray) -> None:
    """Training identities are class indices from 0 (the classification head's rows; a negative one would index
    nothing)."""
    if identities.size and identities.min() < 0:
        raise FairquantError(f"{path}: column 'identity' should number the identities from 0, found "
                             f"{int(identities.min())}; {RERUN}")


def _check_record(path: Path, info: dict, data: VerifyDataParams) -> None:
    """The folder was prepared with these params: a folder from others would train at another size or on other
    races without a word."""
    wanted = {"image_size": data.image_size, "source": data.source, "races": list(data.races)}
    differ = [key for key, value in wanted.items() if key in info and info[key] != value]
    if differ:
        key = differ[0]
        raise FairquantError(f"{path} records {key} {info.get(key)!r} but params.yaml's verify.data.{key} is "
                             f"{wanted[key]!r}; the folder was prepared with other params: {RERUN}")


RERUN = "re-run verify_prepare (dvc repro verify_prepare)"


def _check_table(path: Path, table: pd.DataFrame, integers: tuple[str, ...], strings: tuple[str, ...]) -> None:
    absent = [name for name in integers + strings if name not in table.columns]
    if absent:
        raise FairquantError(f"{path} lacks the columns {absent}; the file is damaged or from another run: {RERUN}")
    for name in integers + strings:
        integer = name in integers
        ok = pd.api.types.is_integer_dtype(table[name]) if integer else \
            pd.api.types.is_object_dtype(table[name]) or pd.api.types.is_string_dtype(table[name])
        if not ok or table[name].isna().any():
            raise FairquantError(f"{path}: column {name!r} should be {'integers' if integer else 'strings'} without "
                                 f"nulls, found {table[name].dtype}; {RERUN}")


def _check_store(path: Path, images: np.ndarray, size: int, rows: list[np.ndarray]) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:3] != (size, size):
        raise FairquantError(f"{path} holds {images.dtype} {images.shape}, not uint8 images of {size}x{size} px as "
                             f"info.json records; {RERUN}")
    highest = max((int(r.max()) for r in rows if r.size), default=-1)
    lowest = min((int(r.min()) for r in rows if r.size), default=0)
    if lowest < 0 or highest >= len(images):
        row = highest if highest >= len(images) else lowest
        raise FairquantError(f"{path} holds {len(images)} images but its table indexes row {row}; "
                             f"the two are from different runs: {RERUN}")
