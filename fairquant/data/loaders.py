"""Loaders for real on-disk dataset layouts, all returning one :class:`RawDataset` shape.

Each loader reads the layout exactly as the dataset ships it (no conversion step for the user), resolves
the target and protected attributes named in params, and says which file is missing when the layout is
wrong. Images are not decoded here: ``prepare`` decodes each one once.

Each reader registers itself under the ``data.source`` names it reads (``@reader("utkface")``);
:func:`load_dataset` looks the source up, and a source without a reader is an error, never a fallback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.paths import named_path, real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.params import DataParams

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    """Samples with split, target and protected attributes (as readable strings).

    Images are either ``paths`` (files to decode) or ``arrays`` (uint8 N x H x W x C, for datasets
    that ship pixels in one file). ``skipped`` counts entries dropped for malformed metadata.
    ``classes`` names the multi-class target's values in label order (``y_true`` indexes it); None for a
    binary target (``y_true`` is 1 for a positive value). ``synthetic`` marks generated data whose source name
    does not say so (the generated folder twin read by ``data.source: folder``).
    """

    table: pd.DataFrame  # sample_id, split, y_true, one column per protected attribute
    paths: list[Path] | None = None
    arrays: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    classes: list[str] | None = None
    synthetic: bool = False


Reader = Callable[[Path, DataParams], RawDataset]  # (data.root, data) -> the dataset
READERS: dict[str, Reader] = {}  # data.source -> its reader


def reader(*sources: str):
    """Register the decorated function as the reader of each ``data.source`` in ``sources``."""
    def register(function: Reader) -> Reader:
        for source in sources:
            if source in READERS:
                raise ValueError(f"data.source {source!r} has two readers")
            READERS[source] = function
        return function
    return register


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FairquantError(f"{path}: missing ({what}); check data.root and data.source in params.yaml")
    return path


def _inside(base: Path, path: Path) -> Path:
    """A file the reader opens (a label list, a table), refused when it resolves outside the resolved root
    ``base``; returned as named (messages keep the name the user knows)."""
    require_inside(base, path, str(path), path.name)
    return path


def _check_attribute(name: str, valid: list[str], role: str) -> None:
    if name not in valid:
        raise FairquantError(f"unknown {role} attribute '{name}'; valid attributes: {', '.join(valid)}")


# How a missing value reads once made text: pandas' default NA strings (read_csv's na_values), compared in lower case,
# plus 'nat'. A real category spelled like one of them must be renamed: its name cannot be told from a gap.
NULL_TEXTS = frozenset({"", "#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>",
                        "n/a", "na", "null", "nan", "none", "nat"})
RENAME_HINT = "a category really named like a missing value (None, NA, null) must be renamed in the labels"


def null_like(values: pd.Series) -> np.ndarray:
    """Where ``values`` hold a missing value: NaN/None, or a text that reads as one (:data:`NULL_TEXTS`)."""
    text = values.map(lambda value: "" if pd.isna(value) else str(value).strip().lower())
    return text.isin(NULL_TEXTS).to_numpy()


def _refuse_null_target(frame: pd.DataFrame, name: str) -> None:
    """A missing target value is no class, and not the negative one either (a binary target would read it as 0)."""
    missing = null_like(frame[name])
    if missing.any():
        first = frame["sample_id"].iloc[int(np.flatnonzero(missing)[0])]
        raise FairquantError(missing_values("the target", int(missing.sum()), len(frame), first, "class"))


def missing_values(what: str, count: int, total: int, first, noun: str) -> str:
    """The one message for missing labels: ``what`` is empty in ``count`` of ``total`` samples; it is no ``noun``."""
    return (f"{what} is empty (null) in {count} of {total} samples (first: {first}); fill the value in the dataset's "
            f"labels or drop those rows: a missing value is not a {noun} ({RENAME_HINT})")


MAX_CLASSES = 32767  # y_true is int16 for a multi-class target


def _binary_target(values: pd.Series, name: str, positive: list[str] | None, natural: str | None) -> np.ndarray:
    """1 where the target value is positive. ``natural`` is the positive value of an already binary attribute."""
    values = values.astype(str)
    if positive is None:
        if natural is None:
            raise FairquantError(
                f"target '{name}' is not binary; set data.positive to the values counted as positive, or "
                f"data.task: multiclass (found values: {', '.join(sorted(values.unique())[:12])})")
        positive = [natural]
    unknown = sorted(set(positive) - set(values.unique()))
    if unknown:
        raise FairquantError(f"data.positive {unknown} never occurs in target '{name}'; "
                             f"found values: {', '.join(sorted(values.unique())[:12])}")
    return values.isin(positive).to_numpy().astype(np.int8)


def _class_target(values: pd.Series, name: str, order: list[str] | None, closed: bool = False
                  ) -> tuple[np.ndarray, list[str]]:
    """Each row's class index and the class names: ``order`` (the dataset's own label order) when the dataset
    has one, else the values sorted (numerically when every value is a number). A ``closed`` order (a class
    dataset's label list) is kept whole, so the class index is the dataset's label even where a class has no
    image (prepare then refuses the class that has no training image)."""
    values = values.astype(str)
    found = sorted(values.unique(), key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    if order is None:
        classes = found
    else:
        classes = [c for c in order if closed or c in set(found)] + [c for c in found if c not in order]
    if len(classes) < 2:
        raise FairquantError(f"target '{name}' has only the value {found[0]!r}; a multi-class target needs at "
                             f"least two values (check data.target)")
    if len(classes) > MAX_CLASSES:
        raise FairquantError(f"target '{name}' has {len(classes)} values, more than the {MAX_CLASSES} classes "
                             f"fairquant supports; choose another data.target")
    lookup = {c: k for k, c in enumerate(classes)}
    return values.map(lookup).to_numpy().astype(np.int16), classes


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _assemble(frame: pd.DataFrame, params: DataParams, valid: list[str], natural_positive: dict[str, str],
              class_order: dict[str, list[str]] | None = None, closed: bool = False
              ) -> tuple[pd.DataFrame, list[str] | None]:
    """The samples table (sample_id, split, y_true, protected columns) and, for a multi-class target, its class
    names. ``natural_positive`` names the positive value of already binary attributes; ``class_order`` the
    dataset's own label order of categorical ones (``closed``: kept whole, see :func:`_class_target`)."""
    _check_attribute(params.target, valid, "target")
    for name in params.protected:
        _check_attribute(name, valid, "protected")
    table = pd.DataFrame({"sample_id": frame["sample_id"].astype(str), "split": frame["split"].astype(str)})
    _refuse_null_target(frame, params.target)
    classes = None
    if params.task == "multiclass":
        table["y_true"], classes = _class_target(frame[params.target], params.target,
                                                 (class_order or {}).get(params.target), closed)
    else:
        table["y_true"] = _binary_target(frame[params.target], params.target, params.positive,
                                         natural_positive.get(params.target))
    for name in params.protected:
        table[name] = frame[name].astype(str).to_numpy()
    return table.reset_index(drop=True), classes


def _random_split(n: int, val_share: float, test_share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return np.where(u < test_share, "test", np.where(u < test_share + val_share, "val", "train"))


# --- CelebA (and the generated default, written in the same layout) ---------------------------------

def _celeba_value_names(attribute: str) -> tuple[str, str]:
    return ("Male", "Female") if attribute == "Male" else (attribute, f"not {attribute}")


@reader("synthetic", "celeba")
def load_celeba(root: Path, params: DataParams) -> RawDataset:
    """CelebA: ``img_align_celeba/``, ``list_attr_celeba.txt`` (count, names, -1/1), ``list_eval_partition.txt``.

    torchvision's ``CelebA`` checks MD5 sums of the official files, so a copy re-encoded elsewhere (or the
    generated default) would be refused; this parser reads the same files without that check, but checks every
    line: -1/1 values, one row per image, a split 0/1/2 for each, image names inside the root.
    """
    base = real_root(root)
    images = _require(root / "img_align_celeba", "CelebA image folder img_align_celeba/")
    attr_path = _inside(base, _require(root / "list_attr_celeba.txt", "CelebA attribute file"))
    part_path = _inside(base, _require(root / "list_eval_partition.txt", "CelebA partition file"))
    names, files, numbers, values = _celeba_attributes(attr_path)
    _check_attribute(params.target, names, "target")
    for name in params.protected:
        _check_attribute(name, names, "protected")
    partition = _celeba_partition(part_path)
    missing = [f for f in files if f not in partition]
    if missing:
        raise FairquantError(f"{part_path}: no partition line for {len(missing)} images of {attr_path.name} (first: "
                             f"{missing[0]}); add a line '<image> <0|1|2>' for each")
    wheres = [f"{attr_path}: line {number}" for number in numbers]
    paths = _present([named_path(base, f, w, relative_to=images) for f, w in zip(files, wheres)], files, wheres)
    _refuse_same_file(paths, files, numbers, attr_path)
    frame = pd.DataFrame({"sample_id": files, "split": [SPLITS[partition[f]] for f in files]})
    for name in {params.target, *params.protected}:
        yes, no = _celeba_value_names(name)
        frame[name] = np.where(values[:, names.index(name)] == "1", yes, no)
    natural = {name: _celeba_value_names(name)[0] for name in names}
    order = {name: list(reversed(_celeba_value_names(name))) for name in names}  # -1 then 1: class 1 = binary's 1
    table, classes = _assemble(frame, params, names, natural, order)
    return RawDataset(table, paths=paths, classes=classes)


def _refuse_same_file(paths: list[Path], files: list[str], numbers: list[int], path: Path) -> None:
    """Two rows naming one file in different words ('./000001.jpg' and '000001.jpg', or a symlink to a listed
    image) would put one image in the study twice, possibly in train and test: refused."""
    first: dict[Path, int] = {}
    for k, resolved in enumerate(paths):
        j = first.setdefault(resolved, k)
        if j != k:
            raise FairquantError(f"{path}: line {numbers[k]}: image {files[k]!r} is the same file as {files[j]!r} "
                                 f"(line {numbers[j]}); keep one row per image")


def _present(paths: list[Path], names: list[str], wheres: list[str]) -> list[Path]:
    """``paths``, refused with the first missing one named (an incomplete copy is not read as corrupt files)."""
    missing = [k for k, path in enumerate(paths) if not path.is_file()]
    if missing:
        first = missing[0]
        raise FairquantError(f"{wheres[first]}: image {names[first]!r} is missing ({len(missing)} of {len(paths)} "
                             f"listed images are); the copy is incomplete: restore them from the dataset's archive")
    return paths


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise FairquantError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); restore the dataset's "
                             f"original file") from None


def _celeba_attributes(path: Path) -> tuple[list[str], list[str], list[int], np.ndarray]:
    """(attribute names, image file names, their line numbers, the values as an images x attributes array of
    '-1'/'1')."""
    lines = _text_lines(path)
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise FairquantError(f"{path}: expected a count line, an attribute-name line and one row per image; "
                             f"restore CelebA's list_attr_celeba.txt")
    names = lines[1].split()
    rows = [(number, line.split()) for number, line in enumerate(lines[2:], 3) if line.strip()]
    for number, fields in rows:
        if len(fields) != len(names) + 1:
            raise FairquantError(f"{path}: line {number}: {len(fields)} fields, expected an image name and "
                                 f"{len(names)} attribute values; fix the line")
    if len(rows) != int(lines[0]):
        raise FairquantError(f"{path}: line 1 says {lines[0].strip()} images but {len(rows)} rows follow; the file "
                             f"is truncated, or fix the count")
    files = [fields[0] for _, fields in rows]
    values = np.array([fields[1:] for _, fields in rows], dtype=str).reshape(len(rows), len(names))
    bad = np.argwhere(~np.isin(values, ("-1", "1")))
    if bad.size:
        row, column = bad[0]
        raise FairquantError(f"{path}: line {rows[row][0]}: attribute {names[column]} is {str(values[row, column])!r}, "
                             f"not -1 or 1 ({len(bad)} such values); CelebA marks each attribute -1 or 1: fix the "
                             f"value")
    first: dict[str, int] = {}
    for number, fields in rows:
        if first.setdefault(fields[0], number) != number:
            raise FairquantError(f"{path}: line {number}: image {fields[0]} is listed twice (first on line "
                                 f"{first[fields[0]]}); keep one row per image")
    return names, files, [number for number, _ in rows], values


def _celeba_partition(path: Path) -> dict[str, int]:
    """Image file name -> split index (0 train, 1 val, 2 test), every line checked."""
    partition: dict[str, int] = {}
    first: dict[str, int] = {}
    for number, line in enumerate(_text_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise FairquantError(f"{path}: line {number}: expected '<image> <split>' with split 0 (train), 1 (val) "
                                 f"or 2 (test), found {line.strip()[:60]!r}; fix the line")
        if fields[0] in first:
            raise FairquantError(f"{path}: line {number}: image {fields[0]} is listed twice (first on line "
                                 f"{first[fields[0]]}); keep one line per image")
        first[fields[0]], partition[fields[0]] = number, int(fields[1])
    if not partition:
        raise FairquantError(f"{path}: no partition line; restore CelebA's list_eval_partition.txt")
    return partition


# --- UTKFace ------------------------------------------------------------------------------------------

UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$", re.IGNORECASE)  # .JPG too (some copies)
UTK_GENDERS = ("Male", "Female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
AGE_BINS = [0, 20, 40, 60, 200]
AGE_LABELS = ["0-19", "20-39", "40-59", "60+"]


@reader("utkface")
def load_utkface(root: Path, params: DataParams) -> RawDataset:
    """UTKFace: ``[age]_[gender]_[race]_[date].jpg.chip.jpg`` (any case); gender 0 male / 1 female; race 0-4."""
    folder = root / "UTKFace" if (root / "UTKFace").is_dir() else _require(root, "UTKFace folder")
    base = real_root(root)
    require_inside(base, folder, str(folder), "the UTKFace folder")
    files = sorted(path for path in folder.iterdir() if path.name.lower().endswith(".jpg"))
    if not files:
        raise FairquantError(f"{folder}: no *.jpg.chip.jpg images; point data.root at the UTKFace folder")
    parsed, malformed, first_file = [], [], {}
    for path in files:
        resolved = require_inside(base, path, str(folder), f"image {path.name}")
        match = UTK_NAME.match(path.name)
        if match is None:
            malformed.append(path.name)
            continue
        first, first_is_link = first_file.setdefault(resolved, (path.name, path.is_symlink()))
        if first != path.name:  # a symlink to another image of the set
            link, other = (first, path.name) if first_is_link else (path.name, first)
            raise FairquantError(f"{folder}: {link} is the same file as {other} (a link); one image would be two "
                                 f"samples: remove the link")
        age, gender, race, _ = match.groups()
        parsed.append((resolved, path.name, int(age), UTK_GENDERS[int(gender)], UTK_RACES[int(race)]))
    if not parsed:
        raise FairquantError(f"{folder}: no file name matches age_gender_race_date.jpg.chip.jpg; keep UTKFace's "
                             f"original file names (they carry the labels)")
    frame = pd.DataFrame(parsed, columns=["path", "sample_id", "age", "gender", "race"])
    frame["age_group"] = pd.cut(frame["age"], AGE_BINS, right=False, labels=AGE_LABELS).astype(str)
    _refuse_degenerate_after_skipping(frame, params, malformed, folder)
    frame["split"] = _random_split(len(frame), params.val_share, 0.2, params.seed)
    table, classes = _assemble(frame, params, ["age", "age_group", "gender", "race"], {"gender": "Female"},
                               {"race": list(UTK_RACES), "gender": list(UTK_GENDERS), "age_group": AGE_LABELS})
    return RawDataset(table, paths=list(frame["path"]), skipped={"malformed_names": len(malformed)},
                      classes=classes)


def _refuse_degenerate_after_skipping(frame: pd.DataFrame, params: DataParams, malformed: list[str],
                                      folder: Path) -> None:
    """When names that do not parse were skipped and what is left has one value of a used attribute, the cause is
    the names, not the attribute: say so (how many, the first) rather than 'a single value'."""
    if not malformed:
        return
    for name in dict.fromkeys([params.target, *params.protected]):
        if name in frame and frame[name].nunique() < 2:
            raise FairquantError(
                f"{folder}: {len(malformed)} of {len(malformed) + len(frame)} files skipped, their names do not parse "
                f"as age_gender_race_date.jpg.chip.jpg (first: {malformed[0]}), and the {len(frame)} left all have "
                f"{name} {frame[name].iloc[0]!r}; restore UTKFace's original file names")


# --- FairFace -----------------------------------------------------------------------------------------

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


def load_dataset(params: DataParams) -> RawDataset:
    """Read the dataset named by ``data.source`` at ``data.root``."""
    if params.source not in READERS:
        raise FairquantError(f"data.source {params.source!r} has no reader; known sources: {', '.join(READERS)}")
    root = Path(params.root)
    if not root.exists():
        raise FairquantError(f"{root}: dataset root not found; set data.root in params.yaml "
                             f"(the default 'data/raw/synthetic' is written by the generate stage)")
    return READERS[params.source](root, params)


# Readers in their own modules register on import; importing them here fills READERS wherever load_dataset is used.
from fairquant.data import folder as _folder_reader  # noqa: F401  (data.source: folder)
from fairquant.data.class_datasets import (  # noqa: F401  (mnist, fashion_mnist, cifar10, cifar100)
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    MNIST_CLASSES,
    _read_cifar_batch,
)
