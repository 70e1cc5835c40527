"""A verification training set in insightface's RecordIO layout: the generated twin (verify.generate.train_recordio)
prepares to the same images, identities and races as its identity folders; bad params combinations are refused."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from fairquant.data.prepare_verification import prepare_verification
from fairquant.data.synthetic_verification import generate_verification_data
from fairquant.errors import FairquantError
from fairquant.params import VerifyDataParams, VerifyGenerateParams

TINY = {"train_identities": 8, "images_per_identity": 2, "test_identities_per_race": 4,
        "test_images_per_identity": 4, "pairs_per_fold": 2, "render_size": 32, "faces": 10, "workers": 1,
        "train_recordio": True}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify_rec") / "synthetic_verify"
    generate_verification_data(VerifyGenerateParams(**TINY), root)
    return root


def _params(root, **kw) -> VerifyDataParams:
    return VerifyDataParams(**{"train_root": str(root / "recordio"), "train_layout": "recordio",
                               "rfw_root": str(root / "rfw"), "synthetic_folder": str(root / "faces"),
                               "image_size": 16, "calibration_size": 8, "workers": 1, **kw})


def test_generator_writes_the_recordio_twin(generated):
    assert {p.name for p in (generated / "recordio").iterdir()} == {"train.rec", "train.idx", "identity_races.csv"}
    races = pd.read_csv(generated / "recordio" / "identity_races.csv")
    assert len(races) == 8 and races["race"].value_counts().to_dict() == {"Caucasian": 5, "African": 1, "Asian": 1,
                                                                          "Indian": 1}


def test_recordio_prepares_like_the_identity_folders(generated, tmp_path):
    folders = VerifyDataParams(train_root=str(generated / "race_per_7000"), rfw_root=str(generated / "rfw"),
                               synthetic_folder=str(generated / "faces"), image_size=16, calibration_size=8,
                               workers=1)
    prepare_verification(folders, tmp_path / "folders")
    info = prepare_verification(_params(generated, train_race_map=str(generated / "recordio/identity_races.csv"),
                                        workers=2), tmp_path / "rec")
    assert info["train"]["layout"] == "recordio" and info["train"]["images"] == 16
    assert info["synthetic"] is True and "skipped" not in info["calibration"]["balanced"]
    a, b = (pd.read_parquet(tmp_path / name / "train.parquet") for name in ("folders", "rec"))
    # folders are read race by race, RecordIO in label (= identity name) order: compare per identity name
    by_name = b.assign(name=[f"id{int(n):06d}" for n in b["identity_name"]])
    assert sorted(zip(by_name["name"], by_name["race"])) == sorted(zip(a["identity_name"], a["race"]))
    store_a, store_b = (np.load(tmp_path / name / "train_images.npy") for name in ("folders", "rec"))
    order_a = np.lexsort((a["path"].to_numpy(), a["identity_name"].to_numpy()))
    assert np.array_equal(store_a[order_a], store_b)  # the same JPEG bytes decode to the same pixels


def test_recordio_without_a_race_map_has_unknown_race(generated, tmp_path):
    info = prepare_verification(_params(generated), tmp_path / "rec")
    assert info["train"]["per_race"] == {"unknown": {"identities": 8, "images": 16}}
    assert info["calibration"]["balanced"]["skipped"]


def test_recordio_params_errors(generated, tmp_path):
    with pytest.raises(ValidationError, match="train_race_map is set but verify.data.train_layout"):
        VerifyDataParams(train_race_map="map.csv")
    with pytest.raises(FairquantError, match="train.rec does not exist; set verify.data.train_root"):
        prepare_verification(_params(generated, train_root=str(generated / "race_per_7000")), tmp_path / "x")
    with pytest.raises(FairquantError, match="missing.csv does not exist; set verify.data.train_race_map"):
        prepare_verification(_params(generated, train_race_map=str(tmp_path / "missing.csv")), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- the stages: a RecordIO-trained study, and a model audited as it is (verify.train.epochs 0) -------------------

def _stage_params(tmp_path, root, **sections) -> Path:
    from tests.test_verify import write_params

    params = yaml.safe_load(write_params(tmp_path, root, methods=["ptq"], bits=[4], calibration=["train"]).read_text())
    params["verify"]["generate"]["train_recordio"] = True
    params["verify"]["data"].update({"train_layout": "recordio", "train_root": str(root / "recordio"),
                                     "train_race_map": str(root / "recordio" / "identity_races.csv")})
    for section, values in sections.items():
        params["verify"][section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path / "params.yaml"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """generate (with the RecordIO twin) -> prepare from train.rec -> verify_train with epochs 0 on a state dict
    saved beforehand -> verify_compress (PTQ W4A4 and pruning with one epoch: the centroid head)."""
    import torch

    from fairquant.models import build_model
    from tests.test_verify import stage

    tmp = tmp_path_factory.mktemp("audit")
    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=128)
    (tmp / "data" / "pretrained").mkdir(parents=True)  # the stages run in tmp: model paths are read from there
    torch.save(model.state_dict(), tmp / "data" / "pretrained" / "backbone.pth")
    params = _stage_params(tmp, tmp / "raw", train={"epochs": 0}, model={"pretrained": "data/pretrained/backbone.pth"})
    values = yaml.safe_load(params.read_text())
    values["verify"]["methods"] = ["ptq", "prune"]
    values["prune"].update({"epochs": 1, "steps": 1, "batch_size": 16})
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    runs = {}
    for name, args in [("verify_generate", ["--out", tmp / "raw"]), ("verify_prepare", ["--out", tmp / "prepared"]),
                       ("verify_train", ["--data", tmp / "prepared", "--out", tmp / "fp32", "--live", tmp / "live"]),
                       ("verify_compress", ["--model", tmp / "fp32", "--data", tmp / "prepared", "--out",
                                            tmp / "variants", "--live", tmp / "live-variants"])]:
        runs[name] = stage(name, *args, params=params, cwd=tmp)
        assert runs[name].returncode == 0, f"{name}\n{runs[name].stdout[-2000:]}\n{runs[name].stderr[-3000:]}"
    return tmp, params, runs, model


@pytest.mark.slow  # four stage processes: about a minute on 2 cores
def test_a_recordio_study_audits_a_pretrained_model_as_it_is(audited):
    import json

    import torch

    tmp, _, runs, model = audited
    prepared = json.loads((tmp / "prepared" / "info.json").read_text())
    assert prepared["train"]["layout"] == "recordio" and prepared["sources"]["train_layout"] == "recordio"
    assert "training images" in runs["verify_prepare"].stdout and "(recordio)" in runs["verify_prepare"].stdout
    config = json.loads((tmp / "fp32" / "info.json").read_text())
    assert config["trained_here"] is False and config["pretrained"] == "data/pretrained/backbone.pth"
    assert not (tmp / "fp32" / "head.pt").exists() and "not trained here" in runs["verify_train"].stdout
    assert json.loads((tmp / "live" / "metrics.json").read_text())["trained_here"] is False
    stored = torch.load(tmp / "fp32" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())  # as it is: not one weight moved
    variants = {p.name for p in (tmp / "variants").iterdir()}
    assert "ptq-w4a4-train" in variants and any(name.startswith("prune") for name in variants)
    assert json.loads((tmp / "variants" / "ptq-w4a4-train" / "info.json").read_text())["trained_here"] is False


@pytest.mark.slow
def test_the_train_stage_refuses_a_bad_pretrained_file_with_one_line(audited):
    from tests.test_verify import stage

    tmp, params, _, _ = audited
    values = yaml.safe_load(params.read_text())
    mismatch = "layer fc.weight has shape [128, 256] in the file but [64, 256]"
    for pretrained, expected in (("data/pretrained/none.pth", "none.pth: pretrained weights not found"),
                                 ("data/pretrained/backbone.pth", mismatch)):
        values["verify"]["model"].update({"pretrained": pretrained, "embedding_dim": 64})
        bad = tmp / "bad.yaml"
        bad.write_text(yaml.safe_dump(values, sort_keys=False))
        result = stage("verify_train", "--data", tmp / "prepared", "--out", tmp / "bad", "--live", tmp / "bad-live",
                       params=bad, cwd=tmp)
        assert result.returncode == 2 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp / "bad").exists()
