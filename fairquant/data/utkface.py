"""UTKFace's layout: every label in the file name, ``[age]_[gender]_[race]_[date].jpg.chip.jpg``."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fairquant.data.loaders import RawDataset, _assemble, _random_split, _require, reader
from fairquant.data.paths import real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.params import DataParams

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
