"""Any labelled image folder: a root of images plus one label table (CSV or parquet) naming each image.

The table names each image's file (a path relative to ``data.root``), the target, the protected attributes,
optionally the split (train/val/test) and optionally an identity column (``data.folder``). Without a split column
the split is drawn: seeded, stratified by target x protected groups, and grouped by identity so that one person
never sits in two splits. Every problem is refused with one line naming the table and the row: the CSV line
number (the header is line 1) or, for parquet, the 1-based data row. Paths never leave the root: no absolute
path, no ``..``, no symlink that resolves outside it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.loaders import SPLITS, RawDataset, _assemble, _inside, _require, reader
from fairquant.data.paths import escapes, named_path, real_root
from fairquant.errors import FairquantError
from fairquant.params import DataParams
from fairquant.params.data import DEFAULT_SPLIT_COLUMN

SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written by the generated twin: its outputs are labelled synthetic
NATURAL_POSITIVE = {frozenset({"0", "1"}): "1", frozenset({"-1", "1"}): "1", frozenset({"False", "True"}): "True",
                    frozenset({"false", "true"}): "true"}


class _Rows:
    """How a table's rows are named in messages: CSV line numbers (header = line 1) or 1-based parquet rows."""

    def __init__(self, table: Path) -> None:
        self.table = table
        self.is_csv = table.suffix.lower() == ".csv"

    def name(self, index: int) -> str:
        return f"line {index + 2}" if self.is_csv else f"row {index + 1}"

    def error(self, index: int, problem: str) -> FairquantError:
        return FairquantError(f"{self.table}: {self.name(index)}: {problem}")


@reader("folder")
def load_folder(root: Path, params: DataParams) -> RawDataset:
    """A root of images plus ``data.folder.table``; see the module's docstring for what is checked."""
    options = params.folder
    if escapes(options.table):
        raise FairquantError(f"data.folder.table is {options.table!r}, outside data.root; put the table in the "
                             f"dataset root and name it relative to data.root")
    table_path = _inside(real_root(root), _require(root / options.table, "label table data.folder.table"))
    rows = _Rows(table_path)
    split_column = _split_column(table_path, params)
    used = _used_columns(params, split_column)
    frame = _read_table(table_path, used)
    _check_cells(frame, used, rows)
    paths = _resolve_files(root, frame[options.file_column], rows)
    if split_column is None:
        split = _drawn_split(frame, params)
    else:
        split = _given_split(frame[split_column], rows)
        if options.identity_column is not None:
            _check_identity_splits(frame[options.identity_column], split, rows)
    _check_groups(frame, split, params.protected, table_path, drawn=split_column is None)
    frame = frame.assign(sample_id=frame[options.file_column], split=split)
    natural = {name: NATURAL_POSITIVE[frozenset(frame[name])] for name in {params.target, *params.protected}
               if frozenset(frame[name]) in NATURAL_POSITIVE}
    table, classes = _assemble(frame, params, list(used), natural)
    return RawDataset(table, paths=paths, classes=classes, synthetic=(root / SYNTHETIC_MARKER).is_file())


def _split_column(table_path: Path, params: DataParams) -> str | None:
    """The split column, or None when the split is drawn: no column configured, or the default 'split' absent."""
    name = params.folder.split_column
    if name == DEFAULT_SPLIT_COLUMN and name not in _header(table_path):
        return None
    return name


def _used_columns(params: DataParams, split_column: str | None) -> dict[str, str]:
    """Each column the study reads -> the params key that names it."""
    options = params.folder
    used = {options.file_column: "data.folder.file_column", params.target: "data.target"}
    for name in params.protected:
        used.setdefault(name, "data.protected")
    if split_column is not None:
        used.setdefault(split_column, "data.folder.split_column")
    if options.identity_column is not None:
        used.setdefault(options.identity_column, "data.folder.identity_column")
    return used


def _header(table_path: Path) -> list[str]:
    try:
        if table_path.suffix.lower() == ".csv":
            pd.read_csv(table_path, nrows=0, encoding="utf-8-sig")  # readable at all; its names are de-duplicated
            with open(table_path, newline="", encoding="utf-8-sig") as handle:
                return next(csv.reader(handle), [])
        import pyarrow.parquet as pq

        return list(pq.read_schema(table_path).names)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FairquantError(f"{table_path}: not a readable label table ({str(exc).splitlines()[0]})") from None


def _read_table(table_path: Path, used: dict[str, str]) -> pd.DataFrame:
    """The used columns as stripped strings, '' for an empty cell; unknown columns refused, listing the table's."""
    header = _header(table_path)
    twice = next((name for name in used if header.count(name) > 1), None)
    if twice is not None:  # a reader would keep one of them silently (pandas renames the other 'name.1')
        raise FairquantError(f"{table_path}: the header names column {twice!r} twice; rename or drop one")
    for name, key in used.items():
        if name not in header:
            raise FairquantError(f"{table_path}: no column {name!r} ({key}); the table's columns: {', '.join(header)}")
    try:
        if table_path.suffix.lower() == ".csv":
            frame = pd.read_csv(table_path, usecols=list(used), dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            frame = pd.read_parquet(table_path, columns=list(used))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FairquantError(f"{table_path}: not a readable label table ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise FairquantError(f"{table_path}: the table has no rows; list one image per row")
    _check_scalar_cells(frame, used, _Rows(table_path))
    return pd.DataFrame({name: frame[name].map(_cell_text) for name in used}).reset_index(drop=True)


SCALAR_CELL = (str, int, float, bool, np.integer, np.floating, np.bool_)


def _check_scalar_cells(frame: pd.DataFrame, used: dict[str, str], rows: _Rows) -> None:
    """A parquet column of lists, structs or bytes would become its printed form (a silent new group): refused."""
    for name in used:
        if frame[name].dtype != object:
            continue
        for index, value in enumerate(frame[name]):
            if value is not None and not isinstance(value, SCALAR_CELL):
                raise rows.error(index, f"{name!r} cell holds a {type(value).__name__}, not a text or number; store "
                                        f"one value per cell (strings for file paths)")


def _cell_text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():  # parquet ints with nulls arrive as floats
        return str(int(value))
    return str(value).strip()


def _check_cells(frame: pd.DataFrame, used: dict[str, str], rows: _Rows) -> None:
    for name in used:
        empty = np.flatnonzero(frame[name].to_numpy() == "")
        if empty.size:
            raise rows.error(int(empty[0]), f"empty {name!r} cell ({empty.size} in all); fill it or drop the row")


def _resolve_files(root: Path, files: pd.Series, rows: _Rows) -> list[Path]:
    """Each image's resolved path inside the root (:mod:`fairquant.data.paths`); missing and twice-listed files
    refused."""
    base = real_root(root)
    seen: dict[Path, int] = {}
    paths = []
    for index, text in enumerate(files):
        path = named_path(base, text, f"{rows.table}: {rows.name(index)}")
        if not path.is_file():
            raise rows.error(index, f"file {text!r} is missing under {root}; fix the path or drop the row")
        if path in seen:
            raise rows.error(index, f"file {text!r} is listed twice (first on {rows.name(seen[path])}); list each "
                                    f"image once")
        seen[path] = index
        paths.append(path)
    return paths


def _given_split(values: pd.Series, rows: _Rows) -> np.ndarray:
    bad = np.flatnonzero(~values.isin(SPLITS).to_numpy())
    if bad.size:
        raise rows.error(int(bad[0]), f"split {values.iloc[bad[0]]!r} is not one of {', '.join(SPLITS)}")
    return values.to_numpy().astype(str)


def _check_identity_splits(identities: pd.Series, split: np.ndarray, rows: _Rows) -> None:
    first: dict[str, int] = {}
    for index, identity in enumerate(identities):
        where = first.setdefault(identity, index)
        if split[where] != split[index]:
            raise rows.error(index, f"identity {identity!r} is in the {split[index]} split but also in {split[where]} "
                                    f"({rows.name(where)}); keep each identity in one split, or drop the split column "
                                    f"to have it drawn grouped by identity")


def _drawn_split(frame: pd.DataFrame, params: DataParams) -> np.ndarray:
    """A seeded split, stratified by target x protected groups and grouped by identity when one is given.

    Units (identities, or rows without one) take their most common group and target. Each group's units, sorted
    by target and shuffled within it, are assigned by a golden-ratio sequence, so any run of them (the group, each
    target within it) gets its split shares to within a unit or two; a group of three units or more gets at
    least one in every split, since evaluation needs every group in val and test; a target value held by two units
    or more gets one in train (a class the model never sees cannot be learned)."""
    units = (frame[params.folder.identity_column] if params.folder.identity_column is not None
             else pd.Series(np.arange(len(frame)).astype(str)))
    rows = pd.DataFrame({"unit": units, "group": frame[params.protected].agg("\x1f".join, axis=1),
                         "target": frame[params.target]})
    counted = rows.groupby(["unit", "group", "target"]).size().rename("n").reset_index()
    dominant = counted.sort_values(["unit", "n", "group", "target"], ascending=[True, False, True, True],
                                   kind="stable").drop_duplicates("unit")
    rng = np.random.default_rng(params.seed)
    dominant = dominant.assign(shuffle=rng.permutation(len(dominant))).sort_values(["group", "target", "shuffle"])
    unit_split: dict[str, str] = {}
    for _, block in dominant.groupby("group", sort=True):
        assigned = _golden_assignment(len(block), params.folder.test_share, params.val_share, rng.random())
        unit_split.update(zip(block["unit"], assigned))
    for _, block in dominant.groupby("target", sort=True):  # a rare class of two units or more: one trains
        if len(block) >= 2 and not any(unit_split[u] == "train" for u in block["unit"]):
            unit_split[block["unit"].iloc[0]] = "train"
    return units.map(unit_split).to_numpy().astype(str)


GOLDEN = (np.sqrt(5) - 1) / 2


def _golden_assignment(n: int, test_share: float, val_share: float, offset: float) -> np.ndarray:
    position = (offset + np.arange(n) * GOLDEN) % 1.0
    assigned = np.where(position < test_share, "test", np.where(position < test_share + val_share, "val", "train"))
    if n >= len(SPLITS):
        for name in SPLITS:
            if not (assigned == name).any():
                donor = max(SPLITS, key=lambda s: (assigned == s).sum())
                assigned[np.flatnonzero(assigned == donor)[-1]] = name
    return assigned


GROUP_SPLITS = ("train", "test")  # val may lack a group: CEAG's checks and the post-processors skip it (as CelebA's)


def _check_groups(frame: pd.DataFrame, split: np.ndarray, protected: list[str], table_path: Path, *,
                  drawn: bool) -> None:
    """Every protected group (the intersection of the protected attributes) needs rows in train and test."""
    groups = frame[protected].agg(" & ".join, axis=1)
    for group in sorted(groups.unique()):
        in_group = (groups == group).to_numpy()
        for name in GROUP_SPLITS:
            if not (in_group & (split == name)).any():
                fix = ("add images of that group, try another data.seed (the split is drawn), or give the table a "
                       "split column" if drawn else f"move some of its images to the {name} split")
                raise FairquantError(f"{table_path}: protected group {' & '.join(protected)} = {group} has no {name} "
                                     f"rows ({int(in_group.sum())} rows in all); {fix}")
