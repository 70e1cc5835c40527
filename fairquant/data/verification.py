"""The prepared verification data as the training, compression and evaluation stages read it: tables,
memory-mapped image stores and info (written by :mod:`fairquant.data.prepare_verification`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.io import read_images, read_json, read_table


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


def load_verification(folder: str | Path) -> PreparedVerification:
    """Read a folder written by :func:`fairquant.data.prepare_verification.prepare_verification` (stores
    memory-mapped)."""
    folder = Path(folder)
    if not (folder / "info.json").is_file():
        raise FairquantError(f"{folder} is not a prepared verification folder; run `dvc repro verify_prepare` first")
    return PreparedVerification(read_table(folder / "train.parquet"), read_images(folder / "train_images.npy"),
                                read_table(folder / "test.parquet"), read_images(folder / "test_images.npy"),
                                read_table(folder / "pairs.parquet"), read_json(folder / "info.json"))
