"""Prepare the verification data: the training identity folders, RFW's test pairs (aligned) and the synthetic
calibration faces decoded into memory-mapped image stores, with their tables, the calibration sets and
``info.json`` (read back by :func:`fairquant.data.verification.load_verification`).

The layouts are read by :mod:`fairquant.data.identity_folders` (training) and :mod:`fairquant.data.rfw`
(testing), the faces cropped and decoded by :mod:`fairquant.data.alignment`; the embedded default is written
in those same layouts by :mod:`fairquant.data.synthetic_verification`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.alignment import CANONICAL_EYES, CENTRE_CROP_SHARE, write_face_store
from fairquant.data.identity_folders import (
    IMAGE_SUFFIXES,
    TRAIN_SCHEMA,
    UNKNOWN_RACE,
    read_identity_folders,
    require_folder,
)
from fairquant.data.paths import real_root, require_inside
from fairquant.data.recordio import read_race_map, read_recordio, write_recordio_store
from fairquant.data.rfw import PAIRS_SCHEMA, TEST_SCHEMA, RFWTest, read_rfw
from fairquant.errors import FairquantError
from fairquant.io import atomic_dir, read_images, read_rows, write_images, write_json, write_table
from fairquant.params import VerifyDataParams


def balanced_quotas(available: dict[str, int], size: int, rng: np.random.Generator) -> dict[str, int]:
    """Images per race, as equal as ``available`` allows: a race short of its share gives the rest to the others;
    the remainder of an uneven split goes to races drawn at random."""
    quotas = {race: 0 for race in available}
    open_races = sorted(race for race, n in available.items() if n > 0)
    remaining = min(size, sum(available.values()))
    while remaining and open_races:
        share = remaining // len(open_races)
        if share == 0:
            for race in rng.choice(open_races, remaining, replace=False):
                quotas[str(race)] += 1
            break
        for race in open_races:
            take = min(share, available[race] - quotas[race])
            quotas[race] += take
            remaining -= take
        open_races = [race for race in open_races if quotas[race] < available[race]]
    return quotas


def _per_race(races: pd.Series) -> dict[str, int]:
    return {str(race): int(n) for race, n in races.value_counts().sort_index().items()}


def _write_set(folder: Path, name: str, images: np.ndarray, info: dict, cells: np.ndarray | None = None) -> dict:
    """One calibration set in the format :func:`fairquant.compress.calibration.load_set` reads."""
    folder.mkdir(parents=True)
    write_images(folder / "images.npy", images)
    if cells is not None:  # load_set then draws subsets equally per race
        np.save(folder / "cells.npy", cells)
    info = {"set": name, "size": len(images), **info}
    write_json(folder / "info.json", info)
    return info


def _calibration_sets(folder: Path, data: VerifyDataParams, train: pd.DataFrame, train_store: Path,
                      faces: list[Path]) -> dict:
    if data.calibration_size > len(train):
        raise FairquantError(f"verify.data.calibration_size={data.calibration_size} is larger than the training set "
                             f"({len(train)} images); lower it")
    store = read_images(train_store)
    rng = np.random.default_rng(data.seed)
    rows = np.sort(rng.choice(len(train), data.calibration_size, replace=False))
    sets = {"train": _write_set(folder / "train", "train", read_rows(store, rows), {
        "source": "random training images", "seed": data.seed, "per_race": _per_race(train["race"].iloc[rows])})}
    if (train["race"] == UNKNOWN_RACE).any():
        sets["balanced"] = {"set": "balanced", "skipped": "training races are unknown (identity folders without race "
                                                          "folders), so no race-balanced set can be drawn"}
    else:
        quotas = balanced_quotas(_per_race(train["race"]), data.calibration_size, rng)
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(train["race"] == race), k, replace=False)
                                       for race, k in quotas.items()]))
        sets["balanced"] = _write_set(folder / "balanced", "balanced", read_rows(store, rows), {
            "source": "training images, as equally per race as the training set allows", "seed": data.seed,
            "per_race": _per_race(train["race"].iloc[rows])}, cells=train["race"].to_numpy(str)[rows])
    del store
    (folder / "synthetic").mkdir(parents=True)
    skipped = write_face_store(folder / "synthetic" / "images.npy", [(str(p), "plain", None) for p in faces],
                               data.image_size, data.workers, skip_unreadable=True)
    if len(skipped) == len(faces):
        raise FairquantError(f"none of the {len(faces)} image files in {data.synthetic_folder} could be decoded "
                             f"(first: {skipped[0]}); replace them")
    sets["synthetic"] = {"set": "synthetic", "size": len(faces) - len(skipped), "folder": data.synthetic_folder,
                         "files": len(faces), "skipped_unreadable": len(skipped), "skipped_first": skipped[:5]}
    write_json(folder / "synthetic" / "info.json", sets["synthetic"])
    return sets


def synthetic_faces(folder: str | Path) -> list[Path]:
    """Every jpg/jpeg/png under ``folder`` (sorted): the synthetic calibration set, unlabelled."""
    folder = require_folder(folder, "verify.data.synthetic_folder", "face images (for example StyleGAN samples)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    base = real_root(folder)
    for path in files:
        require_inside(base, path, str(folder), f"face {path.relative_to(folder)}")
    if not files:
        raise FairquantError(f"synthetic calibration folder {folder} has no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} "
                             f"files; put the faces there or set verify.data.synthetic_folder")
    return files


def _is_synthetic(root: Path) -> bool:
    """A SYNTHETIC.txt marker in the root or its parent (the raw root that holds race_per_7000/ and rfw/)."""
    return (root / "SYNTHETIC.txt").is_file() or (root.parent / "SYNTHETIC.txt").is_file()


def _test_counts(test: RFWTest) -> tuple[dict, dict, list[str]]:
    images, pairs = test.images, test.pairs
    alignment = {race: {kind: int((part["alignment"] == kind).sum()) for kind in ("landmarks", "centre-crop")}
                 for race, part in images.groupby("race", sort=False)}
    pair_counts = {race: {"pairs": len(part), "genuine": int(part["genuine"].sum()),
                          "impostor": int((~part["genuine"]).sum()), "folds": int(part["fold"].nunique())}
                   for race, part in pairs.groupby("race", sort=False)}
    summary = []
    for race, kinds in alignment.items():
        lmk = test.landmark_files.get(race)
        how = (f"{kinds['landmarks']} aligned by landmarks ({lmk})" if kinds["landmarks"] else "")
        if kinds["centre-crop"]:
            reason = "no landmarks file" if lmk is None else "not in the landmarks file"
            how += ("; " if how else "") + f"{kinds['centre-crop']} centre-cropped ({reason})"
        summary.append(f"{race} test images: {how}")
    return alignment, pair_counts, summary


def _require_apart(synthetic: Path, roots: dict[str, Path]) -> None:
    """The synthetic calibration folder may neither lie inside a dataset root nor contain one: its images would be
    training or test faces (calibrating on test images would leak the test set)."""
    mine = synthetic.resolve()
    for key, root in roots.items():
        other = root.resolve()
        if mine == other or mine.is_relative_to(other) or other.is_relative_to(mine):
            raise FairquantError(f"verify.data.synthetic_folder {synthetic} overlaps {key} {root}; point it at a "
                                 f"folder of faces that holds no training or test images")


def read_training_set(data: VerifyDataParams) -> tuple[pd.DataFrame, dict]:
    """The training table and counts, from identity folders or a RecordIO set (verify.data.train_layout)."""
    options = {"races": data.races, "seed": data.seed, "min_images_per_identity": data.min_images_per_identity,
               "max_identities": data.max_train_identities}
    if data.train_layout == "recordio":
        race_map = None if data.train_race_map is None else read_race_map(data.train_race_map, list(data.races),
                                                                             root=data.train_root)
        return read_recordio(data.train_root, race_map=race_map, **options)
    return read_identity_folders(data.train_root, **options)


def prepare_verification(data: VerifyDataParams, out: str | Path) -> dict:
    """Read the training identity folders, RFW's test pairs and the synthetic faces; write into ``out``
    (atomically: a failure leaves the previous ``out``, or none) the image stores, tables, calibration sets and
    ``info.json``. Returns the info."""
    train_root, rfw_root = Path(data.train_root), Path(data.rfw_root)
    _require_apart(Path(data.synthetic_folder), {"verify.data.train_root": train_root, "verify.data.rfw_root": rfw_root})
    train, train_info = read_training_set(data)
    test = read_rfw(rfw_root, data.races)
    faces = synthetic_faces(data.synthetic_folder)
    size, workers = data.image_size, data.workers
    with atomic_dir(out) as tmp:
        if data.train_layout == "recordio":
            write_recordio_store(tmp / "train_images.npy", train_root, train, size, workers)
        else:
            write_face_store(tmp / "train_images.npy", [(str(train_root / p), "plain", None) for p in train["path"]],
                             size, workers)
        write_table(tmp / "train.parquet", train, TRAIN_SCHEMA)
        write_face_store(tmp / "test_images.npy", [(str(rfw_root / p), mode, eyes) for p, mode, eyes in
                                                   zip(test.images["path"], test.images["alignment"], test.eyes)],
                         size, workers)
        write_table(tmp / "test.parquet", test.images, TEST_SCHEMA)
        write_table(tmp / "pairs.parquet", test.pairs, PAIRS_SCHEMA)
        calibration = _calibration_sets(tmp / "calibration", data, train, tmp / "train_images.npy", faces)
        alignment, pair_counts, summary = _test_counts(test)
        overlap = sorted(set(train["identity_name"]) & set(test.images["identity_name"]))
        if data.source == "real" and _is_synthetic(Path(data.synthetic_folder)):
            summary.append(f"note: the synthetic calibration folder {data.synthetic_folder} is fairquant's generated "
                           f"default (drawn faces), not StyleGAN faces; point verify.data.synthetic_folder at yours")
        if overlap:
            summary.append(f"note: {len(overlap)} identities share a folder name between training and test (e.g. "
                           f"{', '.join(overlap[:3])}); an MS1MV2-trained model has seen RFW's identities")
        if calibration["balanced"].get("skipped"):
            summary.append(f"balanced calibration set skipped: {calibration['balanced']['skipped']}")
        info = {
            "synthetic": _is_synthetic(train_root) or _is_synthetic(rfw_root),
            "synthetic_sources": {"train": _is_synthetic(train_root), "test": _is_synthetic(rfw_root),
                                  "calibration_folder_generated": _is_synthetic(Path(data.synthetic_folder))},
            "source": data.source, "image_size": size, "races": list(data.races),
            "sources": {"train_root": str(train_root), "train_layout": data.train_layout,
                        "train_race_map": data.train_race_map, "rfw_root": str(rfw_root),
                        "synthetic_folder": data.synthetic_folder, "landmark_files": test.landmark_files},
            "train": train_info,
            "test": {"images": len(test.images), "per_race": _per_race(test.images["race"]), "alignment": alignment,
                     "canonical_eyes": CANONICAL_EYES, "centre_crop_share": CENTRE_CROP_SHARE},
            "pairs": pair_counts,
            "train_test_identity_overlap": {"identities": len(overlap), "first": overlap[:5]},
            "calibration": {name: {k: v for k, v in set_info.items() if k != "skipped_first"}
                            for name, set_info in calibration.items()},
            "summary": summary,
        }
        write_json(tmp / "info.json", info)
    return info
