"""Face verification data: readers of RFW and of identity-folder training sets, the prepared verification data,
and the embedded default (SYNTHETIC identities written in the BUPT and RFW layouts).

The readers never convert what the user gives: they read RFW's ``test/data`` and ``test/txts`` and the
identity folders where they lie, and fail with a :class:`FairquantError` that names the file (and line) and
the fix. Line numbers in messages count from 1, as editors do; the ``line`` column of ``pairs.parquet`` counts
from 0, as the protocol's fold arithmetic does.

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
to the left canonical position.

Test images are aligned once, here: with landmarks, by the similarity transform that puts the two eyes where
insightface's 112 x 112 template puts them (:data:`CANONICAL_EYES`, the geometry of MS1MV2's aligned crops);
without, by a central square crop of :data:`CENTRE_CROP_SHARE` of the loose image. Training and synthetic
images are taken as aligned crops (central square, resized).
"""

from __future__ import annotations

import math
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from fairquant.errors import FairquantError
from fairquant.io import atomic_dir, image_store_writer, read_images, read_rows, write_images, write_json, write_table
from fairquant.params import RACES, VerifyDataParams

FOLDS = 10
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# insightface's 112 x 112 ArcFace template, eyes only, as shares of the crop
CANONICAL_EYES = ((38.2946 / 112, 51.6963 / 112), (73.5318 / 112, 51.5014 / 112))
CENTRE_CROP_SHARE = 0.7
UNKNOWN_RACE = "unknown"
CHUNK = 256  # images per decoding or rendering task
_NUMBERED = re.compile(r"^(?P<stem>.+)_(?P<number>\d+)\.(?:jpe?g|png)$", re.IGNORECASE)

TRAIN_SCHEMA = pa.schema([
    pa.field("row", pa.int64(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("identity", pa.int64(), nullable=False),
    pa.field("identity_name", pa.string(), nullable=False),
    pa.field("race", pa.string(), nullable=False),
])
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


# ---------------------------------------------------------------------------------------------------------------
# RFW: pairs, landmarks, image resolution


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
    lines = path.read_text().splitlines()
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
        if len(fields) < 11:
            raise FairquantError(f"{where}: expected an image path then 10 numbers (5 points x, y), found "
                                 f"{len(fields)} fields; fix the line")
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

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._listings: dict[str, dict[int, str]] = {}

    def _listing(self, identity: str, where: str) -> dict[int, str]:
        if identity not in self._listings:
            folder = self.data_dir / identity
            if not folder.is_dir():
                raise FairquantError(f"{where}: identity folder {folder} does not exist; fix the pairs file or "
                                     f"restore the folder")
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
        return self.data_dir / identity / listing[number]


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


def require_folder(path: str | Path, key: str, expected: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FairquantError(f"{path} does not exist; set {key} to the folder that holds {expected}")
    return path


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
    points = read_landmarks(lmk_file, race) if lmk_file.is_file() else {}
    index = _ImageIndex(data_dir)
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


# ---------------------------------------------------------------------------------------------------------------
# Training identity folders: BUPT-Balancedface / Globalface (<root>/<Race>/<identity>/) or <root>/<identity>/


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))


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
    records = [((folder / identity / name).relative_to(root).as_posix(), identity, race)
               for race, folder in sources for identity in _subfolders(folder)
               for name in _image_files(folder / identity)]
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
    capped = 0
    if max_identities is not None and kept.size > max_identities:
        capped = kept.size - max_identities
        kept = np.sort(np.random.default_rng(seed).choice(kept, max_identities, replace=False))
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


# ---------------------------------------------------------------------------------------------------------------
# Decoding and alignment


def _similarity_to(size: int, eyes: tuple) -> tuple[float, ...]:
    """PIL AFFINE data (output pixel -> input pixel) of the similarity that puts ``eyes`` at CANONICAL_EYES."""
    (x1, y1), (x2, y2) = sorted(eyes)
    source1, source2 = complex(x1, y1), complex(x2, y2)
    target1, target2 = (complex(x * size, y * size) for x, y in CANONICAL_EYES)
    a = (source2 - source1) / (target2 - target1)
    b = source1 - a * target1
    return a.real, -a.imag, b.real, a.imag, a.real, b.imag


def _centre_square(image: Image.Image, size: int, share: float) -> np.ndarray:
    """The central square of side ``share`` x the shorter side, resized (antialiased) to (size, size, 3)."""
    side = share * min(image.size)
    left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
    face = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=2.0)
    return np.asarray(face, dtype=np.uint8)


def align_face(image: Image.Image, size: int, eyes: tuple | None) -> np.ndarray:
    """(size, size, 3) uint8: aligned by the two eye points when given (warped at the source's own scale, then
    resized, antialiased), else the central square of CENTRE_CROP_SHARE of the image."""
    if eyes is None:
        return _centre_square(image, size, CENTRE_CROP_SHARE)
    scale = abs(complex(*_similarity_to(size, eyes)[:2]))  # source pixels per output pixel
    # bilinear sampling is sharp and barely aliases up to 2x downscaling; beyond, warp larger and resize down
    work = size if scale <= 2 else min(8 * size, math.ceil(size * scale / 2))
    face = image.transform((work, work), Image.AFFINE, _similarity_to(work, eyes), Image.BILINEAR)
    if work != size:
        face = face.resize((size, size), Image.BILINEAR)
    return np.asarray(face, dtype=np.uint8)


def load_face(path: str | Path, size: int, mode: str = "plain", eyes: tuple | None = None) -> np.ndarray | None:
    """Decode one file (PIL, RGB) as 'plain' (an aligned crop: central square, resized), 'centre-crop' or
    'landmarks' (:func:`align_face`). None when the file cannot be decoded."""
    try:
        with Image.open(path) as image:
            if mode == "landmarks":  # no draft: the landmarks are in the file's full-size pixels
                return align_face(image.convert("RGB"), size, eyes)
            share = CENTRE_CROP_SHARE if mode == "centre-crop" else 1.0
            need = math.ceil(size / share)
            image.draft("RGB", (need, need))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when still large enough
            return _centre_square(image.convert("RGB"), size, share)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _decode_chunk(args: tuple[list[tuple], int]) -> tuple[np.ndarray, list[int]]:
    items, size = args
    out = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    failed = []
    for i, (path, mode, eyes) in enumerate(items):
        pixels = load_face(path, size, mode, eyes)
        if pixels is None:
            failed.append(i)
        else:
            out[i] = pixels
    return out, failed


def _decoded(items: list[tuple], size: int, workers: int) -> Iterator[tuple[list[tuple], np.ndarray, list[int]]]:
    """Chunks of ``(path, mode, eyes)`` items decoded in order; ``workers`` processes when there are several
    chunks, with at most two chunks per worker in flight."""
    chunks = [items[start:start + CHUNK] for start in range(0, len(items), CHUNK)]
    if workers == 1 or len(chunks) < 2:
        for chunk in chunks:
            yield chunk, *_decode_chunk((chunk, size))
        return
    with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_decode_chunk, (chunk, size))))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, *future.result()
        while pending:
            done, future = pending.popleft()
            yield done, *future.result()


def write_face_store(path: Path, items: list[tuple], size: int, workers: int, *,
                     skip_unreadable: bool = False) -> list[str]:
    """Decode ``items`` into the image store at ``path``, in order; an undecodable file raises, or with
    ``skip_unreadable`` is left out and listed."""
    skipped: list[str] = []
    with image_store_writer(path, len(items), (size, size, 3)) as store:
        for chunk, pixels, failed in _decoded(items, size, workers):
            if failed and not skip_unreadable:
                raise FairquantError(f"{chunk[failed[0]][0]}: cannot be decoded as an image; replace the file "
                                     f"(or remove it and any line that names it)")
            skipped += [str(chunk[i][0]) for i in failed]
            store.append(np.delete(pixels, failed, axis=0) if failed else pixels)
    return skipped


# ---------------------------------------------------------------------------------------------------------------
# The prepared verification data


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


def prepare_verification(data: VerifyDataParams, out: str | Path) -> dict:
    """Read the training identity folders, RFW's test pairs and the synthetic faces; write into ``out``
    (atomically: a failure leaves the previous ``out``, or none) the image stores, tables, calibration sets and
    ``info.json``. Returns the info."""
    train_root, rfw_root = Path(data.train_root), Path(data.rfw_root)
    _require_apart(Path(data.synthetic_folder), {"verify.data.train_root": train_root, "verify.data.rfw_root": rfw_root})
    train, train_info = read_identity_folders(train_root, races=data.races, seed=data.seed,
                                              min_images_per_identity=data.min_images_per_identity,
                                              max_identities=data.max_train_identities)
    test = read_rfw(rfw_root, data.races)
    faces = synthetic_faces(data.synthetic_folder)
    size, workers = data.image_size, data.workers
    with atomic_dir(out) as tmp:
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
            "sources": {"train_root": str(train_root), "rfw_root": str(rfw_root),
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
    """Read a folder written by :func:`prepare_verification` (stores memory-mapped)."""
    from fairquant.io import read_json, read_table

    folder = Path(folder)
    if not (folder / "info.json").is_file():
        raise FairquantError(f"{folder} is not a prepared verification folder; run `dvc repro verify_prepare` first")
    return PreparedVerification(read_table(folder / "train.parquet"), read_images(folder / "train_images.npy"),
                                read_table(folder / "test.parquet"), read_images(folder / "test_images.npy"),
                                read_table(folder / "pairs.parquet"), read_json(folder / "info.json"))
