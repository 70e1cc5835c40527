"""Training identity folders: BUPT-Balancedface / Globalface (``<root>/<Race>/<identity>/*.jpg``) or plain
``<root>/<identity>/*.jpg`` (race unknown). Images are taken as aligned crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fairquant.data.paths import real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.params import RACES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UNKNOWN_RACE = "unknown"

# The table read_identity_folders returns, as the prepared folder stores it (train.parquet)
TRAIN_SCHEMA = pa.schema([
    pa.field("row", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("identity", pa.int64(), nullable=False),
    pa.field("identity_name", pa.string(), nullable=False),
    pa.field("race", pa.string(), nullable=False),
])



def cap_identities(kept: np.ndarray, max_identities: int | None, seed: int) -> tuple[np.ndarray, int]:
    """At most ``max_identities`` of ``kept``, drawn with ``seed`` and sorted; and how many were dropped."""
    if max_identities is None or kept.size <= max_identities:
        return kept, 0
    return np.sort(np.random.default_rng(seed).choice(kept, max_identities, replace=False)), kept.size - max_identities

def require_folder(path: str | Path, key: str, expected: str) -> Path:
    """``path`` as a Path when it is a folder, else an error naming the params ``key`` to set."""
    path = Path(path)
    if not path.is_dir():
        raise FairquantError(f"{path} does not exist; set {key} to the folder that holds {expected}")
    return path


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path, base: Path, seen: dict[Path, tuple[str, bool]]) -> list[str]:
    """The image files of an identity folder (``folder`` and any linked file checked to lie inside ``base``); a
    file reached twice (a link to another image of the set, ``seen`` so far) is refused: it would be two samples."""
    resolved_folder = require_inside(base, folder, str(folder), "identity folder")
    names = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
            resolved = (require_inside(base, entry.path, str(folder), f"image {entry.name}") if entry.is_symlink()
                        else resolved_folder / entry.name)
            first, first_is_link = seen.setdefault(resolved, (entry.path, entry.is_symlink()))
            if first != entry.path:
                link, other = (first, entry.path) if first_is_link else (entry.path, first)
                raise FairquantError(f"{link}: a link to {other}, an image already in the set; one image would be two "
                                     f"samples: remove the link")
            names.append(entry.name)
    return names


def _training_layout(root: Path, races: list[str]) -> tuple[str, list[tuple[str, Path]]]:
    """'race folders' with the requested races that are present, or 'identity folders' with race unknown."""
    subfolders = _subfolders(root)
    if not subfolders:
        raise FairquantError(f"training root {root} has no identity folders; expected <root>/<Race>/<identity>/*.jpg "
                             f"(BUPT) or <root>/<identity>/*.jpg; set verify.data.train_root")
    race_named = [name for name in subfolders if name in RACES]
    if race_named and len(race_named) < len(subfolders):
        others = [name for name in subfolders if name not in RACES]
        raise FairquantError(f"training root {root} mixes race folders ({', '.join(race_named)}) with other "
                             f"folders ({', '.join(others[:3])}); use one layout: <root>/<Race>/<identity>/ or "
                             f"<root>/<identity>/")
    if race_named:
        return "race folders", [(race, root / race) for race in races if race in race_named]
    return "identity folders", [(UNKNOWN_RACE, root)]


def read_identity_folders(root: str | Path, *, races: list[str] | tuple[str, ...] = RACES,
                          min_images_per_identity: int = 1, max_identities: int | None = None,
                          seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The training images (path relative to ``root``, identity label 0..K-1 in name order, identity_name, race)
    and counts. Race is the race folder's name, or 'unknown' for plain identity folders (then ``races`` cannot
    filter). Identities with fewer than ``min_images_per_identity`` images are dropped; ``max_identities`` keeps
    a seeded draw. An identity named under two race folders is one identity (one label)."""
    root = require_folder(root, "verify.data.train_root", "the training identity folders")
    layout, sources = _training_layout(root, list(races))
    base = real_root(root)
    records, seen = [], {}
    for race, folder in sources:
        require_inside(base, folder, str(folder), "race folder")
        records += [((folder / identity / name).relative_to(root).as_posix(), identity, race)
                    for identity in _subfolders(folder) for name in _image_files(folder / identity, base, seen)]
    table = pd.DataFrame(records, columns=["path", "identity_name", "race"])
    if table.empty:
        raise FairquantError(f"training root {root} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in its "
                             f"identity folders (layout: {layout}, races {', '.join(r for r, _ in sources) or 'none'});"
                             f" set verify.data.train_root or verify.data.races")
    counts = table.groupby("identity_name").size()
    kept = counts.index[counts >= min_images_per_identity].to_numpy()
    if kept.size == 0:
        raise FairquantError(f"no training identity in {root} has {min_images_per_identity} images or more (the "
                             f"most is {counts.max()}); lower verify.data.min_images_per_identity")
    kept, capped = cap_identities(kept, max_identities, seed)
    table = table[table["identity_name"].isin(kept)].reset_index(drop=True)
    labels = {name: label for label, name in enumerate(sorted(kept))}
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    table.insert(2, "identity", table["identity_name"].map(labels).astype(np.int64))
    per_race = {race: {"identities": int(part["identity_name"].nunique()), "images": len(part)}
                for race, part in table.groupby("race")}
    info = {"root": str(root), "layout": layout, "images": len(table), "identities": len(labels),
            "per_race": per_race, "dropped_identities_few_images": int((counts < min_images_per_identity).sum()),
            "dropped_identities_over_cap": capped,
            "identities_under_several_races": int((table.groupby("identity_name")["race"].nunique() > 1).sum()),
            "races_filter": "applied" if layout == "race folders" else "not applied: race unknown"}
    return table, info

