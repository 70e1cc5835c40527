"""Calibration sets: never test images, balanced counts, synthetic folders, ZeroQ distillation, composition."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairquant.compress import calibration
from fairquant.data.prepare import calibration_indices
from fairquant.errors import FairquantError
from fairquant.models import build_model


@pytest.fixture
def table():
    """40 rows: train 0-23, val 24-31, test 32-39; group Male and label in a known pattern."""
    rows = np.arange(40)
    split = np.where(rows < 24, "train", np.where(rows < 32, "val", "test"))
    return pd.DataFrame({"row": rows, "split": split, "y_true": rows % 2, "Male": (rows // 2) % 2,
                         "sample_id": [f"{r:03d}" for r in rows]})


def test_train_and_balanced_sets_never_take_a_test_or_val_image(table):
    test_rows = set(table.loc[table["split"] != "train", "row"])
    for seed in range(20):
        assert not set(calibration_indices(table, 24, seed)) & test_rows
        assert not set(calibration.balanced_rows(table, ["Male"], 24, seed)) & test_rows


def test_a_leaked_test_row_is_caught(table):
    from fairquant.data.prepare import assert_training_rows

    with pytest.raises(FairquantError, match="contains 1 test images"):
        assert_training_rows(table, np.array([0, 5, 35]))


def test_balanced_set_has_equal_counts_per_group_and_label(table):
    rows = calibration.balanced_rows(table, ["Male"], 20, 0)
    chosen = table.set_index("row").loc[rows]
    counts = chosen.groupby(["Male", "y_true"]).size()
    assert len(counts) == 4 and (counts == 5).all()  # 20 // 4 cells
    assert calibration.true_composition(table, rows, ["Male"]) == {"0": 0.5, "1": 0.5}


def test_balanced_set_larger_than_a_cell_is_a_clear_error(table):
    with pytest.raises(FairquantError, match=r"needs 7 training images per group x label cell.*at most 24"):
        calibration.balanced_rows(table, ["Male"], 28, 0)
    with pytest.raises(FairquantError, match="larger than the training split"):
        calibration_indices(table, 25, 0)


def test_synthetic_folder_reads_every_image_and_counts_unreadable(tmp_path):
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not an image: ignored")
    images, info = calibration.folder_images(folder, 16)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert info == {"files": 4, "skipped_unreadable": 1, "skipped_first": ["broken.jpg"]}


def test_missing_or_empty_synthetic_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FairquantError, match="does not exist; set calibration.synthetic_folder"):
        calibration.folder_images(tmp_path / "nope", 16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("x")
    with pytest.raises(FairquantError, match="has no image files"):
        calibration.folder_images(tmp_path / "empty", 16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(FairquantError, match="none of the 1 image files"):
        calibration.folder_images(tmp_path / "bad", 16)


@pytest.mark.slow
def test_distilled_images_match_batchnorm_statistics_better_than_noise():
    torch.manual_seed(0)
    model = build_model("resnet18", small_input_stem=True)
    model.train()
    with torch.no_grad():  # give the BatchNorms non-trivial running statistics to match
        for _ in range(5):
            model(torch.randn(16, 3, 16, 16) * 0.5 + 0.3)
    model.eval()
    stats = calibration._BatchNormStatistics(model)
    noise = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        model((noise - 0.5) / 0.25)
    noise_loss = float(stats.loss())
    stats.remove()
    images, info = calibration.distilled_images(model, 8, 16, iterations=30, lr=0.1, seed=0)
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert info["final_bn_loss"] < 0.7 * noise_loss  # measured: 271 -> 143 after 30 steps
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_group_classifier_reports_validation_accuracy_and_a_composition():
    rng = np.random.default_rng(0)
    n = 120
    male = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 8, 8, 3), dtype=np.uint8)
    images[male == 1] += 150  # the groups differ visibly, so features separate them
    table = pd.DataFrame({"row": np.arange(n), "split": np.where(np.arange(n) < 80, "train", "val"),
                          "y_true": rng.integers(0, 2, n), "Male": male})
    torch.manual_seed(0)
    model = build_model("resnet18", small_input_stem=True).eval()
    groups = calibration.GroupClassifier(model, table, images, ["Male"], seed=0)
    assert groups.quality["val_accuracy"] > 0.9
    composition = groups.composition(images[male == 1])
    assert set(composition) == {"0", "1"} and composition["1"] > 0.9
    assert sum(composition.values()) == pytest.approx(1.0)


def test_load_set_rejects_a_size_larger_than_the_set(tmp_path):
    from fairquant.io import write_images, write_json

    write_images(tmp_path / "images.npy", np.zeros((5, 8, 8, 3), np.uint8))
    write_json(tmp_path / "info.json", {"set": "synthetic"})
    assert calibration.load_set(tmp_path, None, "k")[0].shape[0] == 5
    with pytest.raises(FairquantError, match="quantize_ptq.calibration_size=6 is larger than the 'synthetic' calibration set"):
        calibration.load_set(tmp_path, 6, "quantize_ptq.calibration_size")


def test_a_leaked_validation_row_is_caught(table):
    with pytest.raises(FairquantError, match=r"contains 1 val images \(first row 26\); calibration data must come "
                                             r"from the training split"):
        calibration.assert_training_rows(table, np.array([0, 5, 26]))
    with pytest.raises(FairquantError, match="contains 1 test images"):
        calibration.assert_training_rows(table, np.array([0, 35]))
    calibration.assert_training_rows(table, np.arange(24))


def test_cells_of_names_group_and_label(table):
    assert calibration.cells_of(table, np.array([0, 3, 2]), ["Male"]).tolist() == ["0 & y=0", "1 & y=1", "1 & y=0"]


def test_a_folder_image_with_the_pixels_of_a_test_image_is_refused(tmp_path, table):
    store = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.fromarray(store[3]).save(folder / "a.png")  # a training image: allowed
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(folder / "b.png")
    held_out = calibration.held_out_hashes(table, store)
    assert len(held_out) == 16  # val rows 24-31 and test rows 32-39
    assert calibration.folder_images(folder, 16, held_out)[0].shape == (2, 16, 16, 3)
    Image.fromarray(store[35]).save(folder / "c.png")  # a copy of test row 35 (sample_id 035)
    with pytest.raises(FairquantError, match=r"synthetic calibration image .*c\.png has exactly the pixels of test "
                                             r"image 035; remove it from .*faces"):
        calibration.folder_images(folder, 16, held_out)


def _built_set(folder, n, cells=None):
    from fairquant.io import write_images, write_json

    folder.mkdir()
    pixels = np.zeros((n, 2, 2, 3), np.uint8)
    pixels[:, 0, 0, 0] = np.arange(n)  # image i is recognisable by its first pixel
    write_images(folder / "images.npy", pixels)
    write_json(folder / "info.json", {"set": "balanced" if cells is not None else "train"})
    if cells is not None:
        np.save(folder / "cells.npy", cells)
    return folder


def test_a_smaller_calibration_size_is_a_seeded_random_subset(tmp_path):
    folder = _built_set(tmp_path / "train", 64)
    ids = {seed: calibration.load_set(folder, 16, "k", seed)[0][:, 0, 0, 0].tolist() for seed in (0, 1)}
    assert ids[0] == calibration.load_set(folder, 16, "k", 0)[0][:, 0, 0, 0].tolist()  # same seed, same subset
    assert ids[0] != ids[1] and ids[0] != list(range(16)) and len(set(ids[0])) == 16
    assert calibration.load_set(folder, None, "k")[0].shape[0] == 64


def test_a_smaller_balanced_set_keeps_its_cells_equal(tmp_path):
    """64 images sorted by row, the first 32 in one cell: the first 16 would all be from that cell."""
    folder = _built_set(tmp_path / "balanced", 64, np.repeat(np.arange(2, dtype=np.int16), 32))
    for seed in range(5):
        ids = calibration.load_set(folder, 16, "k", seed)[0][:, 0, 0, 0]
        assert (ids < 32).sum() == 8 and (ids >= 32).sum() == 8
    ids = calibration.load_set(folder, 15, "k", 0)[0][:, 0, 0, 0]
    assert sorted([(ids < 32).sum(), (ids >= 32).sum()]) == [7, 8]  # cells differ by at most one
    with pytest.raises(FairquantError, match=r"quantize_ptq.calibration_size=1 is smaller than the 2 group x label "
                                             r"cells of the 'balanced' set"):
        calibration.load_set(folder, 1, "quantize_ptq.calibration_size", 0)


def test_a_verification_calibration_set_of_another_image_size_is_refused(tmp_path):
    """The verification branch's calibration images must be the prepared data's size (the model's input): a set
    left from a run at another size was read as it was."""
    from fairquant.io import write_json
    from fairquant.verify.variants import VerificationData, calibration_images

    folder = tmp_path / "calibration" / "train"
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((8, 8, 8, 3), dtype=np.uint8))
    write_json(folder / "info.json", {"set": "train", "size": 8, "image_size": 8})
    np.save(folder / "cells.npy", np.array(["African", "Asian"] * 4))
    data = VerificationData(np.zeros((1, 16, 16, 3), np.uint8), np.arange(1), np.zeros(1, np.int64),
                            tmp_path / "calibration", image_size=16)
    with pytest.raises(FairquantError, match=r"not uint8 RGB images of 16x16 px .* re-run verify_prepare \(dvc repro"):
        calibration_images(data, "train", 4, seed=0)
    same = VerificationData(data.train_images, data.train_rows, data.identities, data.calibration_dir, image_size=8)
    images, info = calibration_images(same, "train", 4, seed=0)
    assert images.shape == (4, 8, 8, 3) and info["set"] == "train"
