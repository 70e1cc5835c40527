"""FairFace's layout: the train and val label CSVs beside their image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.loaders import RawDataset, _assemble, _inside, _present, _random_split, _require, reader
from fairquant.data.paths import named_path, real_root
from fairquant.errors import FairquantError
from fairquant.params import DataParams

FAIRFACE_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
FAIRFACE_RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
FAIRFACE_GENDERS = ["Male", "Female"]  # the order of FairFace's released model's heads

@reader("fairface")
def load_fairface(root: Path, params: DataParams) -> RawDataset:
    """FairFace: ``fairface_label_{train,val}.csv`` with ``file,age,gender,race,service_test``.

    The official val split is the test split here; validation is held out of the train CSV.
    """
    frames = []
    for csv_name, split in (("fairface_label_train.csv", "train"), ("fairface_label_val.csv", "test")):
        frame = _fairface_table(_inside(real_root(root), _require(root / csv_name, "FairFace label file")))
        frame["split"] = split
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    is_train = frame["split"] == "train"
    frame.loc[is_train, "split"] = _random_split(int(is_train.sum()), params.val_share, 0.0, params.seed)
    frame["sample_id"] = frame["file"]
    paths = _fairface_paths(root, frame)
    table, classes = _assemble(frame, params, ["age", "gender", "race"], {"gender": "Female"},
                               {"age": FAIRFACE_AGES, "race": FAIRFACE_RACES, "gender": FAIRFACE_GENDERS})
    return RawDataset(table, paths=paths, classes=classes)


FAIRFACE_VALUES = {"age": FAIRFACE_AGES, "gender": FAIRFACE_GENDERS, "race": FAIRFACE_RACES}


def _fairface_table(path: Path) -> pd.DataFrame:
    """One label CSV (a byte-order mark is read, not kept in the first column's name), every used cell checked:
    present, and a value of FairFace's own vocabulary; ``line`` keeps each row's CSV line number."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError, a bad encoding, ragged rows
        raise FairquantError(f"{path}: not a readable CSV ({(str(exc).splitlines() or [''])[0]}); restore FairFace's "
                             f"label file (header file,age,gender,race,service_test)") from None
    missing = [c for c in ("file", *FAIRFACE_VALUES) if c not in frame.columns]
    if missing:
        raise FairquantError(f"{path}: no column {missing[0]!r}; expected columns file,age,gender,race,service_test, "
                             f"found {','.join(frame.columns)}")
    if frame.empty:
        raise FairquantError(f"{path}: the table has no rows; restore FairFace's label file")
    frame = frame.assign(line=np.arange(len(frame)) + 2, csv=str(path))
    for column in ("file", *FAIRFACE_VALUES):
        values = frame[column].str.strip()
        known = values != "" if column == "file" else values.isin(FAIRFACE_VALUES[column])
        if not known.all():
            row = frame[~known].iloc[0]
            what = "is empty" if row[column].strip() == "" else f"is {row[column]!r}"
            expected = "a file name" if column == "file" else f"one of {', '.join(FAIRFACE_VALUES[column])}"
            raise FairquantError(f"{path}: line {row['line']}: {column} {what}, expected {expected}; fix the row")
        frame[column] = values
    return frame


def _fairface_paths(root: Path, frame: pd.DataFrame) -> list[Path]:
    """Each row's image inside the root; a name listed twice (in either CSV) is refused."""
    base, first, paths = real_root(root), {}, []
    for name, line, csv_path in zip(frame["file"], frame["line"], frame["csv"]):
        where = f"{csv_path}: line {line}"
        path = named_path(base, name, where)
        if path in first:
            raise FairquantError(f"{where}: file {name!r} is listed twice (first: {first[path]}); list each image once")
        first[path] = where
        paths.append(path)
    wheres = [f"{csv_path}: line {line}" for line, csv_path in zip(frame["line"], frame["csv"])]
    return _present(paths, list(frame["file"]), wheres)
