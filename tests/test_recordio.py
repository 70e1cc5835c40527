"""MXNet RecordIO (insightface's train.rec / train.idx), read natively: checked against records built byte by
byte from the format (dmlc-core's framing, mxnet.recordio's IRHeader), not only against our own writer."""

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairquant.data.alignment import load_face
from fairquant.data.recordio import (
    MAGIC,
    frame_record,
    read_race_map,
    read_recordio,
    write_recordio,
    write_recordio_store,
)
from fairquant.errors import FairquantError
from fairquant.io import read_images


def _jpeg(colour, size=(20, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _by_hand(data: bytes) -> bytes:
    """One whole record as the spec frames it: magic, lrecord (cflag 0, length), data, zero padding to 4."""
    return bytes.fromhex("0a23d7ce") + len(data).to_bytes(4, "little") + data + b"\0" * (-len(data) % 4)


def _irheader(flag: int, label: float, record_id: int, id2: int = 0) -> bytes:
    return flag.to_bytes(4, "little") + struct.pack("<f", label) + record_id.to_bytes(8, "little") + \
        id2.to_bytes(8, "little")


def _hand_built(folder: Path, labels=(7.0, 7.0, 3.0), header=True) -> list[bytes]:
    """Images as records 1..n (label in the header, flag 0), identity records, then record 0 (flag 2, labels
    (first identity record, end), id2 1), as insightface's RecBuilder writes them; the idx in write order."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [_jpeg((60 * i, 100, 150)) for i in range(len(labels))]
    records = [(k + 1, _irheader(0, label, k + 1) + image) for k, (label, image) in enumerate(zip(labels, images))]
    if header:
        spans: dict[float, list[int]] = {}  # label -> [first image record, end], runs of equal labels
        for key, label in enumerate(labels, 1):
            spans.setdefault(label, [key, key])[1] = key + 1
        first = key = len(labels) + 1
        for start, end in spans.values():
            records.append((key, _irheader(2, 0.0, key) + struct.pack("<2f", start, end)))
            key += 1
        records.append((0, _irheader(2, 0.0, 0, 1) + struct.pack("<2f", first, key)))
    blob, lines = b"", []
    for key, data in records:
        lines.append(f"{key}\t{len(blob)}\n")
        blob += _by_hand(data)
    (folder / "train.rec").write_bytes(blob)
    (folder / "train.idx").write_text("".join(lines))
    return images


def test_a_hand_built_file_reads_as_the_format_says(tmp_path):
    images = _hand_built(tmp_path / "rec")
    table, info = read_recordio(tmp_path / "rec", races=["African"])
    assert table["path"].tolist() == ["train.rec#1", "train.rec#2", "train.rec#3"]
    assert table["identity_name"].tolist() == ["7", "7", "3"]
    assert table["identity"].tolist() == [1, 1, 0]  # 0..K-1 in label order
    assert set(table["race"]) == {"unknown"}
    assert info["images_from"] == "header record 0: images 1..3" and info["records_indexed"] == 6
    write_recordio_store(tmp_path / "store.npy", tmp_path / "rec", table, 16, 1)
    store = read_images(tmp_path / "store.npy")
    for row, image in enumerate(images):
        assert np.array_equal(store[row], load_face(io.BytesIO(image), 16))


def test_without_a_header_record_every_record_is_an_image(tmp_path):
    _hand_built(tmp_path / "rec", header=False)
    table, info = read_recordio(tmp_path / "rec", races=["African"])
    assert len(table) == 3 and info["images_from"].startswith("every record")


def test_the_writer_matches_the_hand_built_bytes(tmp_path):
    images = _hand_built(tmp_path / "hand", labels=(3.0, 7.0, 7.0))
    write_recordio(tmp_path / "ours", {3: images[:1], 7: images[1:]})
    for name in ("train.rec", "train.idx"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "hand" / name).read_bytes()


def test_a_magic_word_inside_the_data_splits_the_record():
    magic = struct.pack("<I", MAGIC)
    data = b"abcd" + magic + b"efgh" + magic + b"xy"
    framed = frame_record(data)
    # start part (cflag 1, 4 bytes), middle part (cflag 2, 4 bytes), end part (cflag 3, 2 bytes + 2 padding)
    assert framed == (magic + struct.pack("<I", 1 << 29 | 4) + b"abcd" + magic + struct.pack("<I", 2 << 29 | 4)
                      + b"efgh" + magic + struct.pack("<I", 3 << 29 | 2) + b"xy\0\0")
    assert frame_record(b"a" + magic + b"bcd")[4:8] == struct.pack("<I", 8)  # unaligned: not split


def test_split_records_read_back_whole(tmp_path):
    magic = struct.pack("<I", MAGIC)
    image = _jpeg((10, 200, 30))
    # an APP segment holding the magic at an aligned offset of the record data (after the 24-byte IRHeader)
    padding = (-(24 + 2 + 4) % 4)
    payload = image[:2] + b"\xff\xe1" + (6 + padding + 4).to_bytes(2, "big") + b"\0" * padding + b"Exif" + magic \
        + image[2:]
    assert (24 + payload.index(magic)) % 4 == 0
    write_recordio(tmp_path / "rec", {0: [payload, image]})
    assert struct.unpack_from("<I", (tmp_path / "rec" / "train.rec").read_bytes(), 4)[0] >> 29 == 1  # split
    table, _ = read_recordio(tmp_path / "rec", races=["African"])
    write_recordio_store(tmp_path / "store.npy", tmp_path / "rec", table, 16, 1)
    store = read_images(tmp_path / "store.npy")
    assert np.array_equal(store[0], load_face(io.BytesIO(payload), 16))


def test_filters_and_race_map(tmp_path):
    write_recordio(tmp_path / "rec", {0: [_jpeg((1, 2, 3))] * 3, 1: [_jpeg((9, 9, 9))], 2: [_jpeg((5, 5, 5))] * 2})
    table, info = read_recordio(tmp_path / "rec", races=["African", "Asian"], min_images_per_identity=2)
    assert table["identity_name"].tolist() == ["0"] * 3 + ["2"] * 2 and info["dropped_identities_few_images"] == 1
    table, info = read_recordio(tmp_path / "rec", races=["Asian"], race_map={0: "African", 1: "Asian", 2: "Asian"})
    assert table["identity_name"].tolist() == ["1", "2", "2"] and table["identity"].tolist() == [0, 1, 1]
    assert info["per_race"] == {"Asian": {"identities": 2, "images": 3}}
    table, info = read_recordio(tmp_path / "rec", races=["African"], max_identities=2, seed=1)
    assert table["identity"].nunique() == 2 and info["dropped_identities_over_cap"] == 1


@pytest.fixture
def written(tmp_path):
    write_recordio(tmp_path / "rec", {0: [_jpeg((1, 2, 3))] * 2, 5: [_jpeg((9, 9, 9))] * 2})
    return tmp_path / "rec"


def _error(root, **kw) -> str:
    with pytest.raises(FairquantError) as error:
        table, _ = read_recordio(root, races=["African"], **kw)
        write_recordio_store(root.parent / "store.npy", root, table, 16, 1)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_files_are_named(written):
    (written / "train.idx").unlink()
    assert "train.idx does not exist; set verify.data.train_root" in _error(written)
    (written / "train.rec").unlink()
    assert "train.rec does not exist" in _error(written)


def test_bad_magic_names_file_and_record(written):
    blob = bytearray((written / "train.rec").read_bytes())
    offset = int((written / "train.idx").read_text().splitlines()[1].split("\t")[1])  # record 2
    blob[offset] ^= 0xFF
    (written / "train.rec").write_bytes(bytes(blob))
    assert "train.rec record 2: bad magic" in _error(written)


def test_an_offset_past_the_end_is_refused(written):
    size = (written / "train.rec").stat().st_size
    lines = (written / "train.idx").read_text().splitlines()
    lines[2] = f"3\t{size + 100}"
    (written / "train.idx").write_text("\n".join(lines) + "\n")
    assert "record 3: train.idx gives offset" in _error(written) and "past the end" in _error(written)


def test_a_truncated_file_is_refused(written):
    blob = (written / "train.rec").read_bytes()
    offset = int((written / "train.idx").read_text().splitlines()[3].split("\t")[1])  # record 4, the last image
    (written / "train.rec").write_bytes(blob[:offset + 30])
    lines = (written / "train.idx").read_text().splitlines()
    (written / "train.idx").write_text("\n".join(lines[:4]) + "\n")  # no header record 0 any more
    message = _error(written)
    assert "train.rec record 4: truncated" in message


def test_a_label_that_is_not_an_integer_is_refused(tmp_path):
    _hand_built(tmp_path / "rec", labels=(7.0, 2.5, 3.0))
    assert "train.rec record 2: identity label 2.5 is not a non-negative integer" in _error(tmp_path / "rec")


def test_a_malformed_index_line_is_refused(written):
    (written / "train.idx").write_text("1\t0\nnot a line\n")
    assert "train.idx line 2: expected 'key<TAB>offset'" in _error(written)
    (written / "train.idx").write_text("")
    assert "lists no record" in _error(written)


def test_an_undecodable_image_names_its_record(tmp_path):
    write_recordio(tmp_path / "rec", {0: [_jpeg((1, 2, 3)), b"not a jpeg"]})
    assert "train.rec record 2: its image cannot be decoded" in _error(tmp_path / "rec")


def test_a_header_naming_unindexed_images_is_refused(written):
    lines = (written / "train.idx").read_text().splitlines()
    (written / "train.idx").write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert "lacks record 2" in _error(written)


@pytest.mark.parametrize("text, expected", [
    ("id,race\n0,African\n", "expected the header 'identity,race'"),
    ("identity,race\nx,African\n", "line 2: identity 'x' is not a RecordIO label"),
    ("identity,race\n0,Martian\n", "line 2: race 'Martian' is not one of"),
    ("identity,race\n0,African\n0,Asian\n", "identity 0 is listed twice"),
])
def test_bad_race_maps(tmp_path, text, expected):
    (tmp_path / "map.csv").write_text(text)
    with pytest.raises(FairquantError, match=expected):
        read_race_map(tmp_path / "map.csv", ["African", "Asian"])
    with pytest.raises(FairquantError, match="does not exist"):
        read_race_map(tmp_path / "none.csv", ["African"])
