"""MXNet RecordIO training sets as insightface ships them (MS1MV2 / faces_emore, Glint360K, WebFace):
``train.rec`` + ``train.idx``, read natively (no mxnet).

The format, as dmlc-core's ``RecordIOWriter`` and ``mxnet.recordio`` write it:

- ``train.idx``: one ``key<TAB>byte offset`` line per record.
- ``train.rec``: each record is framed as ``magic (uint32 0xced7230a) | lrecord (uint32: cflag << 29 | length) |
  data | zero padding to 4 bytes``. When the data holds the magic word at a 4-byte-aligned position, the writer
  cuts the record there and drops that word: cflag 1 starts such a record, 2 continues it, 3 ends it (0 = whole);
  the reader puts the magic word back between the parts.
- The data of a record is an IRHeader (``<IfQQ``: flag uint32, label float32, id uint64, id2 uint64), then, when
  flag > 0, ``flag`` float32 labels (the header's own label is then 0), then the payload (a JPEG for images).
- insightface's layout (``rec_builder.py``): images are records 1..n, one record per identity follows with the
  label (first image record, end), and record 0, written last, is a header whose labels are (first identity
  record, end), id2 1. ``MXFaceDataset`` (arcface_torch) takes records 1..label[0]-1 as the images when record 0
  has flag > 0, every key otherwise, and an image's identity is its label (its first label when flag > 0).

Images are decoded at prepare, record by record (never the whole file in memory), into the image store.
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.data.identity_folders import cap_identities
from fairquant.data.parallel import in_chunks, map_in_order
from fairquant.data.paths import real_root, require_inside
from fairquant.errors import FairquantError
from fairquant.io import atomic_dir, image_store_writer

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
FRAME = struct.Struct("<II")  # magic, lrecord
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (mxnet.recordio._IR_FORMAT, 24 bytes)
LENGTH_BITS = 29
REC, IDX = "train.rec", "train.idx"
UNKNOWN_RACE = "unknown"


def _lrecord(cflag: int, length: int) -> bytes:
    return FRAME.pack(MAGIC, (cflag << LENGTH_BITS) | length)


def frame_record(data: bytes) -> bytes:
    """``data`` framed as dmlc-core's RecordIOWriter frames it (split at aligned magic words, padded to 4)."""
    parts, start, search = [], 0, 0
    aligned_end = len(data) // 4 * 4
    while (hit := data.find(MAGIC_BYTES, search, aligned_end)) >= 0:
        if hit % 4:
            search = hit + 1
            continue
        parts += [_lrecord(1 if start == 0 else 2, hit - start), data[start:hit]]
        start = search = hit + 4
    parts += [_lrecord(3 if start else 0, len(data) - start), data[start:], b"\0" * (-len(data) % 4)]
    return b"".join(parts)


def pack_record(labels: float | list[float], payload: bytes, *, record_id: int = 0, id2: int = 0) -> bytes:
    """An IRHeader and ``payload`` as ``mxnet.recordio.pack`` writes them: a number label in the header (flag 0),
    or a list as flag = its length, header label 0, then the float32 labels."""
    if isinstance(labels, (int, float)):
        return IR_HEADER.pack(0, float(labels), record_id, id2) + payload
    values = np.asarray(labels, dtype="<f4")
    return IR_HEADER.pack(values.size, 0.0, record_id, id2) + values.tobytes() + payload


def unpack_record(data: bytes, where: str) -> tuple[int, np.ndarray, bytes]:
    """(flag, labels as float32 array, payload) of one record's data, as ``mxnet.recordio.unpack`` reads it."""
    if len(data) < IR_HEADER.size:
        raise FairquantError(f"{where}: {len(data)} bytes, shorter than the {IR_HEADER.size}-byte IRHeader; the file "
                             f"is not an image RecordIO file or is damaged: re-copy it")
    flag, label, _, _ = IR_HEADER.unpack_from(data)
    if flag == 0:
        return flag, np.array([label], dtype=np.float32), data[IR_HEADER.size:]
    end = IR_HEADER.size + 4 * flag
    if len(data) < end:
        raise FairquantError(f"{where}: the IRHeader announces {flag} labels but the record holds "
                             f"{len(data) - IR_HEADER.size} bytes after it; the file is damaged: re-copy it")
    return flag, np.frombuffer(data, "<f4", flag, IR_HEADER.size).copy(), data[end:]


def read_index(idx: Path) -> dict[int, int]:
    """``train.idx``: record key -> byte offset, in file order."""
    offsets: dict[int, int] = {}
    with open(idx, encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise FairquantError(f"{idx} line {number}: expected 'key<TAB>offset' (two integers), found "
                                     f"{line.strip()[:60]!r}; the index is damaged: re-copy it")
            key, offset = int(fields[0]), int(fields[1])
            if key in offsets:
                raise FairquantError(f"{idx} line {number}: record {key} is indexed twice; re-copy the index")
            offsets[key] = offset
    if not offsets:
        raise FairquantError(f"{idx} lists no record; re-copy it (it must hold one 'key<TAB>offset' line per record)")
    return offsets


class RecordFile:
    """Random access to the records of a ``.rec`` file by byte offset (one open handle; reads one record at a
    time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._handle = open(path, "rb")

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _chunk_head(self, position: int, key: int) -> tuple[int, int, int]:
        """(cflag, length, padded length) of the part framed at ``position``."""
        where = f"{self.path} record {key}"
        if position + FRAME.size > self.size:
            raise FairquantError(f"{where}: truncated at byte {position} (the file has {self.size} bytes); the copy "
                                 f"is incomplete: re-copy train.rec")
        self._handle.seek(position)
        magic, lrecord = FRAME.unpack(self._handle.read(FRAME.size))
        if magic != MAGIC:
            raise FairquantError(f"{where}: bad magic 0x{magic:08x} at byte {position} (expected 0x{MAGIC:08x}); "
                                 f"train.idx does not match train.rec, or the file is not RecordIO: re-copy both")
        length = lrecord & ((1 << LENGTH_BITS) - 1)
        padded = (length + 3) // 4 * 4
        if position + FRAME.size + padded > self.size:
            raise FairquantError(f"{where}: truncated: {length} bytes announced at byte {position}, the file ends "
                                 f"after {self.size - position - FRAME.size}; re-copy train.rec")
        return lrecord >> LENGTH_BITS, length, padded

    def read(self, key: int, offset: int, head_only: bool = False) -> bytes:
        """The data of the record at ``offset`` (its parts joined), or with ``head_only`` just its first part
        when that is a whole record (enough for the IRHeader)."""
        if offset >= self.size:
            raise FairquantError(f"{self.path} record {key}: train.idx gives offset {offset}, past the end of the "
                                 f"file ({self.size} bytes); train.idx does not match train.rec: re-copy both")
        cflag, length, padded = self._chunk_head(offset, key)
        if cflag not in (0, 1):
            raise FairquantError(f"{self.path} record {key}: offset {offset} is not the start of a record (cflag "
                                 f"{cflag}); train.idx does not match train.rec: re-copy both")
        if head_only and cflag == 0:
            head = self._handle.read(min(length, IR_HEADER.size))
            flag = IR_HEADER.unpack_from(head)[0] if len(head) == IR_HEADER.size else 0
            return head + self._handle.read(min(4 * flag, length - len(head)))
        parts, position = [self._handle.read(length)], offset + FRAME.size + padded
        while cflag != 0 and cflag != 3:
            cflag, length, padded = self._chunk_head(position, key)
            if cflag not in (2, 3):
                raise FairquantError(f"{self.path} record {key}: a split record is continued by cflag {cflag} at "
                                     f"byte {position} (expected 2 or 3); the file is damaged: re-copy it")
            parts += [MAGIC_BYTES, self._handle.read(length)]
            position += FRAME.size + padded
        return b"".join(parts)


def require_recordio(root: str | Path, key: str = "verify.data.train_root") -> tuple[Path, Path]:
    """(train.rec, train.idx) in ``root``, or an error naming the missing file and the params key."""
    root = Path(root)
    rec, idx = root / REC, root / IDX
    for path in (rec, idx):
        if not path.is_file():
            raise FairquantError(f"{path} does not exist; set {key} to the folder that holds train.rec and train.idx "
                                 f"(insightface's MS1MV2 / Glint360K / WebFace layout)")
        require_inside(real_root(root), path, str(path), path.name)
    return rec, idx


def _identity_label(labels: np.ndarray, where: str) -> int:
    value = float(labels[0])
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise FairquantError(f"{where}: identity label {value!r} is not a non-negative integer; this is not a "
                             f"face-recognition RecordIO set (identity labels), or it is damaged")
    return int(value)


def image_keys(records: RecordFile, offsets: dict[int, int]) -> tuple[list[int], str]:
    """The image records' keys, and how they were found (record 0's header, or every record)."""
    if 0 in offsets:
        flag, labels, _ = unpack_record(records.read(0, offsets[0]), f"{records.path} record 0")
        if flag > 0 and len(labels) >= 2:
            end = int(labels[0])
            missing = [k for k in range(1, end) if k not in offsets]
            if missing:
                raise FairquantError(f"{records.path}: record 0's header gives images 1..{end - 1} but train.idx "
                                     f"lacks record {missing[0]} ({len(missing)} missing); re-copy train.idx")
            return list(range(1, end)), f"header record 0: images 1..{end - 1}"
    return sorted(offsets), "every record (no header record 0)"


def read_labels(root: str | Path) -> tuple[pd.DataFrame, dict]:
    """(key, offset, label) of every image record, reading only the IRHeaders, and counts."""
    rec, idx = require_recordio(root)
    offsets = read_index(idx)
    with RecordFile(rec) as records:
        keys, found = image_keys(records, offsets)
        labels = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            where = f"{rec} record {key}"
            _, values, _ = unpack_record(records.read(key, offsets[key], head_only=True), where)
            labels[i] = _identity_label(values, where)
    table = pd.DataFrame({"key": np.asarray(keys, dtype=np.int64),
                          "offset": np.asarray([offsets[k] for k in keys], dtype=np.int64), "label": labels})
    return table, {"records_indexed": len(offsets), "images_from": found}


def read_race_map(path: str | Path, races: list[str], key: str = "verify.data.train_race_map", *,
                  root: str | Path | None = None) -> dict[int, str]:
    """A CSV with columns identity (the RecordIO label) and race: identity label -> race; with ``root`` (the
    training root), refused when it resolves outside it."""
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path} does not exist; set {key} to a CSV with columns identity,race (or null)")
    if root is not None:
        require_inside(real_root(root), path, str(path), f"{key} {path.name}")
    try:
        frame = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError, a bad encoding, ragged rows
        raise FairquantError(f"{path}: not a readable CSV ({(str(exc).splitlines() or [''])[0]}); {key} must be a "
                             f"CSV with the header 'identity,race'") from None
    if list(frame.columns[:2]) != ["identity", "race"]:
        raise FairquantError(f"{path}: expected the header 'identity,race', found {','.join(frame.columns)}; fix "
                             f"the file named by {key}")
    for row, (identity, race) in enumerate(zip(frame["identity"], frame["race"]), 2):
        if not str(identity).isdigit():
            raise FairquantError(f"{path} line {row}: identity {identity!r} is not a RecordIO label (an integer)")
        if race not in races and race != UNKNOWN_RACE:
            raise FairquantError(f"{path} line {row}: race {race!r} is not one of {', '.join(races)} (or unknown)")
    if frame["identity"].duplicated().any():
        first = frame["identity"][frame["identity"].duplicated()].iloc[0]
        raise FairquantError(f"{path}: identity {first} is listed twice; list each identity once")
    return {int(i): r for i, r in zip(frame["identity"], frame["race"])}


def read_recordio(root: str | Path, *, races: list[str] | tuple[str, ...], race_map: dict[int, str] | None = None,
                  min_images_per_identity: int = 1, max_identities: int | None = None,
                  seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The training images of a RecordIO set as :func:`fairquant.data.identity_folders.read_identity_folders`
    returns identity folders (row, path = 'train.rec#<key>', identity 0..K-1 in label order, identity_name = the
    RecordIO label, race), plus the record ``offset``. Race is unknown unless ``race_map`` names it; with a map,
    identities of races outside ``races`` are dropped."""
    labels, read_info = read_labels(root)
    counts = labels.groupby("label").size()
    kept = counts.index[counts >= min_images_per_identity].to_numpy()
    if kept.size == 0:
        raise FairquantError(f"no training identity in {Path(root) / REC} has {min_images_per_identity} images or "
                             f"more (the most is {counts.max()}); lower verify.data.min_images_per_identity")
    race_of = {int(k): (race_map or {}).get(int(k), UNKNOWN_RACE) for k in kept}
    if race_map is not None:
        unlisted = [int(k) for k in kept if int(k) not in race_map]
        if unlisted:  # would be dropped as of unknown race: most of the set, silently, for a map of the wrong set
            raise FairquantError(f"verify.data.train_race_map lacks {len(unlisted)} of the {kept.size} training "
                                 f"identities (first: label {unlisted[0]}); list each RecordIO label (race 'unknown' "
                                 f"drops it), or set train_race_map: null")
        kept = np.array([k for k in kept if race_of[int(k)] in races], dtype=np.int64)
        if kept.size == 0:
            raise FairquantError(f"no identity of the race map is of verify.data.races ({', '.join(races)}); fix "
                                 f"verify.data.train_race_map or verify.data.races")
    kept, capped = cap_identities(kept, max_identities, seed)
    table = labels[labels["label"].isin(kept)].reset_index(drop=True)
    new_label = {int(label): i for i, label in enumerate(np.sort(kept))}
    table = pd.DataFrame({
        "row": np.arange(len(table), dtype=np.int64),
        "path": [f"{REC}#{k}" for k in table["key"]],
        "identity": table["label"].map(new_label).astype(np.int64),
        "identity_name": table["label"].astype(str),
        "race": [race_of[int(v)] for v in table["label"]],
        "offset": table["offset"].to_numpy(),
    })
    per_race = {race: {"identities": int(part["identity"].nunique()), "images": len(part)}
                for race, part in table.groupby("race")}
    info = {"root": str(root), "layout": "recordio", **read_info, "images": len(table), "identities": len(new_label),
            "per_race": per_race, "dropped_identities_few_images": int((counts < min_images_per_identity).sum()),
            "dropped_identities_over_cap": capped, "identities_under_several_races": 0,
            "races_filter": "applied (race map)" if race_map is not None else "not applied: race unknown"}
    return table, info


def _decode_records(args: tuple[str, list[tuple[int, int]], int]) -> tuple[np.ndarray, list[int]]:
    from fairquant.data.alignment import load_face

    rec, items, size = args
    out = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    failed = []
    with RecordFile(Path(rec)) as records:
        for i, (key, offset) in enumerate(items):
            _, _, payload = unpack_record(records.read(key, offset), f"{rec} record {key}")
            pixels = load_face(io.BytesIO(payload), size, name=f"{rec} record {key}")
            if pixels is None:
                failed.append(i)
            else:
                out[i] = pixels
    return out, failed


def write_recordio_store(path: Path, root: str | Path, table: pd.DataFrame, size: int, workers: int) -> None:
    """Decode the images ``table`` names (its key in ``path`` and its ``offset``) into the image store at
    ``path``, in table order, a chunk of records at a time; an undecodable image names its record."""
    rec = str(Path(root) / REC)
    items = [(int(p.rsplit("#", 1)[1]), int(o)) for p, o in zip(table["path"], table["offset"])]
    with image_store_writer(path, len(items), (size, size, 3)) as store:
        chunks = in_chunks(items)
        for chunk, (pixels, failed) in zip(chunks, map_in_order(_decode_records, [(rec, c, size) for c in chunks],
                                                                workers)):
            if failed:
                raise FairquantError(f"{rec} record {chunk[failed[0]][0]}: its image cannot be decoded; the file is "
                                     f"damaged: re-copy it")
            store.append(pixels)


def write_recordio(folder: str | Path, images_by_identity: dict[int, list[bytes]]) -> dict:
    """Write ``train.rec`` / ``train.idx`` in insightface's layout (as its ``RecBuilder`` does): the encoded images
    (JPEG bytes) of each identity label, in label order, as records 1..n (label in the IRHeader); one record per
    identity with (first image record, end); record 0, last, with (first identity record, end). Written
    atomically. Returns counts."""
    keys_offsets: list[tuple[int, int]] = []
    with atomic_dir(folder) as tmp, open(tmp / REC, "wb") as rec:
        def write(key: int, data: bytes) -> None:
            keys_offsets.append((key, rec.tell()))
            rec.write(frame_record(data))

        key, spans = 1, []
        for label in sorted(images_by_identity):
            first = key
            for image in images_by_identity[label]:
                write(key, pack_record(float(label), image, record_id=key))
                key += 1
            spans.append((first, key))
        first_identity = key
        for first, end in spans:
            write(key, pack_record([first, end], b"", record_id=key))
            key += 1
        write(0, pack_record([first_identity, key], b"", record_id=0, id2=1))
        rec.flush()
        os.fsync(rec.fileno())
        (tmp / IDX).write_text("".join(f"{k}\t{o}\n" for k, o in keys_offsets))
    return {"images": first_identity - 1, "identities": len(spans), "records": key}
