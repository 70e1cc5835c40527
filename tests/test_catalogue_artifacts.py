"""Troubleshooting catalogue: artifacts (README, Troubleshooting). Each case id is a README row.

Each case damages one artifact (or the command line) as a user of a shared DVC remote might find it, runs the stage
that reads it as a user would, and checks the promise: exit status 2, one line on stderr naming the problem and the
fix, and nothing written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_prepared

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
    (tmp_path / "prepared").mkdir()
    pd.concat([train, test]).assign(row=np.arange(2 * len(test))).to_parquet(tmp_path / "prepared" /
                                                                              "samples.parquet", index=False)
    out = tmp_path / "eval"
    result = run_stage("evaluate", [str(root), "--data", str(tmp_path / "prepared"), "--out", str(out)], tmp_path,
                       EVALUATE)
    assert_clean_failure(result, message, out)


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


# ---------------------------------------------------------------- checkpoints and user-supplied weights


class _Code:
    """A pickled object whose loading would run code: it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny_config(**changes):
    return {"kind": "fp32", "name": "fp32", "arch": "face_resnet10", "small_input_stem": True, "image_size": 8,
            **changes}


def _checkpoint(write):
    def make(path: Path, marker: Path):
        import torch

        from fairquant.io import save_checkpoint
        from fairquant.models import build_model

        state = build_model("face_resnet10", small_input_stem=True).state_dict()
        if write == "text":
            path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
        elif write == "code":
            torch.save({"config": _tiny_config(), "state_dict": state, "hook": _Code(marker)}, path)
        elif write == "plain":
            torch.save(state, path)
        elif write == "other-arch":
            save_checkpoint(path, state, _tiny_config(arch="resnet18"))
        elif write == "not-finite":
            state["fc.weight"][0, 0] = float("nan")
            save_checkpoint(path, state, _tiny_config())
        elif write == "compressed":
            save_checkpoint(path, state, _tiny_config(kind="pruned"))
        elif write == "stem-not-bool":
            save_checkpoint(path, state, _tiny_config(small_input_stem="yes"))
        elif write == "size-not-int":
            save_checkpoint(path, state, _tiny_config(image_size="8"))
        elif write == "no-config-key":
            save_checkpoint(path, state, {k: v for k, v in _tiny_config().items() if k != "small_input_stem"})
    return make


CHECKPOINT_CASES = [
    pytest.param(_checkpoint("text"), "not a loadable fairquant checkpoint (UnpicklingError: damaged or not a torch "
                 "file",
                 id="artifact-checkpoint-not-torch"),
    pytest.param(_checkpoint("code"), "holds objects other than tensors, refused unread; only tensors are loaded, "
                 "never code", id="artifact-checkpoint-pickled-code"),
    pytest.param(_checkpoint("plain"), "not a fairquant checkpoint (expected keys state_dict, config)",
                 id="artifact-checkpoint-bare-state-dict"),
    pytest.param(_checkpoint("other-arch"), "its weights do not fit the resnet18 fp32 model its config describes: no "
                 "tensor 'layer1.1.conv1.weight'", id="artifact-checkpoint-config-other-arch"),
    pytest.param(_checkpoint("not-finite"), "model.pt: layer 'fc.weight' holds NaN or infinite values",
                 id="artifact-checkpoint-not-finite"),
    pytest.param(_checkpoint("compressed"), "holds a pruned model; compressors start from fp32",
                 id="artifact-checkpoint-not-fp32"),
    pytest.param(_checkpoint("no-config-key"), "its config lacks 'small_input_stem'",
                 id="artifact-checkpoint-config-key"),
    pytest.param(_checkpoint("stem-not-bool"), "its config has small_input_stem 'yes': input should be a valid boolean",
                 id="artifact-checkpoint-config-stem-not-bool"),
    pytest.param(_checkpoint("size-not-int"), "its config has image_size '8': input should be a valid integer",
                 id="artifact-checkpoint-config-size-not-int"),
]


@pytest.mark.parametrize("make, message", CHECKPOINT_CASES)
def test_compressor_refuses_a_damaged_or_foreign_checkpoint(tmp_path, make, message):
    (tmp_path / "fp32").mkdir()
    marker = tmp_path / "code-ran"
    make(tmp_path / "fp32" / "model.pt", marker)
    out = tmp_path / "ptq"
    result = run_stage("quantize_ptq", ["--model", str(tmp_path / "fp32"), "--calibration", str(tmp_path / "cal"),
                                        "--out", str(out)], tmp_path)
    assert_clean_failure(result, message, out)
    assert not marker.exists()  # the pickled code never ran


def _pretrained(tmp_path: Path, how: str) -> Path:
    import pickle

    import torch

    path = tmp_path / "data" / "pretrained" / "weights.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"conv1.weight": torch.zeros(1), "hook": _Code(tmp_path / "code-ran")}
    if how == "pickle":  # plain pickle (protocol 4): torch also warns about the protocol on the way
        path.write_bytes(pickle.dumps(state, protocol=4))
    elif how == "pickle-global":  # plain pickle (protocol 2): torch names the blocked global it met
        path.write_bytes(pickle.dumps(state, protocol=2))
    elif how == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(b"")
    return path


PRETRAINED_CASES = [
    pytest.param("pickle", True, "weights.pth: not a readable state dict (UnpicklingError: damaged or not a torch "
                 "file)", id="artifact-pretrained-plain-pickle"),
    pytest.param("torch", False, "weights.pth: not a readable state dict (UnpicklingError: it holds objects other than "
                 "tensors, refused unread", id="artifact-pretrained-torch-saved-code"),
    pytest.param("pickle-global", False, "weights.pth: not a readable state dict (UnpicklingError: it holds objects "
                 "other than tensors, refused unread; only tensors are loaded, never code (it holds a pickled global",
                 id="artifact-pretrained-pickled-global"),
    pytest.param("empty", False, "weights.pth: not a readable state dict (EOFError: empty file)",
                 id="artifact-pretrained-empty"),
]


@pytest.mark.parametrize("how, subprocess_run, message", PRETRAINED_CASES)
def test_pretrained_weights_holding_code_are_refused_unread(tmp_path, how, subprocess_run, message):
    """User-supplied weights holding code: refused unread, torch's advice (weights_only=False) not shown, and its
    warning about the pickle protocol not added to the one line (a real interpreter, for the warning)."""
    write_prepared(tmp_path / "data" / "prepared")
    out = tmp_path / "fp32"
    weights = _pretrained(tmp_path, how).relative_to(tmp_path)
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(tmp_path / "live")],
                       tmp_path, {"prepare.image_size": 8, "model.pretrained": str(weights)},
                       subprocess_run=subprocess_run)
    assert_clean_failure(result, message, out)
    assert "weights_only=False" not in result.stderr and not (tmp_path / "code-ran").exists()


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
    verify = _file(tmp_path / "verify.json", json.dumps(change(json.loads((ROOT / "metrics" / "verify.json").read_text()))))
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--verify", str(verify), "--summary",
                                  str(tmp_path / "summary.json"), "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, message, plots)
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------- the command line


def _file(path: Path, text: str = "mine") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CLI_CASES = [
    pytest.param("evaluate", lambda t: ["fp32", "--out", "eval", "--bogus"], "No such option: --bogus",
                 "eval", id="cli-unknown-option"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--live", "live"],
                 "Missing option '--out'", "live", id="cli-missing-option"),
    pytest.param("evaluate", lambda t: ["fp32", "--out", "eval", "--params", "nope.yaml"],
                 "nope.yaml: params file not found", "eval", id="cli-params-not-found"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out", str(_file(t / "fp32")),
                                        "--live", "live"],
                 "--out fp32 is a file; the output is a folder", "live", id="cli-out-is-a-file"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out", "fp32", "--live",
                                        str(_file(t / "live"))],
                 "--live live is a file; the output is a folder", "fp32", id="cli-live-is-a-file"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out",
                                        str(_file(t / "models") / "fp32"), "--live", "live"],
                 "--out models/fp32: models is a file, where a folder of the path should be", "live",
                 id="cli-out-under-a-file"),
    pytest.param("latency", lambda t: ["--models", "models", "--out", (t / "latency.json").mkdir() or "latency.json"],
                 "--out latency.json is a folder; the output is a file", "models", id="cli-file-output-is-a-folder"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", str(_file(t / "data" / "prepared")), "--out", "fp32",
                                        "--live", "live"],
                 "data/prepared/info.json: file not found", "fp32", id="cli-data-is-a-file"),
    pytest.param("predict", lambda t: ["--data", "data/prepared", "--models", "models", "--out", "variants", "--params",
                                       _file(t / "gpu.yaml", "evaluate:\n  device: cuda\n").name],
                 "evaluate.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'", "variants",
                 id="cli-cuda-where-there-is-none",
                 marks=pytest.mark.skipif("__import__('torch').cuda.is_available()",
                                          reason="a CUDA device is visible")),
]


@pytest.mark.parametrize("stage, argv, message, out", CLI_CASES)
def test_command_line_mistakes_are_one_line(tmp_path, stage, argv, message, out):
    """The stage's real argument parsing (run in this process): a mistake on the command line, one line, exit 2."""
    from tests.test_stages import run_in_process, stage_params

    args = [str(Path(a).relative_to(tmp_path)) if a.startswith(str(tmp_path)) else a for a in argv(tmp_path)]
    stage_params(tmp_path, {"prepare.image_size": 8})
    if not (tmp_path / "data").exists():
        write_prepared(tmp_path / "data" / "prepared")
    result = run_in_process(stage, args, tmp_path)
    assert_clean_failure(result, message, tmp_path / out)


def test_a_failure_during_training_leaves_the_live_folder_as_it_was(tmp_path, monkeypatch):
    """dvclive writes into a temporary folder that replaces --live only when the stage succeeds: a failure after an
    epoch was logged leaves the previous run's curves untouched (and no curves of a run that did not finish)."""
    import fairquant.training
    from fairquant.errors import FairquantError

    def one_epoch_then_fail(model, *args, on_epoch, **kwargs):
        on_epoch(type("Log", (), {"epoch": 0, "train_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.5,
                                  "val_group_accuracy": {}})())
        raise FairquantError("disk full (injected)")

    monkeypatch.setattr(fairquant.training, "train_classifier", one_epoch_then_fail)
    write_prepared(tmp_path / "data" / "prepared")
    live = _file(tmp_path / "live" / "metrics.json", "the previous run's").parent
    out = tmp_path / "fp32"
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(live)], tmp_path,
                       {"prepare.image_size": 8, "finetune.epochs": 1})
    assert_clean_failure(result, "disk full (injected)", out)
    assert [p.name for p in live.iterdir()] == ["metrics.json"]
    assert (live / "metrics.json").read_text() == "the previous run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "live", "params.yaml"]  # no temporary folder left


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch):
    import fairquant.training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fairquant.training, "train_classifier", interrupted)
    write_prepared(tmp_path / "data" / "prepared")
    result = run_stage("finetune", ["--data", "data/prepared", "--out", "fp32", "--live", "live"], tmp_path,
                       {"prepare.image_size": 8, "finetune.epochs": 1})
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["interrupted: the stage stopped before finishing; no output was "
                                                  "written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml"]


# ---------------------------------------------------------------- stored compressed variants read by predict


@pytest.fixture(scope="module")
def stored_variants():
    """A tiny fp32 model's state and two of its compressed variants (simulated W4A4 PTQ, 16-cluster k-means), each
    as (state_dict, config), as the compressor stages store them."""
    from fairquant.compress import fakequant, kmeans
    from fairquant.models import build_model
    from fairquant.params import QuantSchemeParams

    base = _tiny_config(synthetic=True, target="Smiling", protected=["Male"])
    scheme = QuantSchemeParams(bits=4, activation_bits=4)
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    ptq = fakequant.calibrate(fakequant.quantize_model(build_model("face_resnet10", small_input_stem=True), scheme),
                              images).eval()
    clustered = kmeans.cluster_model(build_model("face_resnet10", small_input_stem=True), 16, 2).eval()
    return {"fp32": (build_model("face_resnet10", small_input_stem=True).state_dict(), base),
            "ptq": (ptq.state_dict(), {**base, "kind": "fakequant", "name": "ptq-w4a4-train",
                                       "scheme": scheme.model_dump(), "calibration": {"set": "train", "size": 8}}),
            "kmeans": (clustered.state_dict(), {**base, "kind": "kmeans", "name": "kmeans-k16", "clusters": 16})}


def _variant(slot, **changes):
    """The stored ``slot`` variant with its config changed (dotted keys reach into the scheme or int8_check)."""
    def make(stored):
        import copy

        state, config = copy.deepcopy(stored[slot])
        for dotted, value in changes.items():
            if dotted == "nan":
                state[value][(0,) * state[value].dim()] = float("nan")
                continue
            *parents, key = dotted.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[key] = value
        return state, config
    return make


_INT8 = {"kind": "ptq-int8", "name": "ptq-w8a8-train", "scheme.bits": 8, "scheme.activation_bits": 8,
         "export_batch": 64, "int8_check": {"reduce_range": True}}

VARIANT_CASES = [
    pytest.param(_variant("ptq", **{"scheme.bits": 8}), "its name 'ptq-w4a4-train' does not say its scheme (bits 8",
                 id="artifact-variant-scheme-edited"),
    pytest.param(_variant("ptq", **{"scheme.bits": "four"}), "its config has scheme.bits 'four': input should be a "
                 "valid integer", id="artifact-variant-scheme-bits-not-int"),
    pytest.param(_variant("ptq", scheme="w4a4"), "its config has scheme 'w4a4': input should be",
                 id="artifact-variant-scheme-not-mapping"),
    pytest.param(_variant("ptq", **{"scheme.observer": "evil"}), "its config has scheme.observer 'evil': input "
                 "should be 'minmax'", id="artifact-variant-scheme-observer-unknown"),
    pytest.param(_variant("kmeans", clusters="sixteen"), "its config has clusters 'sixteen': input should be a valid "
                 "integer", id="artifact-variant-kmeans-clusters-not-int"),
    pytest.param(_variant("kmeans", clusters=32), "its name 'kmeans-k16' does not say its 32 clusters",
                 id="artifact-variant-kmeans-clusters-edited"),
    pytest.param(_variant("ptq", **{**_INT8, "export_batch": "64"}), "its config has export_batch '64': input should "
                 "be a valid integer", id="artifact-variant-int8-export-batch-not-int"),
    pytest.param(_variant("ptq", **{**_INT8, "int8_check": []}), "its config has int8_check []: input should be",
                 id="artifact-variant-int8-check-not-mapping"),
    pytest.param(_variant("ptq", nan="fc.layer.weight"), "model.pt: tensor 'fc.layer.weight' holds NaN or infinite values",
                 id="artifact-variant-not-finite"),
]


@pytest.mark.parametrize("make, message", VARIANT_CASES)
def test_predict_refuses_an_edited_or_damaged_variant(tmp_path, stored_variants, make, message):
    from fairquant.compress.checkpoints import save_variant

    write_prepared(tmp_path / "data" / "prepared")
    models = tmp_path / "models"
    save_variant(models / "fp32", *stored_variants["fp32"])
    save_variant(models / "ptq", *make(stored_variants))  # the slot predict reads next
    for slot in ("qat", "kmeans", "prune"):
        _file(models / slot / "model.pt", "not read: predict stops at the damaged slot before")
    out = tmp_path / "pred"
    result = run_stage("predict", ["--data", "data/prepared", "--models", str(models), "--out", str(out)], tmp_path,
                       {"prepare.image_size": 8, "mitigate.before_compression": [], "mitigate.during_prune": [],
                        "mitigate.during_qat": [], "mitigate.during_kmeans": []})
    assert_clean_failure(result, message, out)


# ---------------------------------------------------------------- finetune's two outputs, together or not at all


KILL_SAFE_CASES = [
    pytest.param("live", "cannot move the curves in place (injected)", id="artifact-finetune-live-move-fails"),
]


@pytest.mark.parametrize("failing, message", KILL_SAFE_CASES)
def test_finetune_writes_the_model_only_with_its_curves(tmp_path, monkeypatch, failing, message):
    """The model and --live appear together: when moving the curves in place fails (a full disk, a kill), the
    model is not left behind without them (it was written, before, inside the curves' folder block)."""
    import os

    import fairquant.io
    from fairquant.errors import FairquantError

    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == failing:
            raise FairquantError(message)
        return real_replace(source, target)

    monkeypatch.setattr(fairquant.io.os, "replace", replace)
    write_prepared(tmp_path / "data" / "prepared")
    out = tmp_path / "fp32"
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(tmp_path / failing)],
                       tmp_path, {"prepare.image_size": 8, "finetune.epochs": 1})
    assert_clean_failure(result, message, out)
    assert not (tmp_path / failing).exists()


# ---------------------------------------------------------------- calibration sets read by the quantizers


def _calibration_set(folder: Path, *, images=None, info=None, cells=None) -> Path:
    """A tiny balanced calibration set as the calibration stage writes it (8 px, two cells), then the damage."""
    from fairquant.io import write_json

    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((8, 8, 8, 3), dtype=np.uint8) if images is None else images)
    write_json(folder / "info.json", {"set": "balanced", "size": 8, "image_size": 8} if info is None else info)
    if isinstance(cells, bytes):
        (folder / "cells.npy").write_bytes(cells)
    else:
        np.save(folder / "cells.npy", np.arange(8, dtype=np.int16) % 2 if cells is None else cells,
                allow_pickle=True)
    return folder


def _cells_truncated() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.arange(8, dtype=np.int16) % 2)
    return buffer.getvalue()[:-5]


CALIBRATION_CASES = [
    pytest.param("balanced", {"images": np.zeros((8, 8, 8, 3), dtype=np.float32)},
                 "images.npy holds float32 (8, 8, 8, 3), not uint8 RGB images of 8x8 px",
                 id="artifact-calibration-images-dtype"),
    pytest.param("balanced", {"images": np.zeros((8, 16, 16, 3), dtype=np.uint8)},
                 "images.npy holds uint8 (8, 16, 16, 3), not uint8 RGB images of 8x8 px (the model's input size)",
                 id="artifact-calibration-images-size"),
    pytest.param("train", {}, "holds the 'balanced' calibration set, not the 'train' set its folder is named after",
                 id="artifact-calibration-set-swapped"),
    pytest.param("balanced", {"model": {"small_input_stem": False}}, "fp32/model.pt was made with small_input_stem False "
                 "but params.yaml has model.small_input_stem True", id="artifact-checkpoint-stem-not-params"),
    pytest.param("balanced", {"info": []}, "info.json: expected a JSON object, found list",
                 id="artifact-calibration-info-not-object"),
    pytest.param("balanced", {"cells": np.array(["a"] * 8, dtype=object)},
                 "cells.npy: not a readable array of cell codes (ValueError)", id="artifact-calibration-cells-pickled"),
    pytest.param("balanced", {"cells": _cells_truncated()}, "cells.npy: not a readable array of cell codes",
                 id="artifact-calibration-cells-truncated"),
    pytest.param("balanced", {"cells": np.arange(12, dtype=np.int16) % 2},
                 "cells.npy holds int16 (12,), not one cell code or name for each of the set's 8 images",
                 id="artifact-calibration-cells-long"),
]


@pytest.mark.parametrize("folder, damage, message", CALIBRATION_CASES)
def test_quantize_ptq_refuses_a_damaged_or_swapped_calibration_set(tmp_path, folder, damage, message):
    calibration = _calibration_set(tmp_path / "calibration" / folder,
                                   **{key: value for key, value in damage.items() if key != "model"})
    fp32 = _fp32_folder(tmp_path / "fp32", **damage.get("model", {}))
    out = tmp_path / "ptq"
    result = run_stage("quantize_ptq", ["--model", str(fp32), "--calibration", str(calibration), "--out", str(out)],
                       tmp_path, {"quantize_ptq.kernels": "simulated", "quantize_ptq.bits": 4, **TINY_MODEL,
                                  "quantize_ptq.calibration": folder, "quantize_ptq.calibration_size": 4})
    assert_clean_failure(result, message, out)


# ---------------------------------------------------------------- a params file not called params.yaml


TINY_MODEL = {"prepare.image_size": 8, "model.small_input_stem": True}  # the params _fp32_folder's model is made with


def _fp32_folder(folder: Path, **changes) -> Path:
    """A tiny stored fp32 model (8 px, small input stem) as finetune writes it."""
    from fairquant.compress.checkpoints import save_variant
    from fairquant.models import build_model

    save_variant(folder, build_model("face_resnet10", small_input_stem=True).state_dict(),
                 _tiny_config(synthetic=True, target="Smiling", protected=["Male"], **changes))
    return folder


PARAMS_FILE_CASES = [
    pytest.param("mitigate", "data/prepared was made with protected ['Male'] but experiment.yaml has data.protected "
                 "['Young']", id="artifact-prepared-stale-named-params-file"),
]


@pytest.mark.parametrize("stage, message", PARAMS_FILE_CASES)
def test_stale_prepared_data_names_the_params_file_given(tmp_path, stage, message):
    from tests.test_stages import run_in_process, stage_params

    write_prepared(tmp_path / "data" / "prepared")
    _fp32_folder(tmp_path / "fp32")
    params = stage_params(tmp_path, {**TINY_MODEL, "data.protected": ["Young"]})
    params.rename(tmp_path / "experiment.yaml")
    out, live = tmp_path / "fair", tmp_path / "live"
    result = run_in_process(stage, ["--method", "fairalm", "--seed", "0", "--data", "data/prepared", "--model",
                                    str(tmp_path / "fp32"), "--out", str(out), "--live", str(live),
                                    "--params", str(tmp_path / "experiment.yaml")], tmp_path)
    assert_clean_failure(result, message, out)
    assert not live.exists()


CASES = (PREDICTION_CASES + STUDY_CASES + MULTICLASS_CASES + SWEEP_CASES + PREPARED_CASES + VERIFICATION_CASES
         + CHECKPOINT_CASES + PRETRAINED_CASES + REPORT_CASES + REPORT_FOLDER_CASES + VERIFY_CASES + CLI_CASES
         + PARAMS_FILE_CASES + VARIANT_CASES + CALIBRATION_CASES + KILL_SAFE_CASES)
