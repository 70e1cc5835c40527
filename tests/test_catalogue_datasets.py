"""Troubleshooting catalogue: datasets (README, Troubleshooting). Each case id is a README row.

Every case damages a tiny dataset written in its real on-disk format (CelebA's text files, UTKFace's file names,
FairFace's CSVs, MNIST's IDX files, CIFAR's pickles, a labelled folder, RFW's test/data + test/txts, BUPT's
identity folders, insightface's RecordIO) the way users' copies are damaged, runs the stage that reads it
(``prepare`` or ``verify_prepare``) in-process, and checks the promise: exit status 2, one ``error:`` line naming
the file (and line) and the fix, nothing written."""

import gzip
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.dataset_builders import write_cifar, write_fairface, write_folder, write_jpg, write_mnist, write_utkface
from tests.test_stages import assert_clean_failure, run_stage

MULTICLASS = {"data.task": "multiclass", "data.target": "class", "data.protected": ["class"],
              "mitigate.before_compression": [], "mitigate.after": []}
SOURCE_PARAMS = {
    "celeba": {"data.source": "celeba"},
    "utkface": {"data.source": "utkface", "data.target": "gender", "data.protected": ["race"],
                "evaluate.privileged_group": "White"},
    "fairface": {"data.source": "fairface", "data.target": "gender", "data.protected": ["race"],
                 "evaluate.privileged_group": "White"},
    "mnist": {"data.source": "mnist", **MULTICLASS, "evaluate.privileged_group": "0"},
    "cifar10": {"data.source": "cifar10", **MULTICLASS, "evaluate.privileged_group": "airplane"},
    "cifar100": {"data.source": "cifar100", **MULTICLASS, "evaluate.privileged_group": "apple"},
    "folder": {"data.source": "folder", "data.target": "label", "data.protected": ["group"],
               "evaluate.privileged_group": "a"},
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_celeba):
    """Each source's tiny dataset, written once; cases damage a copy."""
    base = tmp_path_factory.mktemp("datasets")
    roots = {"celeba": tiny_celeba}
    builders = {"utkface": write_utkface, "fairface": write_fairface, "mnist": write_mnist, "folder": write_folder,
                "cifar10": lambda r: write_cifar(r, "cifar10"), "cifar100": lambda r: write_cifar(r, "cifar100")}
    for source, build in builders.items():
        (base / source).mkdir()
        build(base / source)
        roots[source] = base / source
    return roots


# --- damages ----------------------------------------------------------------------------------------------------


def _edit(path: Path, number: int, change) -> None:
    """Line ``number`` (from 1) of a text file through ``change`` (None drops it)."""
    lines = path.read_text().splitlines()
    new = change(lines[number - 1])
    lines[number - 1:number] = [] if new is None else [new]
    path.write_text("\n".join(lines) + "\n")


CELEBA, PARTITION = "list_attr_celeba.txt", "list_eval_partition.txt"


def _celeba_value(attribute: str, value: str, line: int = 5):
    def damage(root, outside):
        names = (root / "list_attr_celeba.txt").read_text().splitlines()[1].split()
        column = names.index(attribute) + 1

        def change(text):
            fields = text.split()
            fields[column] = value
            return " ".join(fields)
        _edit(root / "list_attr_celeba.txt", line, change)
    return damage


def _celeba_rename(name: str):
    """The first image named ``name`` in both CelebA lists."""
    def damage(root, outside):
        _edit(root / "list_attr_celeba.txt", 3, lambda t: name + t[len("000001.jpg"):])
        _edit(root / "list_eval_partition.txt", 1, lambda t: f"{name} 0")
    return damage


def _celeba_dot_slash_twin(root, outside):
    """000001.jpg listed again as ./000001.jpg, in the test split: one image in train and test."""
    lines = (root / CELEBA).read_text().splitlines()
    lines.append("./" + lines[2])
    lines[0] = str(int(lines[0]) + 1)
    (root / CELEBA).write_text("\n".join(lines) + "\n")
    with open(root / PARTITION, "a") as handle:
        handle.write("./000001.jpg 2\n")


def _celeba_blank_line_then_missing(root, outside):
    _edit(root / CELEBA, 3, lambda t: t + "\n")
    (root / "img_align_celeba" / "000004.jpg").unlink()


def _link_out(relative: str, folder: bool = False):
    """``relative`` (a file, or with ``folder`` a folder) replaced by a symlink to a copy outside the root."""
    def damage(root, outside):
        target, there = root / relative, outside / Path(relative).name
        if folder:
            shutil.copytree(target, there)
            shutil.rmtree(target)
        else:
            shutil.copy(target, there)
            target.unlink()
        target.symlink_to(there, target_is_directory=folder)
    return damage


def _write(relative: str, data: bytes):
    def damage(root, outside):
        (root / relative).write_bytes(data)
    return damage


def _png_header(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` pixels (PIL checks the size on open, before decoding)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _float_image(root, outside):
    Image.fromarray(np.full((12, 12), 0.5, dtype=np.float32)).save(root / "img_align_celeba" / "000001.jpg",
                                                                    format="TIFF")


def _fairface_cell(line: int, column: str, value: str, csv: str = "fairface_label_train.csv"):
    def damage(root, outside):
        frame = pd.read_csv(root / csv, dtype=str, keep_default_na=False)
        frame.loc[line - 2, column] = value
        frame.to_csv(root / csv, index=False)
    return damage


def _fairface_drop_column(root, outside):
    frame = pd.read_csv(root / "fairface_label_val.csv", dtype=str)
    frame.drop(columns="race").to_csv(root / "fairface_label_val.csv", index=False)


def _idx_file(name: str, change):
    def damage(root, outside):
        path = root / "MNIST" / "raw" / name
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        with gzip.open(path, "wb") as handle:
            handle.write(change(data))
    return damage


def _cifar10_batch(change):
    def damage(root, outside):
        from tests.test_multiclass_data import python2_pickle

        labels = np.arange(10)
        batch = {"batch_label": "x", "labels": [int(v) for v in labels], "data": np.zeros((10, 3072), np.uint8),
                 "filenames": [f"{i}.png" for i in range(10)]}
        (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(python2_pickle(change(batch)))
    return damage


def _race_map_outside(raw, outside):
    (outside / "race_map.csv").write_text("identity,race\n0,African\n5,Caucasian\n")
    (raw / "rec" / "race_map.csv").symlink_to(outside / "race_map.csv")


def _cifar100_meta(root, outside):
    from tests.test_multiclass_data import python2_pickle

    (root / "cifar-100-python" / "meta").write_bytes(python2_pickle({"coarse_label_names": ["a", "b"]}))


def _cifar100_label(root, outside):
    from tests.test_multiclass_data import cifar100_batch, python2_pickle

    batch = cifar100_batch(np.arange(100), "testing")
    batch["fine_labels"] = [100] + list(range(1, 100))
    (root / "cifar-100-python" / "test").write_bytes(python2_pickle(batch))


def _folder_cell(line: int, column: str, value: str):
    def damage(root, outside):
        frame = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
        frame.loc[line - 2, column] = value
        frame.to_csv(root / "labels.csv", index=False)
    return damage


def _utkface_names_but_race_zero(root, outside):
    """Every image of a race other than White renamed: the names left all say White."""
    for path in (root / "UTKFace").iterdir():
        if path.name.split("_")[2] != "0":
            path.rename(path.with_name(f"face_{path.name}"))


def _utkface_link_to_own_image(root, outside):
    folder = root / "UTKFace"
    (folder / "25_1_0_20170199.jpg.chip.jpg").symlink_to(folder / "20_0_0_20170100.jpg.chip.jpg")


def _utkface_names(root, outside):
    for path in (root / "UTKFace").iterdir():
        path.rename(path.with_name(f"face_{path.name.split('_')[0]}.jpg"))


PREPARE_CASES = [
    # CelebA
    pytest.param("celeba", _celeba_value("Smiling", "yes"), {},
                 f"{CELEBA}: line 5: attribute Smiling is 'yes', not -1 or 1", id="data-celeba-attr-not-integer"),
    pytest.param("celeba", _celeba_value("Male", "0"), {},
                 f"{CELEBA}: line 5: attribute Male is '0', not -1 or 1", id="data-celeba-attr-not-minus-one-or-one"),
    pytest.param("celeba", lambda r, o: _edit(r / CELEBA, 6, lambda t: t.rsplit(" ", 1)[0]), {},
                 f"{CELEBA}: line 6: 40 fields, expected an image name and 40 attribute values",
                 id="data-celeba-attr-row-short"),
    pytest.param("celeba", lambda r, o: _edit(r / CELEBA, 1, lambda t: "121"), {},
                 f"{CELEBA}: line 1 says 121 images but 120 rows follow; the file is truncated",
                 id="data-celeba-attr-count-mismatch"),
    pytest.param("celeba", lambda r, o: _edit(r / CELEBA, 4, lambda t: "000001.jpg" + t[10:]), {},
                 f"{CELEBA}: line 4: image 000001.jpg is listed twice (first on line 3)",
                 id="data-celeba-attr-duplicate-image"),
    pytest.param("celeba", _celeba_dot_slash_twin, {},
                 f"{CELEBA}: line 123: image './000001.jpg' is the same file as '000001.jpg' (line 3); keep one row",
                 id="data-celeba-same-image-two-names"),
    pytest.param("celeba", _celeba_blank_line_then_missing, {},
                 f"{CELEBA}: line 7: image '000004.jpg' is missing", id="data-celeba-line-numbers-past-a-blank-line"),
    pytest.param("celeba", lambda r, o: _edit(r / PARTITION, 7, lambda t: t.split()[0]), {},
                 f"{PARTITION}: line 7: expected '<image> <split>' with split 0 (train), 1 (val) or 2 (test), found "
                 f"'000007.jpg'", id="data-celeba-partition-no-split"),
    pytest.param("celeba", lambda r, o: _edit(r / PARTITION, 7, lambda t: "000007.jpg 3"), {},
                 f"{PARTITION}: line 7: expected '<image> <split>'", id="data-celeba-partition-bad-split"),
    pytest.param("celeba", lambda r, o: _edit(r / PARTITION, 9, lambda t: None), {},
                 f"{PARTITION}: no partition line for 1 images of {CELEBA} (first: 000009.jpg)",
                 id="data-celeba-partition-missing-image"),
    pytest.param("celeba", _write(PARTITION, b""), {}, f"{PARTITION}: no partition line; restore CelebA's",
                 id="data-celeba-partition-empty"),
    pytest.param("celeba", _celeba_rename("../../elsewhere/x.jpg"), {},
                 f"{CELEBA}: line 3: file '../../elsewhere/x.jpg' leaves the dataset root; give a path relative to "
                 f"data.root", id="data-celeba-name-leaves-root"),
    pytest.param("celeba", _celeba_rename("/etc/x.jpg"), {},
                 f"{CELEBA}: line 3: file '/etc/x.jpg' leaves the dataset root", id="data-celeba-absolute-path"),
    pytest.param("celeba", _link_out("img_align_celeba/000001.jpg"), {},
                 f"{CELEBA}: line 3: file '000001.jpg' resolves outside the dataset root",
                 id="data-celeba-image-symlink-outside"),
    pytest.param("celeba", _link_out("img_align_celeba", folder=True), {},
                 f"{CELEBA}: line 3: file '000001.jpg' resolves outside the dataset root",
                 id="data-celeba-folder-symlink-outside"),
    pytest.param("celeba", _link_out(CELEBA), {}, f"{CELEBA}: {CELEBA} resolves outside the dataset root",
                 id="data-celeba-attr-file-symlink-outside"),
    pytest.param("celeba", lambda r, o: (r / "img_align_celeba" / "000004.jpg").unlink(), {},
                 f"{CELEBA}: line 6: image '000004.jpg' is missing (1 of 120 listed images are); the copy is "
                 f"incomplete", id="data-celeba-image-missing"),
    # images, decoded at prepare (one worker: the check runs in this process)
    pytest.param("celeba", _write("img_align_celeba/000001.jpg", _png_header(20000, 20000)), {},
                 "000001.jpg: the image is larger than PIL's decompression-bomb limit",
                 id="data-image-decompression-bomb"),
    pytest.param("celeba", _write("img_align_celeba/000001.jpg", _png_header(10000, 9000)), {},
                 "000001.jpg: the image is larger than PIL's decompression-bomb limit",
                 id="data-image-decompression-bomb-warning"),
    pytest.param("celeba", lambda r, o: write_jpg(r / "img_align_celeba" / "000001.jpg", size=(4000, 1)), {},
                 "000001.jpg: the image is 4000x1 pixels, under 8 px on a side: no usable picture; replace the file",
                 id="data-image-too-small"),
    pytest.param("celeba", lambda r, o: write_jpg(r / "img_align_celeba" / "000001.jpg", size=(400, 20)), {},
                 "000001.jpg: the image is 400x20 pixels, more than 10:1 (resized to a square it would be a smear)",
                 id="data-image-extreme-aspect-ratio"),
    pytest.param("celeba", _float_image, {}, "000001.jpg: a floating-point (mode F) image has no 8-bit scale",
                 id="data-image-floating-point"),
    pytest.param("celeba", lambda r, o: (_write("img_align_celeba/000001.jpg", b"")(r, o),
                                         _write("img_align_celeba/000002.jpg", b"hello, not a jpeg\n")(r, o)),
                 {"data.max_corrupt_fraction": 0.01}, "2 of 120 images could not be decoded (first: ",
                 id="data-image-empty-or-not-an-image"),
    # UTKFace
    pytest.param("utkface", _utkface_names, {}, "no file name matches age_gender_race_date.jpg.chip.jpg",
                 id="data-utkface-names-do-not-parse"),
    pytest.param("utkface", _utkface_names_but_race_zero, {},
                 "48 of 60 files skipped, their names do not parse as age_gender_race_date.jpg.chip.jpg (first: "
                 "face_21_1_1_20170101.jpg.chip.jpg), and the 12 left all have race 'White'",
                 id="data-utkface-most-names-do-not-parse"),
    pytest.param("utkface", _utkface_link_to_own_image, {},
                 "25_1_0_20170199.jpg.chip.jpg is the same file as 20_0_0_20170100.jpg.chip.jpg (a link)",
                 id="data-utkface-link-to-own-image"),
    pytest.param("utkface", _link_out("UTKFace/20_0_0_20170100.jpg.chip.jpg"), {},
                 "image 20_0_0_20170100.jpg.chip.jpg resolves outside the dataset root",
                 id="data-utkface-symlink-outside"),
    # FairFace
    pytest.param("fairface", _fairface_drop_column, {},
                 "fairface_label_val.csv: no column 'race'; expected columns file,age,gender,race,service_test",
                 id="data-fairface-missing-column"),
    pytest.param("fairface", _write("fairface_label_val.csv", b""), {},
                 "fairface_label_val.csv: not a readable CSV (No columns to parse from file)",
                 id="data-fairface-empty-csv"),
    pytest.param("fairface", _fairface_cell(4, "race", "Martian"), {},
                 "fairface_label_train.csv: line 4: race is 'Martian', expected one of White, Black",
                 id="data-fairface-unknown-value"),
    pytest.param("fairface", _fairface_cell(5, "gender", ""), {},
                 "fairface_label_train.csv: line 5: gender is empty, expected one of Male, Female",
                 id="data-fairface-empty-cell"),
    pytest.param("fairface", _fairface_cell(3, "file", "../../elsewhere/x.jpg"), {},
                 "fairface_label_train.csv: line 3: file '../../elsewhere/x.jpg' leaves the dataset root",
                 id="data-fairface-path-leaves-root"),
    pytest.param("fairface", _fairface_cell(6, "file", "train/1.jpg"), {},
                 "fairface_label_train.csv: line 6: file 'train/1.jpg' is listed twice (first: ",
                 id="data-fairface-duplicate-file"),
    pytest.param("fairface", _link_out("fairface_label_val.csv"), {},
                 "fairface_label_val.csv: fairface_label_val.csv resolves outside the dataset root",
                 id="data-fairface-csv-symlink-outside"),
    pytest.param("fairface", lambda r, o: (r / "val" / "2.jpg").unlink(), {},
                 "fairface_label_val.csv: line 3: image 'val/2.jpg' is missing (1 of 42 listed images are)",
                 id="data-fairface-image-missing"),
    # MNIST
    pytest.param("mnist", _idx_file("train-images-idx3-ubyte.gz", lambda d: d[:-100]), {},
                 "train-images-idx3-ubyte.gz: header says shape [40, 28, 28] but the file holds",
                 id="data-mnist-truncated"),
    pytest.param("mnist", _idx_file("t10k-labels-idx1-ubyte.gz", lambda d: b"\x00\x00\x09\x01" + d[4:]), {},
                 "t10k-labels-idx1-ubyte.gz: not an IDX file of unsigned bytes (magic 0x901",
                 id="data-mnist-bad-magic"),
    pytest.param("mnist", _idx_file("train-labels-idx1-ubyte.gz", lambda d: d[:4] + (30).to_bytes(4, "big") + d[8:38]),
                 {}, "train has 40 images but labels of shape (30,); the IDX files do not match",
                 id="data-mnist-count-mismatch"),
    pytest.param("mnist", _write("MNIST/raw/train-labels-idx1-ubyte.gz", b"\x1f\x8b\x08\x00garbage"), {},
                 "train-labels-idx1-ubyte.gz: cannot be read (", id="data-mnist-damaged-gzip"),
    pytest.param("mnist", lambda r, o: shutil.copy(r / "MNIST/raw/t10k-images-idx3-ubyte.gz",
                                                   r / "MNIST/raw/t10k-labels-idx1-ubyte.gz"), {},
                 "t10k-labels-idx1-ubyte.gz: an IDX file of 3 dimensions, expected 1 (labels)",
                 id="data-mnist-images-as-labels"),
    pytest.param("mnist", _link_out("MNIST/raw", folder=True), {},
                 "train-images-idx3-ubyte.gz: train-images-idx3-ubyte.gz resolves outside the dataset root",
                 id="data-mnist-symlink-outside"),
    # CIFAR-10 / CIFAR-100
    pytest.param("cifar10", _cifar10_batch(lambda b: {k: v for k, v in b.items() if k != "labels"}), {},
                 "data_batch_2: not a CIFAR-10 python batch (no 'data' or 'labels' entry)",
                 id="data-cifar10-no-labels"),
    pytest.param("cifar10", lambda r, o: (r / "cifar-10-batches-py" / "test_batch").write_bytes(
                     (r / "cifar-10-batches-py" / "test_batch").read_bytes()[:500]), {},
                 "test_batch: not a CIFAR-10 python batch (", id="data-cifar10-truncated-batch"),
    pytest.param("cifar10", _cifar10_batch(lambda b: {**b, "data": np.full((10, 3072), 0.5)}), {},
                 "data_batch_2: 'data' holds float64 values, not 8-bit pixels; not a CIFAR-10 python batch",
                 id="data-cifar10-pixels-not-integers"),
    pytest.param("cifar10", _cifar10_batch(lambda b: {**b, "data": np.full((10, 3072), 300, np.int64)}), {},
                 "data_batch_2: 'data' holds values 300..300, outside the pixels' 0..255",
                 id="data-cifar10-pixels-out-of-range"),
    pytest.param("cifar10", _link_out("cifar-10-batches-py/test_batch"), {},
                 "test_batch: test_batch resolves outside the dataset root", id="data-cifar10-batch-symlink-outside"),
    pytest.param("cifar100", _cifar100_meta, {}, "meta: no 'fine_label_names' entry; not CIFAR-100's meta file",
                 id="data-cifar100-meta-without-names"),
    pytest.param("cifar100", _cifar100_label, {}, "cifar-100-python: test labels outside 0..99; the files are damaged",
                 id="data-cifar100-label-out-of-range"),
    # a labelled folder
    pytest.param("folder", _folder_cell(4, "file", "../../elsewhere/x.jpg"), {},
                 "labels.csv: line 4: file '../../elsewhere/x.jpg' leaves the dataset root",
                 id="data-folder-path-leaves-root"),
    pytest.param("folder", _link_out("images/002.jpg"), {},
                 "labels.csv: line 4: file 'images/002.jpg' resolves outside the dataset root",
                 id="data-folder-symlink-outside"),
    pytest.param("folder", _link_out("labels.csv"), {}, "labels.csv: labels.csv resolves outside the dataset root",
                 id="data-folder-table-symlink-outside"),
    pytest.param("folder", _folder_cell(5, "file", "images/000.jpg"), {},
                 "labels.csv: line 5: file 'images/000.jpg' is listed twice (first on line 2)",
                 id="data-folder-duplicate-row"),
    pytest.param("folder", _folder_cell(6, "split", "training"), {},
                 "labels.csv: line 6: split 'training' is not one of train, val, test", id="data-folder-bad-split"),
]


@pytest.mark.parametrize("source, damage, params, message", PREPARE_CASES)
def test_prepare_refuses_a_damaged_dataset(tmp_path, pristine, source, damage, params, message):
    root, outside = tmp_path / "dataset", tmp_path / "elsewhere"
    shutil.copytree(pristine[source], root, symlinks=True)
    outside.mkdir()
    damage(root, outside)
    result = run_stage("prepare", ["--out", tmp_path / "prepared"], tmp_path,
                       {**SOURCE_PARAMS[source], "data.root": str(root), "prepare.image_size": 16,
                        "prepare.workers": 1, **params})
    assert_clean_failure(result, message, tmp_path / "prepared")


# --- verification: RFW, identity folders (BUPT), RecordIO -----------------------------------------------------


@pytest.fixture(scope="module")
def verification_raw(tmp_path_factory):
    from fairquant.data.recordio import write_recordio
    from tests.test_verification_data import _all_landmarks, make_rfw, make_training

    raw = tmp_path_factory.mktemp("verify") / "raw"
    make_rfw(raw / "rfw", races=("African", "Caucasian"), landmarks={"African": _all_landmarks("African")})
    make_training(raw / "race_per_7000", races=("African", "Caucasian"), per_identity=(4, 3, 2))
    for k in range(4):
        write_jpg(raw / "faces" / f"{k}.jpg", (20 * k, 100, 100))
    jpegs = []
    for k in range(6):
        write_jpg(raw / "tmp.jpg", (30 * k, 90, 40), (20, 16))
        jpegs.append((raw / "tmp.jpg").read_bytes())
    (raw / "tmp.jpg").unlink()
    write_recordio(raw / "rec", {0: jpegs[:3], 5: jpegs[3:]})
    return raw


def _verify_data(raw: Path, **changes) -> dict:
    return {"source": "real", "train_layout": "identity_folders", "train_root": str(raw / "race_per_7000"),
            "train_race_map": None, "rfw_root": str(raw / "rfw"), "races": ["African", "Caucasian"],
            "max_train_identities": None, "min_images_per_identity": 2, "synthetic_folder": str(raw / "faces"),
            "image_size": 16, "calibration_size": 4, "seed": 0, "workers": 1, **changes}


RFW_DATA = "rfw/test/data/African"
AFRICAN_PAIRS, AFRICAN_LMK = "rfw/test/txts/African/African_pairs.txt", "rfw/test/txts/African/African_lmk.txt"
RECORDIO = {"train_layout": "recordio", "train_root": "rec"}


def _lmk_fields(count: int):
    return lambda raw, outside: _edit(raw / AFRICAN_LMK, 2, lambda t: "\t".join((t.split() + ["1.0"] * 3)[:count]))


def _idx_offset(raw, outside):
    lines = (raw / "rec" / "train.idx").read_text().splitlines()
    lines[1] = "2\t99999999"
    (raw / "rec" / "train.idx").write_text("\n".join(lines) + "\n")


def _bad_record_magic(raw, outside):
    blob = bytearray((raw / "rec" / "train.rec").read_bytes())
    offset = int((raw / "rec" / "train.idx").read_text().splitlines()[1].split("\t")[1])  # record 2
    blob[offset:offset + 4] = b"\0\0\0\0"
    (raw / "rec" / "train.rec").write_bytes(bytes(blob))


VERIFY_CASES = [
    pytest.param(lambda r, o: _edit(r / AFRICAN_PAIRS, 1, lambda t: t.rsplit("\t", 1)[0] + "\t9"), {},
                 "African_pairs.txt:1: image 9 of 'm.0aa' is not in", id="data-rfw-pairs-missing-image"),
    pytest.param(lambda r, o: None, {"races": ["African", "Asian"]},
                 "race Asian is listed in verify.data.races but", id="data-rfw-race-not-on-disk"),
    pytest.param(_write(AFRICAN_PAIRS, b"\xff\xfe\x00binary"), {}, "African_pairs.txt: not a text file (",
                 id="data-rfw-pairs-not-text"),
    pytest.param(_lmk_fields(14), {}, "African_lmk.txt:2: expected an image path then 10 numbers (5 points x, y), "
                 "the identity's label between them or not: 12 or 11 fields, found 14",
                 id="data-rfw-landmarks-extra-columns"),
    pytest.param(_lmk_fields(8), {}, "African_lmk.txt:2: expected an image path then 10 numbers",
                 id="data-rfw-landmarks-missing-columns"),
    pytest.param(lambda r, o: _edit(r / AFRICAN_LMK, 3, lambda t: "/test/data/African/../x/m.0aa_0002.jpg\t"
                                    + t.split("\t", 1)[1]), {},
                 "African_lmk.txt:3: image path '/test/data/African/../x/m.0aa_0002.jpg' is not inside the dataset",
                 id="data-rfw-landmarks-path-leaves-root"),
    pytest.param(_link_out(f"{RFW_DATA}/m.0aa", folder=True), {},
                 "/m.0aa resolves outside the dataset root", id="data-rfw-identity-symlink-outside"),
    pytest.param(_link_out(f"{RFW_DATA}/m.0bb/m.0bb_0002.jpg"), {},
                 "image m.0bb_0002.jpg resolves outside the dataset root", id="data-rfw-image-symlink-outside"),
    pytest.param(_write(f"{RFW_DATA}/m.0cc/m.0cc_0001.jpg", b"not a jpeg"), {},
                 "m.0cc_0001.jpg: cannot be decoded as an image; replace the file", id="data-rfw-image-not-an-image"),
    pytest.param(_link_out("race_per_7000/African/Af0", folder=True), {},
                 "race_per_7000/African/Af0: identity folder resolves outside the dataset root",
                 id="data-bupt-identity-symlink-outside"),
    pytest.param(_link_out("race_per_7000/Caucasian/Ca1/Ca1_0002.jpg"), {},
                 "image Ca1_0002.jpg resolves outside the dataset root", id="data-bupt-image-symlink-outside"),
    pytest.param(lambda r, o: (r / "race_per_7000/African/Af0/Af0_0009.jpg").symlink_to(
                     r / "race_per_7000/Caucasian/Ca1/Ca1_0002.jpg"), {},
                 "Af0_0009.jpg: a link to ", id="data-bupt-link-to-own-image"),
    pytest.param(lambda r, o: None, {"min_images_per_identity": 5},
                 "has 5 images or more (the most is 4); lower verify.data.min_images_per_identity",
                 id="data-bupt-identities-with-too-few-images"),
    pytest.param(_write("race_per_7000/African/Af1/Af1_0001.jpg", b""), {},
                 "Af1_0001.jpg: cannot be decoded as an image", id="data-bupt-empty-image"),
    pytest.param(_idx_offset, RECORDIO, "record 2: train.idx gives offset 99999999, past the end of the file",
                 id="data-recordio-index-past-end"),
    pytest.param(_bad_record_magic, RECORDIO, "train.rec record 2: bad magic 0x00000000", id="data-recordio-bad-magic"),
    pytest.param(_link_out("rec/train.rec"), RECORDIO, "train.rec resolves outside the dataset root",
                 id="data-recordio-symlink-outside"),
    pytest.param(_race_map_outside, {**RECORDIO, "train_race_map": "rec/race_map.csv"},
                 "race_map.csv: verify.data.train_race_map race_map.csv resolves outside the dataset root",
                 id="data-recordio-race-map-symlink-outside"),
]


@pytest.mark.parametrize("damage, changes, message", VERIFY_CASES)
def test_verify_prepare_refuses_a_damaged_dataset(tmp_path, verification_raw, damage, changes, message):
    raw, outside = tmp_path / "raw", tmp_path / "elsewhere"
    shutil.copytree(verification_raw, raw, symlinks=True)
    outside.mkdir()
    damage(raw, outside)
    changes = {k: str(raw / v) if k in ("train_root", "train_race_map") else v for k, v in changes.items()}
    result = run_stage("verify_prepare", ["--out", tmp_path / "prepared"], tmp_path,
                       {"verify.data": _verify_data(raw, **changes)})
    assert_clean_failure(result, message, tmp_path / "prepared")


CASES = PREPARE_CASES + VERIFY_CASES


# --- what is read correctly, not refused -------------------------------------------------------------------------


def test_each_layout_reads_undamaged(tmp_path, pristine, verification_raw):
    """The pristine fixtures pass: every case above fails for its damage, not for the fixture."""
    for source, params in SOURCE_PARAMS.items():
        result = run_stage("prepare", ["--out", tmp_path / source], tmp_path,
                           {**params, "data.root": str(pristine[source]), "prepare.image_size": 16,
                            "prepare.workers": 1})
        assert result.returncode == 0, (source, result.stderr)
    for changes in ({}, {**RECORDIO, "train_root": str(verification_raw / "rec")}):
        result = run_stage("verify_prepare", ["--out", tmp_path / f"v{len(changes)}"], tmp_path,
                           {"verify.data": _verify_data(verification_raw, **changes)})
        assert result.returncode == 0, result.stderr


def test_a_fairface_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path, pristine):
    from fairquant.data.loaders import load_dataset
    from fairquant.params import DataParams

    root = Path(shutil.copytree(pristine["fairface"], tmp_path / "fairface"))
    for name in ("fairface_label_train.csv", "fairface_label_val.csv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    params = DataParams(source="fairface", root=str(root), target="gender", protected=["race"])
    with_bom = load_dataset(params)
    without = load_dataset(params.model_copy(update={"root": str(pristine["fairface"])}))
    assert with_bom.table.drop(columns="sample_id").equals(without.table.drop(columns="sample_id"))
    assert list(with_bom.table["sample_id"]) == list(without.table["sample_id"])


def test_a_dataset_root_that_is_itself_a_symlink_is_read(tmp_path, tiny_celeba):
    """Only what leads out of the root is refused: the root may be a link to another disk."""
    from fairquant.data.loaders import load_dataset
    from fairquant.params import DataParams

    (tmp_path / "celeba").symlink_to(tiny_celeba, target_is_directory=True)
    raw = load_dataset(DataParams(source="celeba", root=str(tmp_path / "celeba")))
    assert len(raw.paths) == 120 and all(p.is_relative_to(tiny_celeba.resolve()) for p in raw.paths)


def test_utkface_reads_upper_case_suffixes_and_returns_resolved_paths(tmp_path, pristine):
    """Found in review: `*.JPG` copies were ignored; the paths returned were the names as listed, not resolved."""
    from fairquant.data.loaders import load_dataset
    from fairquant.params import DataParams

    root = Path(shutil.copytree(pristine["utkface"], tmp_path / "utkface"))
    for path in list((root / "UTKFace").iterdir())[:10]:
        path.rename(path.with_name(path.name.replace(".jpg.chip.jpg", ".JPG.chip.JPG")))
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    raw = load_dataset(DataParams(source="utkface", root=str(tmp_path / "link"), target="gender", protected=["race"]))
    assert len(raw.paths) == 60 and raw.skipped == {"malformed_names": 0}
    assert all(path == path.resolve() and path.is_relative_to(root.resolve()) for path in raw.paths)
