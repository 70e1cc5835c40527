"""Troubleshooting catalogue: data artifacts: predictions, prepared data, the verification folder and the evaluations the report reads (README, Troubleshooting, "Artifacts and the command line"). Each case id
is a README row.

Each case damages one input as a user of a shared DVC remote might find it, runs the stage that reads it as a user
would, and checks the promise: exit status 2, one line on stderr naming the problem and the fix, and nothing
written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_prepared, write_prepared_samples

from tests.catalogue_builders import user_file
from tests.test_stages import ROOT, assert_clean_failure, run_stage

# ---------------------------------------------------------------- predictions read by evaluate


def _predictions(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    from fairquant.results import PredictionsInfo

    folder.mkdir(parents=True)
    frame.to_parquet(folder / "test.parquet", index=False)
    PredictionsInfo(name=name, kind="fp32" if name == "fp32" else "fakequant", kernels="fp32", size_bytes=10,
                    synthetic=True).write(folder)
    return folder


def _good_frame(n: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y_true = (np.arange(n) % 2).astype("int8")
    score = rng.uniform(0, 1, n).astype("float32")
    return pd.DataFrame({"sample_id": [f"{i:05d}.jpg" for i in range(n)], "y_true": y_true, "y_score": score,
                         "y_pred": (score >= 0.5).astype("int8"), "Male": np.where(np.arange(n) % 3 == 0, "1", "0")})


def _damage_column(column, values):
    def damage(frame):
        frame[column] = values(frame)
        return frame
    return damage


EVALUATE = {"evaluate.privileged_group": "0", "evaluate.bootstrap": 100}

PREDICTION_CASES = [
    pytest.param(lambda f: f.drop(columns="y_pred"), "lack the column 'y_pred'", id="artifact-predictions-no-y-pred"),
    pytest.param(_damage_column("y_pred", lambda f: f["y_score"]), "y_pred must hold the labels 0 and 1 as integers",
                 id="artifact-predictions-scores-in-y-pred"),
    pytest.param(_damage_column("y_pred", lambda f: f["y_pred"].astype("float64")),
                 "y_pred must hold the labels 0 and 1 as integers", id="artifact-predictions-float-labels"),
    pytest.param(_damage_column("y_pred", lambda f: (f["y_pred"] * 3).astype("int8")),
                 "y_pred must hold the labels 0 and 1 as integers", id="artifact-predictions-label-out-of-range"),
    pytest.param(_damage_column("y_score", lambda f: f["y_score"].where(f.index != 3, np.nan)),
                 "y_score must hold probabilities in [0, 1]", id="artifact-predictions-score-nan"),
    pytest.param(_damage_column("y_score", lambda f: f["y_score"] * 4 - 2),
                 "y_score must hold probabilities in [0, 1]", id="artifact-predictions-score-out-of-range"),
    pytest.param(_damage_column("Male", lambda f: f["Male"].where(f.index != 2, None)),
                 "'Male' holds null values", id="artifact-predictions-null-group"),
    pytest.param(_damage_column("y_score", lambda f: (1 - f["y_score"]).astype("float32")),
                 "y_pred 1 disagrees with y_score", id="artifact-predictions-labels-not-from-scores"),
    pytest.param(_damage_column("sample_id", lambda f: np.arange(len(f))),
                 "sample_id should hold the prepared samples' names (strings), found int64",
                 id="artifact-predictions-integer-sample-ids"),
]


@pytest.mark.parametrize("damage, message", PREDICTION_CASES)
def test_evaluate_refuses_damaged_predictions(tmp_path, damage, message):
    fp32 = _predictions(tmp_path / "fp32", "fp32", _good_frame())
    variant = _predictions(tmp_path / "ptq", "ptq", damage(_good_frame()))
    out = tmp_path / "eval"
    result = run_stage("evaluate", [str(fp32), str(variant), "--out", str(out)], tmp_path, EVALUATE)
    assert_clean_failure(result, message, out)


def _study_predictions(root: Path, damage) -> Path:
    """One seed's predictions folder as the predict, mitigate and latency stages leave it for the shipped params:
    every slot, named as params.yaml names it; ``damage(root, params)`` changes it."""
    from fairquant.mitigate.slots import LATENCY, predictions_folder, study_model_names
    from fairquant.params import load_params
    from fairquant.results import PredictionsInfo

    params = load_params(ROOT / "params.yaml")
    for slot, (name, _) in study_model_names(params).items():
        folder = _predictions(predictions_folder(root, slot, params.mitigate), name, _good_frame())
        if "+" in slot and slot.split("+")[-1] in params.mitigate.after:  # post-processed: labels need not follow
            PredictionsInfo(name=name, kind="fp32", kernels="fp32", size_bytes=10, synthetic=True,
                            details={"mitigation": {"method": "caleqodds", "family": "post-processing"}}).write(folder)
    (root / LATENCY).write_text(json.dumps({slot: {"eager": {"median_ms": 1.0}} for slot in ("fp32", "ptq")}))
    damage(root, params)
    return root


def _slot_from(slot: str, source: str):
    def damage(root: Path, params) -> None:
        from fairquant.mitigate.slots import predictions_folder

        target = predictions_folder(root, slot, params.mitigate)
        shutil.rmtree(target)
        shutil.copytree(predictions_folder(root, source, params.mitigate), target)
    return damage


def _every_slot(change):
    """``change`` applied to every slot's test.parquet (consistently: the folders still agree with one another)."""
    def damage(root: Path, params) -> None:
        for path in root.glob("*/*/test.parquet"):
            path.unlink()
            change(_good_frame()).to_parquet(path, index=False)
    return damage


def _one_slot(slot: str, change):
    def damage(root: Path, params) -> None:
        from fairquant.mitigate.slots import predictions_folder

        path = predictions_folder(root, slot, params.mitigate) / "test.parquet"
        frame = pd.read_parquet(path)
        path.unlink()
        change(frame).to_parquet(path, index=False)
    return damage


def _flip_groups(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(Male=np.where(frame["Male"] == "1", "0", "1"))


STUDY_CASES = [
    pytest.param(_slot_from("qat", "ptq"), "variants/qat holds 'ptq-w8a8-train', but the qat slot holds 'qat-w4a4'",
                 id="artifact-predictions-slot-holds-another-variant"),
    pytest.param(_every_slot(lambda f: f.assign(sample_id="other_" + f["sample_id"])),
                 "predictions of fp32 and the prepared test split", id="artifact-predictions-renamed-samples"),
    pytest.param(_every_slot(lambda f: f.assign(y_true=f["y_true"].to_numpy()[::-1].copy())),
                 "differ in 'y_true'", id="artifact-predictions-labels-not-the-prepared-ones"),
    pytest.param(_one_slot("ptq", _flip_groups), "predictions of ptq-w8a8-train and fp32's differ in 'Male'",
                 id="artifact-predictions-groups-differ-from-fp32"),
]


@pytest.mark.parametrize("damage, message", STUDY_CASES)
def test_evaluate_refuses_a_study_folder_that_is_not_what_params_name(tmp_path, damage, message):
    root = _study_predictions(tmp_path / "predictions", damage)
    test = _good_frame()[["sample_id", "y_true", "Male"]].assign(split="test")
    train = test.assign(sample_id="train_" + test["sample_id"], split="train")
    write_prepared_samples(tmp_path / "prepared", pd.concat([train, test]))
    out = tmp_path / "eval"
    result = run_stage("evaluate", [str(root), "--data", str(tmp_path / "prepared"), "--out", str(out)], tmp_path,
                       EVALUATE)
    assert_clean_failure(result, message, out)


def _val_and_test(root: Path, damage) -> Path:
    """A variant's predictions folder as predict writes it (val.parquet, test.parquet) and the prepared samples table
    it came from; ``damage(val, test)`` returns the (val, test) frames the folder then holds."""
    test = _good_frame()
    val = test.assign(sample_id="val_" + test["sample_id"])
    write_prepared_samples(root / "prepared", pd.concat([val.assign(split="val"), test.assign(split="test")]))
    folder = _predictions(root / "ptq", "ptq-w8a8-train", test)
    val, test = damage(val, test)
    val.to_parquet(folder / "val.parquet", index=False)
    test.to_parquet(folder / "test.parquet", index=False)
    return folder


def _post_process(tmp_path: Path, folder: Path, out: Path):
    """caleqodds on the variant ``folder``, checked against ``tmp_path``'s prepared folder, written to ``out``."""
    return run_stage("mitigate", ["--method", "caleqodds", "--predictions", str(folder), "--data",
                                  str(tmp_path / "prepared"), "--out", str(out)], tmp_path, {})


POSTPROCESS_CASES = [
    pytest.param(lambda val, test: (test.copy(), test), "val.parquet and test.parquet share 24 sample ids (e.g. "
                 "'00000.jpg'); caleqodds is fitted on validation rows only", id="artifact-postprocess-fitted-on-test"),
    pytest.param(lambda val, test: (val.assign(sample_id="other_" + val["sample_id"]), test),
                 "val predictions of ptq-w8a8-train and the prepared val split", id="artifact-postprocess-val-renamed"),
    pytest.param(lambda val, test: (val.assign(y_true=val["y_true"].to_numpy()[::-1].copy(), y_pred=val["y_pred"]),
                                    test), "differ in 'y_true'", id="artifact-postprocess-val-labels-not-the-prepared"),
    pytest.param(lambda val, test: (val.iloc[:-2], test), "val predictions of ptq-w8a8-train holds 22 val rows but the "
                 "prepared val split", id="artifact-postprocess-val-rows-missing"),
    pytest.param(lambda val, test: (val.assign(sample_id=np.arange(len(val))), test),
                 "val.parquet: sample_id should hold the prepared samples' names (strings)",
                 id="artifact-postprocess-integer-sample-ids"),
]


def _prepared_record(change):
    """The prepared folder's info.json changed by ``change(info)`` (None: the file removed)."""
    def damage(prepared: Path, predictions: Path) -> None:
        info = json.loads((prepared / "info.json").read_text())
        (prepared / "info.json").unlink()
        changed = change(info)
        if changed is not None:
            (prepared / "info.json").write_text(json.dumps(changed))
    return damage


def _prepared_samples(change):
    """The prepared folder's samples.parquet changed by ``change(table)``."""
    def damage(prepared: Path, predictions: Path) -> None:
        table = pd.read_parquet(prepared / "samples.parquet")
        (prepared / "samples.parquet").unlink()
        change(table).to_parquet(prepared / "samples.parquet", index=False)
    return damage


def _multiclass_record(prepared: Path, predictions: Path) -> None:
    from fairquant.results import PredictionsInfo

    info = PredictionsInfo.read(predictions)
    PredictionsInfo.from_dict({**info.to_dict(), "details": {"classes": ["a", "b", "c"]}}, source="test").write(
        predictions)


POSTPROCESS_FOLDER_CASES = [
    pytest.param(_prepared_record(lambda info: None), "prepared/info.json: file not found",
                 id="artifact-postprocess-prepared-without-record"),
    pytest.param(_prepared_record(lambda info: {**info, "protected": ["Young"]}),
                 "was made with protected ['Young'] but params.yaml has data.protected ['Male']",
                 id="artifact-postprocess-prepared-from-other-params"),
    pytest.param(lambda prepared, predictions: (prepared / "samples.parquet").write_bytes(b"PAR1 not a table"),
                 "prepared/samples.parquet: not a readable parquet table",
                 id="artifact-postprocess-prepared-samples-damaged"),
    pytest.param(_multiclass_record, "caleqodds post-processes binary predictions but",
                 id="artifact-postprocess-multiclass-variant"),
    pytest.param(lambda prepared, predictions: (prepared / "info.json").write_text("[" * 100_000 + "]" * 100_000),
                 "prepared/info.json: not valid JSON (nested too deeply to read)",
                 id="artifact-postprocess-prepared-record-nested-too-deep"),
    pytest.param(_prepared_samples(lambda table: table.assign(Male=table["Male"].where(table.index != 3, None))),
                 "column 'Male' should be strings without nulls, found 1 null rows",
                 id="artifact-postprocess-prepared-null-group"),
    pytest.param(_prepared_samples(lambda table: table[table["split"] != "val"]),
                 "samples.parquet holds no val rows; caleqodds is fitted on the validation split",
                 id="artifact-postprocess-prepared-without-val"),
]


@pytest.mark.parametrize("damage, message", POSTPROCESS_FOLDER_CASES)
def test_a_post_processor_refuses_a_folder_that_is_not_the_studys(tmp_path, damage, message):
    """The prepared folder (its record, its samples) and the variant's record, damaged: refused before any fit."""
    folder = _val_and_test(tmp_path, lambda val, test: (val, test))
    damage(tmp_path / "prepared", folder)
    out = tmp_path / "post"
    result = _post_process(tmp_path, folder, out)
    assert_clean_failure(result, message, out)


@pytest.mark.parametrize("damage, message", POSTPROCESS_CASES)
def test_a_post_processor_is_fitted_on_the_prepared_validation_split_only(tmp_path, damage, message):
    folder = _val_and_test(tmp_path, damage)
    out = tmp_path / "post"
    result = _post_process(tmp_path, folder, out)
    assert_clean_failure(result, message, out)


def test_a_post_processor_fits_the_prepared_validation_split(tmp_path):
    """The undamaged folder passes the checks above: the post-processor runs and writes its predictions."""
    folder = _val_and_test(tmp_path, lambda val, test: (val, test))
    out = tmp_path / "post"
    result = _post_process(tmp_path, folder, out)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(out / "test.parquet")) == 24


CLASSES = ["cat", "dog", "owl"]


def _multiclass_predictions(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    from fairquant.results import PredictionsInfo

    folder.mkdir(parents=True)
    frame.to_parquet(folder / "test.parquet", index=False)
    PredictionsInfo(name=name, kind="fp32" if name == "fp32" else "fakequant", kernels="fp32", size_bytes=10,
                    details={"classes": CLASSES}, synthetic=True).write(folder)
    return folder


def _multiclass_frame(n: int = 24) -> pd.DataFrame:
    probs = np.random.default_rng(1).dirichlet(np.ones(len(CLASSES)), n).astype("float32")
    y_pred = probs.argmax(axis=1).astype("int16")
    return pd.DataFrame({"sample_id": [f"{i:05d}.jpg" for i in range(n)], "y_true": (np.arange(n) % 3).astype("int16"),
                         "y_score": probs[np.arange(n), y_pred], "y_pred": y_pred, "y_prob": list(probs),
                         "Male": np.where(np.arange(n) % 3 == 0, "1", "0")})


def _prob_rows(change):
    return _damage_column("y_prob", lambda f: [change(np.asarray(row)) for row in f["y_prob"]])


MULTICLASS_CASES = [
    pytest.param(_prob_rows(lambda row: row[:2]), "y_prob must hold 3 probabilities per row",
                 id="artifact-predictions-probabilities-too-few"),
    pytest.param(_prob_rows(lambda row: row * 2), "y_prob rows must hold finite probabilities summing to 1",
                 id="artifact-predictions-probabilities-not-summing-to-one"),
    pytest.param(_prob_rows(lambda row: np.where(np.arange(3) == 0, np.nan, row)),
                 "y_prob rows must hold finite probabilities summing to 1", id="artifact-predictions-probability-nan"),
    pytest.param(_damage_column("y_pred", lambda f: ((f["y_pred"] + 1) % 3).astype("int16")),
                 "y_pred is not the most probable class of y_prob", id="artifact-predictions-label-not-argmax"),
]


@pytest.mark.parametrize("damage, message", MULTICLASS_CASES)
def test_evaluate_refuses_multiclass_predictions_whose_labels_do_not_follow_their_probabilities(tmp_path, damage,
                                                                                               message):
    fp32 = _multiclass_predictions(tmp_path / "fp32", "fp32", _multiclass_frame())
    variant = _multiclass_predictions(tmp_path / "ptq", "ptq", damage(_multiclass_frame()))
    out = tmp_path / "eval"
    result = run_stage("evaluate", [str(fp32), str(variant), "--out", str(out)], tmp_path, EVALUATE)
    assert_clean_failure(result, message, out)


def _sweep_predictions(root: Path, damage) -> Path:
    """Every sweep slot of the shipped params holding the same good predictions; ``damage`` changes the second."""
    from fairquant.mitigate.slots import sweep_slots
    from fairquant.params import load_params

    slots = sweep_slots(load_params(ROOT / "params.yaml").sweep)
    for index, slot in enumerate(slots):
        frame = _good_frame()
        _predictions(root / slot, "fp32", damage(frame) if index == 1 else frame)
    return root


SWEEP_CASES = [
    pytest.param(lambda f: f.drop(columns="sample_id"), "lack the column 'sample_id'",
                 id="artifact-sweep-predictions-no-sample-id"),
]


@pytest.mark.parametrize("damage, message", SWEEP_CASES)
def test_sweep_evaluate_refuses_damaged_predictions(tmp_path, damage, message):
    predictions = _sweep_predictions(tmp_path / "sweep", damage)
    out = tmp_path / "points"
    result = run_stage("sweep_evaluate", ["--predictions", str(predictions), "--out", str(out)], tmp_path, EVALUATE)
    assert_clean_failure(result, message, out)


# ---------------------------------------------------------------- the prepared data read by finetune and predict


def _set_info(**changes):
    def damage(folder):
        info = json.loads((folder / "info.json").read_text())
        info.update(changes)
        (folder / "info.json").write_text(json.dumps(info))
    return damage


def _truncate_info(folder):
    text = (folder / "info.json").read_text()
    (folder / "info.json").write_text(text[: len(text) // 2])


def _images(shape, dtype=np.uint8):
    def damage(folder):
        np.save(folder / "images.npy", np.zeros(shape, dtype=dtype))
    return damage


def _samples(change):
    def damage(folder):
        frame = pd.read_parquet(folder / "samples.parquet")
        change(frame).to_parquet(folder / "samples.parquet", index=False)
    return damage


def _not_npy(folder):
    (folder / "images.npy").write_bytes(b"\x93NUMPY garbage")


PREPARED_CASES = [
    pytest.param(_truncate_info, {}, "info.json: not valid JSON", id="artifact-prepared-info-truncated"),
    pytest.param(_set_info(image_size="8"), {}, "info.json: 'image_size' should be int",
                 id="artifact-prepared-info-types"),
    pytest.param(_images((79, 8, 8, 3)), {}, "images.npy holds 79 images but samples.parquet indexes rows up to 79",
                 id="artifact-prepared-images-rows"),
    pytest.param(_images((80, 16, 16, 3)), {}, "images.npy holds 16x16 images but info.json says image_size 8",
                 id="artifact-prepared-images-size"),
    pytest.param(_images((80, 8, 8, 3), np.float32), {}, "images.npy holds float32",
                 id="artifact-prepared-images-dtype"),
    pytest.param(_images((80, 8, 8, 1)), {}, "images.npy holds 1-channel images (80, 8, 8, 1), not RGB",
                 id="artifact-prepared-images-grey"),
    pytest.param(_not_npy, {}, "images.npy: not a readable image store", id="artifact-prepared-images-damaged"),
    pytest.param(_samples(lambda f: f.drop(columns="split")), {}, "samples.parquet lacks the columns ['split']",
                 id="artifact-prepared-samples-missing-column"),
    pytest.param(_samples(lambda f: f.assign(y_true=f["y_true"].astype("float64"))), {},
                 "samples.parquet: column 'y_true' should be", id="artifact-prepared-samples-dtype"),
    pytest.param(_samples(lambda f: f.assign(y_true=(f["y_true"] * 2).astype("int8"))), {},
                 "samples.parquet: y_true holds", id="artifact-prepared-samples-labels"),
    pytest.param(None, {"data.protected": ["Young"]}, "data/prepared was made with protected ['Male'] but params.yaml "
                 "has data.protected ['Young']", id="artifact-prepared-stale-protected"),
    pytest.param(None, {"data.target": "Eyeglasses"}, "target 'Smiling' but params.yaml has data.target 'Eyeglasses'",
                 id="artifact-prepared-stale-target"),
    pytest.param(None, {"prepare.image_size": 32}, "image_size 8 but params.yaml has prepare.image_size 32",
                 id="artifact-prepared-stale-image-size"),
]


@pytest.mark.parametrize("damage, params, message", PREPARED_CASES)
def test_finetune_refuses_damaged_or_stale_prepared_data(tmp_path, damage, params, message):
    prepared = write_prepared(tmp_path / "data" / "prepared")
    if damage is not None:
        damage(prepared)
    out, live = tmp_path / "fp32", tmp_path / "live"
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(live)], tmp_path,
                       {"finetune.epochs": 1, "prepare.image_size": 8, **params})
    assert_clean_failure(result, message, out)
    assert not live.exists()


# ---------------------------------------------------------------- the prepared verification folder read by verify_train


def _verification_folder(folder: Path, *, train_images: int = 6, size: int = 8, drop: str | None = None,
                         identity_shift: int = 0, recorded_size: int | None = None) -> Path:
    """A tiny prepared verification folder in verify_prepare's layout (tables, two image stores, info);
    ``recorded_size``: a well-formed folder of that image size (the others damage an 8 px one)."""
    from fairquant.io import write_images, write_json

    folder.mkdir(parents=True)
    size = recorded_size or size
    train = pd.DataFrame({"row": np.arange(6), "identity": np.arange(6) % 2 + identity_shift, "race": ["African"] * 6})
    test = pd.DataFrame({"row": np.arange(4), "race": ["African"] * 4})
    pairs = pd.DataFrame({"pair_id": ["p0", "p1"], "race": ["African"] * 2, "fold": np.array([0, 0], dtype="int16"),
                          "genuine": [True, False], "row1": [0, 1], "row2": [2, 3]})
    for name, table in (("train", train), ("test", test), ("pairs", pairs)):
        table.drop(columns=[drop] if drop in table.columns else []).to_parquet(folder / f"{name}.parquet", index=False)
    write_images(folder / "train_images.npy", np.zeros((train_images, size, size, 3), dtype=np.uint8))
    write_images(folder / "test_images.npy", np.zeros((4, size, size, 3), dtype=np.uint8))
    write_json(folder / "info.json", {"image_size": recorded_size or 8, "synthetic": True})
    return folder


VERIFICATION_CASES = [
    pytest.param({"train_images": 5}, "train_images.npy holds 5 images but its table indexes row 5",
                 id="artifact-verify-store-rows"),
    pytest.param({"size": 16}, "train_images.npy holds uint8 (6, 16, 16, 3), not uint8 images of 8x8 px",
                 id="artifact-verify-store-size"),
    pytest.param({"drop": "row1"}, "pairs.parquet lacks the columns ['row1']", id="artifact-verify-pairs-column"),
    pytest.param({"identity_shift": -5}, "train.parquet: column 'identity' should number the identities from 0, "
                 "found -5", id="artifact-verify-identity-negative"),
    pytest.param({"recorded_size": 16}, "info.json records image_size 16 but params.yaml's verify.data.image_size is "
                 "32", id="artifact-verify-folder-from-other-params"),
]


@pytest.mark.parametrize("damage, message", VERIFICATION_CASES)
def test_verify_train_refuses_a_damaged_verification_folder(tmp_path, damage, message):
    data = _verification_folder(tmp_path / "prepared", **damage)
    out, live = tmp_path / "fp32", tmp_path / "live"
    result = run_stage("verify_train", ["--data", str(data), "--out", str(out), "--live", str(live)], tmp_path)
    assert_clean_failure(result, message, out)
    assert not live.exists()


# ---------------------------------------------------------------- evaluation JSON read by the report


def _damage_eval(change):
    def damage(data):
        change(data)
        return data
    return damage


def _set(path, value):
    def change(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return change


REPORT_CASES = [
    pytest.param(_set("gaps.eq_odds", 0.12), "qat.json: 'gaps.eq_odds' should be an object, found 0.12",
                 id="artifact-eval-number-for-object"),
    pytest.param(_set("overall.accuracy", "high"), "qat.json: 'overall.accuracy' should be a number, found 'high'",
                 id="artifact-eval-text-for-number"),
    pytest.param(_set("vs_fp32.gaps.tpr_gap.delta", [0.1]), "qat.json: 'vs_fp32.gaps.tpr_gap.delta' should be a number",
                 id="artifact-eval-deep-type"),
    pytest.param(_set("groups", [1, 2]), "qat.json: the metrics block lacks objects in overall/groups/gaps/signed",
                 id="artifact-eval-list-for-object"),
    pytest.param(_set("size_bytes", "12 MB"), "qat.json: 'size_bytes' should be int, found '12 MB'",
                 id="artifact-eval-head-type"),
    pytest.param(_set("groups.Female.accuracy", "high"), "qat.json: 'groups.Female.accuracy' should be a number",
                 id="artifact-eval-group-rate-text"),
    pytest.param(_set("groups.Female.n", "21"), "qat.json: 'groups.Female.n' should be a number, found '21'",
                 id="artifact-eval-group-count-text"),
    pytest.param(_set("groups.Female.intervals.accuracy", "wide"),
                 "qat.json: 'groups.Female.intervals.accuracy' should be an interval [low, high] of numbers",
                 id="artifact-eval-interval-text"),
    pytest.param(_set("worst_group_accuracy", "low"), "qat.json: 'worst_group_accuracy' should be a number",
                 id="artifact-eval-worst-group-text"),
]


@pytest.mark.parametrize("change, message", REPORT_CASES)
def test_report_refuses_type_damage_in_an_evaluation(tmp_path, change, message):
    evaluations = tmp_path / "eval" / "s0"
    shutil.copytree(ROOT / "metrics" / "eval" / "s0", evaluations)
    data = json.loads((evaluations / "qat.json").read_text())
    change(data)
    (evaluations / "qat.json").write_text(json.dumps(data))
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--summary", str(tmp_path / "summary.json"),
                                  "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, message, plots)
    assert not (tmp_path / "summary.json").exists()


def _copy_to(source: str, target: str):
    def change(evaluations: Path) -> None:
        shutil.copy(evaluations / f"{source}.json", evaluations / f"{target}.json")
    return change


REPORT_FOLDER_CASES = [
    pytest.param(_copy_to("ptq", "zz_foreign"), "s0 holds metrics of ['zz_foreign'], which params.yaml's mitigate "
                 "lists do not make", id="artifact-eval-foreign-file"),
    pytest.param(lambda e: (e / "kmeans.json").unlink(), "s0 lacks the metrics of ['kmeans']",
                 id="artifact-eval-slot-missing"),
    pytest.param(_copy_to("ptq", "qat"), "both hold the variant", id="artifact-eval-variant-in-two-slots"),
]


@pytest.mark.parametrize("change, message", REPORT_FOLDER_CASES)
def test_report_reads_exactly_the_slots_params_make(tmp_path, change, message):
    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    change(tmp_path / "eval" / "s0")
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--summary", str(tmp_path / "summary.json"),
                                  "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, message, plots)
    assert not (tmp_path / "summary.json").exists()


def test_a_report_failing_while_it_writes_leaves_no_plots_folder(tmp_path, monkeypatch):
    """Every file is staged beside --plots first: a failure half way (here the second plot table) leaves nothing."""
    import fairquant.report.build as build

    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    written = []

    def fail_on_second(path, frame):
        written.append(path)
        if len(written) == 2:
            raise build.FairquantError("disk full")
        path.write_text("table")
    monkeypatch.setattr(build, "write_csv", fail_on_second)
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--summary", str(tmp_path / "summary.json"),
                                  "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, "disk full", plots)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".plots")] == []


VERIFY_CASES = [
    pytest.param(lambda v: [1], "verify.json: expected a JSON object, found list", id="artifact-verify-metrics-list"),
    pytest.param(lambda v: {**v, "variants": {"fp32": 1}}, "verify.json: 'variants' should map each variant",
                 id="artifact-verify-metrics-variant-not-object"),
    pytest.param(lambda v: {**v, "variants": {**v["variants"], "fp32": {**v["variants"]["fp32"], "summary": {
        **v["variants"]["fp32"]["summary"], "ser": {"value": "1.2"}}}}},
                 "verify.json: 'variants.fp32.summary.ser.value' should be a number", id="artifact-verify-metrics-text"),
]


@pytest.mark.parametrize("change, message", VERIFY_CASES)
def test_report_refuses_damaged_verification_metrics(tmp_path, change, message):
    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    verify = user_file(tmp_path / "verify.json", json.dumps(change(json.loads((ROOT / "metrics" / "verify.json").read_text()))))
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--verify", str(verify), "--summary",
                                  str(tmp_path / "summary.json"), "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, message, plots)
    assert not (tmp_path / "summary.json").exists()


CASES = (PREDICTION_CASES + STUDY_CASES + POSTPROCESS_CASES + POSTPROCESS_FOLDER_CASES + MULTICLASS_CASES + SWEEP_CASES + PREPARED_CASES + VERIFICATION_CASES + REPORT_CASES + REPORT_FOLDER_CASES + VERIFY_CASES)
