"""The multi-class twin under `dvc repro`: the generated faces written as a labelled image folder (data.source:
folder) with a three-way Expression target and gender protected (an attribute as the target, another as the group),
then the class as the group through `dvc exp run`; every compressor, CEAG, a sweep curve and the verification
branch run on it."""

import json

import pandas as pd
import pytest

from tests.study import sh, shrunken_params, study_repo

TWIN = {
    "generate": {"layout": "folder", "identities": 90},
    "data": {"source": "folder", "root": "data/raw/synthetic", "target": "Expression", "task": "multiclass",
             "positive": None, "protected": ["gender"], "folder": {"identity_column": "identity"}},
    "mitigate": {"before_compression": [], "after": [], "during_prune": ["ceag"], "calibration_sets": []},
    "sweep": {"ptq": ["w8a8", "w4a4"], "qat": []},
}
SLOTS = {"fp32", "ptq", "qat", "kmeans", "prune", "ceag+prune"}
CLASSES = ["frowning", "neutral", "smiling"]


@pytest.mark.slow
def test_multiclass_folder_twin_through_dvc_repro(tmp_path):
    repo = tmp_path / "twin"
    params = shrunken_params()
    for section, values in TWIN.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    params["verify"]["bits"] = [8]
    params["verify"]["generate"]["train_recordio"] = False
    params["verify"]["data"].update(train_layout="identity_folders",
                                    train_root="data/raw/synthetic_verify/race_per_7000", train_race_map=None)
    env = study_repo(repo, params)

    sh("dvc repro", repo, env)
    raw = repo / "data" / "raw" / "synthetic"
    labels = pd.read_csv(raw / "labels.csv")
    assert set(labels.columns) >= {"file", "Expression", "gender", "identity"} and "split" not in labels.columns
    prepared = json.loads((repo / "data" / "prepared" / "info.json").read_text())
    assert prepared["source"] == "folder" and prepared["classes"] == CLASSES and prepared["synthetic"] is True
    samples = pd.read_parquet(repo / "data" / "prepared" / "samples.parquet")
    identity = labels.set_index("file").loc[samples["sample_id"], "identity"].to_numpy()
    assert (pd.DataFrame({"identity": identity, "split": samples["split"]}).groupby("identity")["split"].nunique()
            == 1).all()  # the drawn split is grouped by identity
    predictions = pd.read_parquet(repo / "data" / "predictions" / "s0" / "variants" / "ptq" / "test.parquet")
    assert list(predictions.columns) == ["sample_id", "y_true", "y_score", "y_pred", "y_prob", "gender"]
    assert predictions["y_prob"].map(len).eq(3).all()

    evaluated = {slot: json.loads((repo / "metrics" / "eval" / "s0" / f"{slot}.json").read_text()) for slot in SLOTS}
    for slot, result in evaluated.items():
        assert result["task"] == "multiclass" and result["classes"]["names"] == CLASSES
        assert set(result["groups"]) == {"Female", "Male"} and result["class_as_group"] is False
        if slot != "fp32":
            act = result["vs_fp32"]["balancing_act"]
            assert set(act["groups"]) == {"Female", "Male"} and act["max_excess_drop"]["ci_low"] is not None
            assert set(result["vs_fp32"]["balancing_act_by_class"]["groups"]) == set(CLASSES)
    assert evaluated["ptq"]["kernels"] == "int8"
    assert evaluated["ceag+prune"]["constraint"]["test"]["rate"] == "accuracy"
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert {"worst_class", "worst_class_recall", "max_excess_drop", "max_class_excess_drop"} <= set(summary["ptq"])
    sweep = json.loads((repo / "metrics" / "sweep.json").read_text())
    assert {"accuracy_gap_slope", "w8a8", "w4a4"} <= set(sweep["face_resnet10 ptq W=A (train)"])
    report = (repo / "plots" / "report.md").read_text()
    assert "**Multi-class target, 3 classes**" in report and "## Per-class accuracy (recall" in report
    assert "## Accuracy drop vs fp32 and excess drop per group" in report and "accuracy gap change vs fp32" in report
    assert "Face verification" in report

    # The class as the group (the reference works' CIFAR framing): protected is the target itself.
    sh("dvc exp run -S 'data.protected=[Expression]' -S 'evaluate.privileged_group=smiling' -S 'sweep.ptq=[w8a8]'", repo, env)
    result = json.loads((repo / "metrics" / "eval" / "s0" / "ptq.json").read_text())
    assert result["class_as_group"] is True and set(result["groups"]) == set(CLASSES)
    assert result["gaps"]["dp_gap"]["value"] is None and "class as the group" in result["gaps"]["dp_gap"]["reason"]
    drops = result["vs_fp32"]["balancing_act"]
    assert set(drops["groups"]) == set(CLASSES) and drops["max_excess_drop"]["group"] in CLASSES
    report = (repo / "plots" / "report.md").read_text()
    assert "## Class as the group" in report and "## The worst class" in report
