"""RFW's test set as it lies on disk: ``test/txts/<Race>/<Race>_pairs.txt`` (and ``<Race>_lmk.txt``) over the
identity folders ``test/data/<Race>/<identity>/``.

The reader never converts what the user gives: it reads ``test/data`` and ``test/txts`` where they lie, and
fails with a :class:`FairquantError` that names the file (and line) and the fix. Line numbers in messages count
from 1, as editors do; the ``line`` column of ``pairs.parquet`` counts from 0, as the protocol's fold arithmetic
does.

``<Race>_pairs.txt``: tab-separated, no header; genuine ``id n1 n2``, impostor ``id1 n1 id2 n2`` (same race);
``n`` is the integer suffix of ``<id>_000N.jpg`` (matched as an integer: RFW's own examples disagree on the
zero padding). The file is 10 contiguous folds, ``fold = line // (lines / 10)``: 6000 lines in RFW.

``<Race>_lmk.txt`` (optional, beside the pairs file): one line per image, tab-separated: the image's path
rooted at the dataset (``/test/data/<Race>/<id>/<id>_000N.jpg``), the identity's integer label, then five
(x, y) points in the loose image's pixels: the eyes (left then right in the image), the nose tip and the mouth
corners. Confirmed in bioidiap/bob.bio.face (``bob/bio/face/database/rfw.py`` reads the eyes from fields 2-5 of
a tab-split line) and in public RFW evaluation scripts that key the file by ``/test/data/{race}/{id}/{id}_{n:04}.jpg``
and read the 10 coordinates from field 2 on. This reader splits on any whitespace, matches an image on the
trailing ``<Race>/<id>/<file>`` of the path, takes the last 10 numbers, and maps whichever eye has the smaller x
to the left canonical position (:mod:`fairquant.data.alignment` does the aligning).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fairquant.data.identity_folders import require_folder
from fairquant.data.paths import real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.params import RACES

FOLDS = 10
_NUMBERED = re.compile(r"^(?P<stem>.+)_(?P<number>\d+)\.(?:jpe?g|png)$", re.IGNORECASE)

# The tables read_rfw returns, as the prepared folder stores them (test.parquet, pairs.parquet)
TEST_SCHEMA = pa.schema([
    pa.field("row", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("race", pa.string(), nullable=False),
    pa.field("identity_name", pa.string(), nullable=False),
    pa.field("alignment", pa.string(), nullable=False),
])
PAIRS_SCHEMA = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("race", pa.string(), nullable=False),
    pa.field("fold", pa.int64(), nullable=False),
    pa.field("genuine", pa.bool_(), nullable=False),
    pa.field("row1", pa.int64(), nullable=False),
    pa.field("row2", pa.int64(), nullable=False),
    pa.field("line", pa.int64(), nullable=False),
])


@dataclass(frozen=True)
class PairLine:
    """One line of a pairs file, parsed; ``line`` counts from 0."""

    line: int
    identity1: str
    number1: int
    identity2: str
    number2: int

    @property
    def genuine(self) -> bool:
        return self.identity1 == self.identity2


@dataclass
class RFWTest:
    """The test images the pairs name (``images``: the ``test.parquet`` columns), the two eye points of each
    image aligned by landmarks (``eyes``, None for a centre crop), the pairs (the ``pairs.parquet`` columns) and
    each race's landmarks file (None where there is none)."""

    root: Path
    images: pd.DataFrame
    eyes: list
    pairs: pd.DataFrame
    landmark_files: dict[str, str | None]


def _lines(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise FairquantError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); restore RFW's "
                             f"file") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _plain_name(name: str, where: str, data_dir: Path) -> str:
    if "/" in name or "\\" in name or name in (".", "..") or not name:
        raise FairquantError(f"{where}: identity '{name}' is not a plain folder name and would leave {data_dir}; "
                             f"name one folder of test/data/<Race>/ in the pairs file")
    return name


def _image_number(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise FairquantError(f"{where}: image number '{text}' is not a non-negative integer; a pairs file names an "
                             f"image by the integer suffix of <identity>_000N.jpg")
    return int(text)


def _parse_pair_line(raw: str, index: int, path: Path) -> PairLine:
    where = f"{path}:{index + 1}"
    data_dir = path.parents[2] / "data" / path.parent.name
    fields = raw.split()
    if len(fields) == 3:
        identity, n1, n2 = fields
        name = _plain_name(identity, where, data_dir)
        return PairLine(index, name, _image_number(n1, where), name, _image_number(n2, where))
    if len(fields) == 4:
        id1, n1, id2, n2 = fields
        pair = PairLine(index, _plain_name(id1, where, data_dir), _image_number(n1, where),
                        _plain_name(id2, where, data_dir), _image_number(n2, where))
        if pair.genuine:
            raise FairquantError(f"{where}: impostor line names identity '{id1}' twice; a 4-field line pairs two "
                                 f"different identities (a genuine pair has 3 fields: identity, image, image)")
        return pair
    raise FairquantError(f"{where}: expected 3 tab-separated fields (genuine: identity, image, image) or 4 "
                         f"(impostor: identity, image, identity, image), found {len(fields)}: {raw!r}; fix the line")


def _check_folds(pairs: list[PairLine], path: Path) -> int:
    """The number of lines per fold; every fold must hold genuine and impostor pairs."""
    n = len(pairs)
    if n < FOLDS:
        raise FairquantError(f"{path}: {n} pairs lines make fewer than {FOLDS} folds; the protocol needs {FOLDS} "
                             f"folds of genuine then impostor pairs (RFW: 6000 lines)")
    if n % FOLDS:
        raise FairquantError(f"{path}: {n} lines do not split into {FOLDS} equal folds (fold = line // (lines / "
                             f"{FOLDS})); the file needs a multiple of {FOLDS} lines")
    size = n // FOLDS
    for fold in range(FOLDS):
        kinds = [p.genuine for p in pairs[fold * size:(fold + 1) * size]]
        if len(set(kinds)) < 2:
            missing = "impostor" if True in kinds else "genuine"
            raise FairquantError(f"{path}: fold {fold} (lines {fold * size + 1}-{(fold + 1) * size}) has no {missing} "
                                 f"pairs; every fold needs both (RFW: 300 genuine then 300 impostor)")
        # RFW's structure: each fold is a block of genuine lines, then a block of as many impostor lines. A file
        # missing a fold (or with its folds cut elsewhere) splits into blocks that straddle the real folds.
        if kinds != [True] * (size // 2) + [False] * (size - size // 2):
            raise FairquantError(f"{path}: fold {fold} (lines {fold * size + 1}-{(fold + 1) * size}) is not "
                                 f"{size // 2} genuine lines then {size - size // 2} impostor lines; the file needs "
                                 f"{FOLDS} folds, each a block of genuine then impostor pairs (a missing or cut fold?)")
    return size


def read_pairs_file(path: str | Path) -> list[PairLine]:
    """Parse ``<Race>_pairs.txt``: field counts, image numbers, plain identity names, no self-pairs, no duplicate
    pairs, and 10 folds that each hold both kinds."""
    path = Path(path)
    pairs = [_parse_pair_line(raw, i, path) for i, raw in enumerate(_lines(path))]
    seen: dict[tuple, int] = {}
    for pair in pairs:
        a, b = (pair.identity1, pair.number1), (pair.identity2, pair.number2)
        if a == b:
            raise FairquantError(f"{path}:{pair.line + 1}: pairs image {a[1]} of '{a[0]}' with itself; fix the line")
        key = (min(a, b), max(a, b))
        if key in seen:
            raise FairquantError(f"{path}: lines {seen[key] + 1} and {pair.line + 1} are the same pair of images; "
                                 f"remove one (each pair may appear once per race)")
        seen[key] = pair.line
    _check_folds(pairs, path)
    return pairs


def _landmark_image(text: str, race: str, where: str) -> tuple[str, int]:
    """(identity, image number) of a landmarks path; refuses paths that leave the dataset root."""
    rooted = text.startswith("/")  # RFW roots its paths at the dataset: /test/data/<Race>/...
    parts = text[1:].split("/") if rooted else text.split("/")
    prefix, tail = parts[:-3], parts[-3:]
    allowed = [["test", "data"]] if rooted else [["test", "data"], ["data"], []]
    if len(parts) < 3 or prefix not in allowed or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise FairquantError(f"{where}: image path {text!r} is not inside the dataset; expected "
                             f"/test/data/{race}/<identity>/<file> (paths that leave the RFW root are refused)")
    folder_race, identity, filename = tail
    if folder_race != race:
        raise FairquantError(f"{where}: image path {text!r} is in race folder '{folder_race}', not {race}; "
                             f"each race's landmarks file lists its own images")
    match = _NUMBERED.fullmatch(filename)
    if match is None:
        raise FairquantError(f"{where}: file name '{filename}' does not end in _<number>.jpg; fix the path")
    return identity, int(match["number"])


def read_landmarks(path: str | Path, race: str) -> dict[tuple[str, int], np.ndarray]:
    """``(identity, image number) -> (5, 2)`` points from ``<Race>_lmk.txt`` (format in the module docstring)."""
    path = Path(path)
    points: dict[tuple[str, int], np.ndarray] = {}
    lines_of: dict[tuple[str, int], int] = {}
    for index, raw in enumerate(_lines(path)):
        where = f"{path}:{index + 1}"
        fields = raw.split()
        if len(fields) not in (11, 12):
            raise FairquantError(f"{where}: expected an image path then 10 numbers (5 points x, y), the identity's "
                                 f"label between them or not: 12 or 11 fields, found {len(fields)}; fix the line")
        key = _landmark_image(fields[0], race, where)
        try:
            xy = np.array([float(v) for v in fields[-10:]]).reshape(5, 2)
        except ValueError:
            raise FairquantError(f"{where}: the last 10 fields must be numbers (5 points x, y), found "
                                 f"{fields[-10:]}; fix the line") from None
        if not np.isfinite(xy).all() or np.hypot(*(xy[1] - xy[0])) < 1:
            raise FairquantError(f"{where}: the eye points {xy[:2].tolist()} are not two distinct points; fix the "
                                 f"line or delete the file to centre-crop instead")
        if key in points:
            raise FairquantError(f"{path}: lines {lines_of[key] + 1} and {index + 1} both give landmarks for image "
                                 f"{key[1]} of '{key[0]}'; keep one")
        points[key], lines_of[key] = xy, index
    return points


class _ImageIndex:
    """Resolves (identity, image number) against the listings of a race's identity folders."""

    def __init__(self, data_dir: Path, base: Path) -> None:
        self.data_dir, self.base = data_dir, base  # base: the resolved RFW root every image must lie in
        self._listings: dict[str, dict[int, str]] = {}

    def _listing(self, identity: str, where: str) -> dict[int, str]:
        if identity not in self._listings:
            folder = self.data_dir / identity
            if not folder.is_dir():
                raise FairquantError(f"{where}: identity folder {folder} does not exist; fix the pairs file or "
                                     f"restore the folder")
            require_inside(self.base, folder, where, f"identity folder {folder}")
            listing: dict[int, str] = {}
            for name in sorted(os.listdir(folder)):
                match = _NUMBERED.fullmatch(name)
                if match is None:
                    continue
                number = int(match["number"])
                if number in listing:
                    raise FairquantError(f"{folder}: files {listing[number]} and {name} both have image number "
                                         f"{number}; keep one")
                listing[number] = name
            self._listings[identity] = listing
        return self._listings[identity]

    def resolve(self, identity: str, number: int, where: str) -> Path:
        listing = self._listing(identity, where)
        if number not in listing:
            raise FairquantError(f"{where}: image {number} of '{identity}' is not in {self.data_dir / identity} "
                                 f"(no {identity}_{number:04d}.jpg, with any zero padding); fix the pairs file or "
                                 f"restore the image")
        path = self.data_dir / identity / listing[number]
        require_inside(self.base, path, where, f"image {path.name}")
        return path


def _race_files(root: Path, race: str) -> tuple[Path, Path]:
    data_dir, pairs_file = root / "test" / "data" / race, root / "test" / "txts" / race / f"{race}_pairs.txt"
    if pairs_file.is_file() and data_dir.is_dir():
        return data_dir, pairs_file
    if data_dir.is_dir():
        raise FairquantError(f"{data_dir} holds {race} test images but {pairs_file} is missing; restore it from RFW "
                             f"or remove {race} from verify.data.races")
    if pairs_file.is_file():
        raise FairquantError(f"{pairs_file} exists but its image folder {data_dir} does not; restore the images")
    raise FairquantError(f"race {race} is listed in verify.data.races but {root} has neither {data_dir} nor "
                         f"{pairs_file}; remove it from verify.data.races or add its RFW files")


class _TestImages:
    """Test images in order of first use: (race, identity, number) -> row, with path, alignment and eyes."""

    def __init__(self, root: Path) -> None:
        self.root, self.rows, self.records, self.eyes = root, {}, [], []

    def row(self, race: str, identity: str, number: int, index: _ImageIndex, points: dict, where: str) -> int:
        key = (race, identity, number)
        if key not in self.rows:
            path = index.resolve(identity, number, where)
            xy = points.get((identity, number))
            self.rows[key] = len(self.records)
            self.records.append((self.rows[key], path.relative_to(self.root).as_posix(), race, identity,
                                 "centre-crop" if xy is None else "landmarks"))
            self.eyes.append(None if xy is None else tuple(map(tuple, xy[:2].tolist())))
        return self.rows[key]


def _read_race(root: Path, race: str, images: _TestImages) -> tuple[list[tuple], str | None]:
    """One race's pairs as ``pairs.parquet`` records (its images added to ``images``) and its landmarks file."""
    data_dir, pairs_file = _race_files(root, race)
    lmk_file = pairs_file.with_name(f"{race}_lmk.txt")
    base = real_root(root)
    for path in (pairs_file, lmk_file) if lmk_file.is_file() else (pairs_file,):
        require_inside(base, path, str(path), f"{path.name}")
    points = read_landmarks(lmk_file, race) if lmk_file.is_file() else {}
    index = _ImageIndex(data_dir, base)
    pairs = read_pairs_file(pairs_file)
    per_fold = len(pairs) // FOLDS
    records = []
    for pair in pairs:
        where = f"{pairs_file}:{pair.line + 1}"
        row1 = images.row(race, pair.identity1, pair.number1, index, points, where)
        row2 = images.row(race, pair.identity2, pair.number2, index, points, where)
        records.append((f"{race}-{pair.line:04d}", race, pair.line // per_fold, pair.genuine, row1, row2, pair.line))
    return records, lmk_file.relative_to(root).as_posix() if lmk_file.is_file() else None


def read_rfw(rfw_root: str | Path, races: list[str] | tuple[str, ...] = RACES) -> RFWTest:
    """Every test image the pairs of ``races`` name, each once (rows in order of first use), and the pairs as
    rows of those images."""
    root = require_folder(rfw_root, "verify.data.rfw_root", "RFW's test/data and test/txts")
    require_folder(root / "test" / "data", "verify.data.rfw_root", "RFW's test/data and test/txts")
    images, pairs, landmark_files = _TestImages(root), [], {}
    for race in races:
        records, landmark_files[race] = _read_race(root, race, images)
        pairs += records
    return RFWTest(root=root, images=pd.DataFrame(images.records, columns=TEST_SCHEMA.names), eyes=images.eyes,
                   pairs=pd.DataFrame(pairs, columns=PAIRS_SCHEMA.names), landmark_files=landmark_files)

