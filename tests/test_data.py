import gzip
import pickle
import shutil
import typing

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairquant.data.loaders import READERS, load_dataset
from fairquant.data.prepare import assert_training_rows, build_image_store, calibration_indices, decode_image
from fairquant.data.synthetic import CELEBA_ATTRIBUTES, generate_celeba_like
from fairquant.errors import FairquantError
from fairquant.params import DataParams, DatasetName, GenerateParams


def test_generated_dataset_is_the_celeba_layout(tiny_celeba):
    lines = (tiny_celeba / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "120" and lines[1].split() == CELEBA_ATTRIBUTES
    assert set(lines[2].split()[1:]) <= {"-1", "1"}
    partition = (tiny_celeba / "list_eval_partition.txt").read_text().split()
    assert set(partition[1::2]) == {"0", "1", "2"}
    assert len(list((tiny_celeba / "img_align_celeba").glob("*.jpg"))) == 120
    assert "SYNTHETIC" in (tiny_celeba / "README.txt").read_text()


def test_generator_is_deterministic(tmp_path):
    params = GenerateParams(identities=10, images_per_identity=2, render_size=32, workers=1)
    generate_celeba_like(params, tmp_path / "a")
    generate_celeba_like(params, tmp_path / "b")
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba/000007.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_splits_are_identity_disjoint(tiny_celeba):
    identity = pd.read_csv(tiny_celeba / "identity_CelebA.txt", sep=" ", header=None, names=["f", "id"])
    part = pd.read_csv(tiny_celeba / "list_eval_partition.txt", sep=" ", header=None, names=["f", "p"])
    assert (identity.merge(part).groupby("id")["p"].nunique() == 1).all()


def test_every_data_source_has_a_reader():
    assert set(typing.get_args(DatasetName)) == set(READERS)


def test_a_source_without_a_reader_is_refused_not_read_as_another(tmp_path):
    with pytest.raises(FairquantError, match=r"data.source 'imagenet' has no reader; known sources: celeba, cifar10, cifar100, fairface, "):
        load_dataset(DataParams.model_construct(source="imagenet", root=str(tmp_path)))


def test_celeba_loader_reads_target_and_protected(tiny_celeba):
    raw = load_dataset(DataParams(root=str(tiny_celeba), target="Smiling", protected=["Male", "Eyeglasses"]))
    assert list(raw.table.columns) == ["sample_id", "split", "y_true", "Male", "Eyeglasses"]
    assert set(raw.table["Male"]) <= {"Male", "Female"}
    assert set(raw.table["Eyeglasses"]) <= {"Eyeglasses", "not Eyeglasses"}
    assert len(raw.paths) == 120 and raw.paths[0].name == "000001.jpg"


def test_unknown_attribute_lists_valid_ones(tiny_celeba):
    with pytest.raises(FairquantError, match=r"unknown target attribute 'Smile'; valid attributes: 5_o_Clock_Shadow, .*Smiling"):
        load_dataset(DataParams(root=str(tiny_celeba), target="Smile"))
    with pytest.raises(FairquantError, match="unknown protected attribute 'Race'"):
        load_dataset(DataParams(root=str(tiny_celeba), protected=["Race"]))


@pytest.mark.parametrize("missing", ["list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"])
def test_celeba_names_the_missing_file(tiny_celeba, tmp_path, missing):
    root = tmp_path / "copy"
    shutil.copytree(tiny_celeba, root)
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FairquantError, match=f"{missing}: missing"):
        load_dataset(DataParams(root=str(root)))


def test_missing_root():
    with pytest.raises(FairquantError, match="dataset root not found; set data.root"):
        load_dataset(DataParams(root="/nonexistent/celeba"))


def _jpeg(path, color=(120, 90, 60)):
    Image.new("RGB", (40, 48), color).save(path)


def test_utkface_names_and_malformed_files(tmp_path):
    names = ["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_1_20170116174525126.jpg.chip.jpg",
             "70_1_2_20170116174525127.jpg.chip.jpg", "8_0_3_20170116174525128.jpg.chip.jpg",
             "39_1_20170116174525125.jpg.chip.jpg"]  # the last lacks race: malformed, as in the real set
    for name in names:
        _jpeg(tmp_path / name)
    raw = load_dataset(DataParams(source="utkface", root=str(tmp_path), target="gender", protected=["race", "age_group"]))
    assert raw.skipped == {"malformed_names": 1}
    table = raw.table.set_index("sample_id")
    assert table.loc[names[1], "y_true"] == 1 and table.loc[names[0], "y_true"] == 0  # gender 1 = Female = positive
    assert table.loc[names[1], "race"] == "Black" and table.loc[names[3], "race"] == "Indian"
    assert table.loc[names[2], "age_group"] == "60+"


def test_fairface_csvs(tmp_path):
    for name, rows in (("train", 6), ("val", 3)):
        (tmp_path / name).mkdir()
        frame = pd.DataFrame({"file": [f"{name}/{i}.jpg" for i in range(rows)],
                              "age": ["20-29"] * rows, "gender": ["Male", "Female"] * (rows // 2) + ["Male"] * (rows % 2),
                              "race": ["East Asian", "Black", "White"] * (rows // 3), "service_test": [True] * rows})
        frame.to_csv(tmp_path / f"fairface_label_{name}.csv", index=False)
        for file in frame["file"]:  # the reader refuses a listed image that is missing
            (tmp_path / file).touch()
    raw = load_dataset(DataParams(source="fairface", root=str(tmp_path), target="gender", protected=["race"]))
    assert (raw.table["split"] == "test").sum() == 3  # the official val CSV is our test split
    assert set(raw.table["race"]) == {"East Asian", "Black", "White"}
    with pytest.raises(FairquantError, match="target 'race' is not binary; set data.positive"):
        load_dataset(DataParams(source="fairface", root=str(tmp_path), target="race", protected=["gender"]))
    raw = load_dataset(DataParams(source="fairface", root=str(tmp_path), target="race", positive=["White"],
                                  protected=["gender"]))
    assert raw.table["y_true"].sum() == 3


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_with_class_imbalance(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 20)
    _write_idx(raw_dir / "train-images-idx3-ubyte.gz", np.zeros((200, 28, 28)))
    _write_idx(raw_dir / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(raw_dir / "t10k-images-idx3-ubyte.gz", np.zeros((50, 28, 28)))
    _write_idx(raw_dir / "t10k-labels-idx1-ubyte.gz", np.repeat(np.arange(10), 5))
    raw = load_dataset(DataParams(source="mnist", root=str(tmp_path), target="class", positive=["0", "1", "2", "3", "4"],
                                  protected=["class"], class_imbalance=0.25, minority_classes=[7]))
    train = raw.table[raw.table["split"] != "test"]
    assert (train["class"] == "7").sum() == 5 and (train["class"] == "3").sum() == 20
    assert raw.arrays.shape == (len(raw.table), 28, 28, 1)
    assert (raw.table["split"] == "test").sum() == 50


def test_cifar10_batches_are_read_without_executing_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.full((4, 3072), 7, dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    raw = load_dataset(DataParams(source="cifar10", root=str(tmp_path), target="class", positive=["cat"],
                                  protected=["class"]))
    assert raw.arrays.shape == (24, 32, 32, 3) and raw.table["y_true"].sum() == 6

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(FairquantError, match="refusing to load builtins.print"):
        load_dataset(DataParams(source="cifar10", root=str(tmp_path), target="class", positive=["cat"],
                                protected=["class"]))


def test_corrupt_images_are_skipped_and_counted(tiny_celeba, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_celeba, root)
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg")
    raw = load_dataset(DataParams(root=str(root)))
    table, images, dropped = build_image_store(raw, 16, 1, max_corrupt_fraction=0.05)
    assert dropped["corrupt_images"] == 1 and len(table) == 119 and images.shape == (119, 16, 16, 3)
    assert "000003.jpg" not in set(table["sample_id"]) and table["row"].tolist() == list(range(119))
    with pytest.raises(FairquantError, match=r"1 of 120 images could not be decoded .*000003.jpg.*max_corrupt_fraction=0"):
        build_image_store(raw, 16, 1, max_corrupt_fraction=0.0)


def test_calibration_comes_from_training_split_only(tiny_celeba):
    raw = load_dataset(DataParams(root=str(tiny_celeba)))
    table, _, _ = build_image_store(raw, 16, 1, 0.0)
    rows = calibration_indices(table, 20, seed=0)
    assert set(table.set_index("row").loc[rows, "split"]) == {"train"}
    test_row = table.loc[table["split"] == "test", "row"].iloc[0]
    with pytest.raises(FairquantError, match="calibration set contains 1 test images"):
        assert_training_rows(table, np.append(rows, test_row))
    n_train = int((table["split"] == "train").sum())
    with pytest.raises(FairquantError, match=f"calibration.size={n_train + 1} is larger than the training split"):
        calibration_indices(table, n_train + 1, seed=0)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 images: the tiny set then spans several chunks, several in flight at once."""
    import fairquant.data.prepare as prepare

    monkeypatch.setattr(prepare, "CHUNK", 16)


@pytest.mark.parametrize("workers", [1, 2])
def test_store_written_to_disk_equals_the_in_memory_decode(tiny_celeba, tmp_path, small_chunks, workers):
    raw = load_dataset(DataParams(root=str(tiny_celeba)))
    expected = np.stack([decode_image(path, 16) for path in raw.paths])
    table, in_memory, _ = build_image_store(raw, 16, workers, 0.0)
    disk_table, on_disk, dropped = build_image_store(raw, 16, workers, 0.0, out=tmp_path / "images.npy")
    assert isinstance(on_disk, np.memmap) and not on_disk.flags.writeable
    assert np.array_equal(in_memory, expected) and np.array_equal(on_disk, expected)
    pd.testing.assert_frame_equal(table, disk_table)
    assert dropped["corrupt_images"] == 0 and table["row"].tolist() == list(range(120))
    assert list(tmp_path.iterdir()) == [tmp_path / "images.npy"]  # no temporary file left beside it


def test_corrupt_files_leave_the_store_compact_and_rows_consistent(tiny_celeba, tmp_path, small_chunks):
    root = tmp_path / "copy"
    shutil.copytree(tiny_celeba, root)
    corrupt = ["000003.jpg", "000040.jpg", "000120.jpg"]  # in the first, third and last chunk
    for name in corrupt:
        (root / "img_align_celeba" / name).write_bytes(b"\xff\xd8 truncated")
    raw = load_dataset(DataParams(root=str(root)))
    store = tmp_path / "images.npy"
    table, images, dropped = build_image_store(raw, 16, 2, max_corrupt_fraction=0.05, out=store)
    assert dropped["corrupt_images"] == 3 and images.shape == (117, 16, 16, 3)
    assert store.stat().st_size == images.offset + 117 * 16 * 16 * 3  # truncated to the rows kept
    assert not set(corrupt) & set(table["sample_id"]) and table["row"].tolist() == list(range(117))
    for sample_id, row in zip(table["sample_id"], table["row"]):
        assert np.array_equal(images[row], decode_image(root / "img_align_celeba" / sample_id, 16)), sample_id


def test_too_many_corrupt_files_write_nothing(tiny_celeba, tmp_path, small_chunks):
    root = tmp_path / "copy"
    shutil.copytree(tiny_celeba, root)
    (root / "img_align_celeba" / "000050.jpg").write_bytes(b"not a jpeg")
    raw = load_dataset(DataParams(root=str(root)))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FairquantError, match=r"1 of 120 images could not be decoded .*000050.jpg"):
        build_image_store(raw, 16, 2, max_corrupt_fraction=0.0, out=out / "images.npy")
    assert list(out.iterdir()) == []


def test_pixel_arrays_are_stored_chunk_by_chunk(tmp_path, small_chunks):
    from fairquant.data.loaders import RawDataset

    pixels = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    table = pd.DataFrame({"sample_id": [str(i) for i in range(40)], "split": "train", "y_true": np.int8(0)})
    _, images, _ = build_image_store(RawDataset(table, arrays=pixels), 8, 1, 0.0, out=tmp_path / "images.npy")
    assert np.array_equal(images, np.repeat(pixels, 3, axis=-1))


def test_a_chunk_whose_files_are_all_corrupt_is_dropped_whole(tiny_celeba, tmp_path, monkeypatch):
    """Found in review: an all-corrupt last chunk crashed the memory-mapped writer (empty append)."""
    import fairquant.data.prepare as prepare

    monkeypatch.setattr(prepare, "CHUNK", 7)  # 120 images: the last chunk is 000120.jpg alone
    root = tmp_path / "copy"
    shutil.copytree(tiny_celeba, root)
    (root / "img_align_celeba" / "000120.jpg").write_bytes(b"not a jpeg")
    raw = load_dataset(DataParams(root=str(root)))
    table, images, dropped = build_image_store(raw, 16, 1, max_corrupt_fraction=0.05, out=tmp_path / "images.npy")
    assert dropped["corrupt_images"] == 1 and images.shape == (119, 16, 16, 3) and len(table) == 119
