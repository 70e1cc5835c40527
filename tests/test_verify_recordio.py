"""A verification training set in insightface's RecordIO layout: the generated twin (verify.generate.train_recordio)
prepares to the same images, identities and races as its identity folders; bad params combinations are refused."""

import numpy as np
import pandas as pd
import pytest
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
