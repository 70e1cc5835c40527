"""CelebA's layout (and the generated default, written in the same layout): the aligned images, the attribute
list and the partition file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.loaders import (SPLITS, RawDataset, _assemble, _check_attribute, _inside, _present, _require,
                                    reader)
from fairquant.data.paths import named_path, real_root
from fairquant.errors import FairquantError
from fairquant.params import DataParams


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
