"""A model the user already trained, audited as it is (finetune.epochs 0), and the multi-class head end to end
through finetune and predict."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from fairquant.errors import FairquantError
from fairquant.models import build_model, load_audited
from tests.test_stages import assert_clean_failure, run_stage


MULTICLASS = {"data.task": "multiclass", "prepare.image_size": 16,  # the size its prepared folder is made at
              "mitigate.before_compression": [], "mitigate.after": []}  # binary remedies off


def _finetune_in_process(cwd, data, out, live, params):
    """The finetune stage's command, called in this process (a subprocess would spend ~10 s importing torch)."""
    import yaml

    from stages.finetune import main
    from tests.test_stages import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in params.items():
        section, key = dotted.split(".", 1)
        raw[section][key] = value
    (cwd / "params.yaml").write_text(yaml.safe_dump(raw))
    main(seed=0, data=data, out=out, live_dir=live, arch=None, study_model=None, study_live=None,
         params_file=cwd / "params.yaml")


def _model(classes=None):
    torch.manual_seed(0)
    return build_model("face_resnet10", small_input_stem=True, classes=classes)


def test_an_audited_state_dict_loads_exactly(tmp_path):
    source = _model()
    torch.save(source.state_dict(), tmp_path / "model.pth")
    target = _model()
    torch.nn.init.zeros_(target.fc.weight)
    load_audited(target, str(tmp_path / "model.pth"))
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name]), name


def test_ddp_prefixed_keys_and_a_wrapped_state_dict_are_accepted(tmp_path):
    source = _model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pth")
    target = _model()
    load_audited(target, str(tmp_path / "ddp.pth"))
    assert torch.equal(target.fc.weight, source.fc.weight)


@pytest.mark.parametrize("damage, message", [
    ("classes", "layer 'fc.weight' has shape (1, 256) but the model needs (3, 256)"),
    ("missing", "no tensor 'fc.bias'"),
    ("extra", "tensor 'head.weight' (and 0 more) is not in model.arch's model"),
    ("not_tensors", "holds no state dict of tensors"),
    ("pickled_code", "not a readable state dict"),
    ("absent", "the model to audit (model.pretrained) not found"),
])
def test_a_state_dict_that_does_not_fit_is_refused_naming_the_layer(tmp_path, damage, message):
    state = _model().state_dict()
    path = tmp_path / "model.pth"
    if damage == "missing":
        state.pop("fc.bias")
    elif damage == "extra":
        state["head.weight"] = torch.zeros(2)
    if damage == "not_tensors":
        torch.save({"epochs": 3}, path)
    elif damage == "pickled_code":
        torch.save({"fc.weight": pd.Timestamp("2026-01-01")}, path)  # an object weights_only refuses
    elif damage != "absent":
        torch.save(state, path)
    target = _model(classes=3 if damage == "classes" else None)
    with pytest.raises(FairquantError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_audited(target, str(path))


@pytest.fixture(scope="module")
def multiclass_prepared(tmp_path_factory, tiny_celeba):
    """The generated CelebA layout with Smiling as a two-class multi-class target (softmax head)."""
    cwd = tmp_path_factory.mktemp("mc")
    result = run_stage("prepare", ["--out", str(cwd / "prepared")], cwd,
                       {"data.root": str(tiny_celeba), "prepare.image_size": 16, **MULTICLASS})
    assert result.returncode == 0, result.stderr
    return cwd / "prepared"


def test_prepare_records_the_classes_of_a_multiclass_target(multiclass_prepared):
    info = json.loads((multiclass_prepared / "info.json").read_text())
    assert info["task"] == "multiclass" and info["classes"] == ["not Smiling", "Smiling"]
    table = pd.read_parquet(multiclass_prepared / "samples.parquet")
    assert table["y_true"].dtype == np.int16 and set(table["y_true"]) == {0, 1}
    assert all(set(row["per_class"]) <= {"Smiling", "not Smiling"} and sum(row["per_class"].values()) == row["n"]
               for row in info["counts"])


def test_finetune_trains_a_softmax_head_and_predict_writes_every_class_probability(tmp_path, multiclass_prepared):
    from fairquant.compress.checkpoints import load_fp32

    tiny = {"finetune.epochs": 1, "finetune.batch_size": 32, **MULTICLASS}
    _finetune_in_process(tmp_path, multiclass_prepared, tmp_path / "models" / "fp32", tmp_path / "live", tiny)
    model, config = load_fp32(tmp_path / "models" / "fp32")
    assert config["classes"] == ["not Smiling", "Smiling"] and model.fc.out_features == 2
    from stages.predict import predict_variant
    from fairquant.data.prepare import load_prepared
    from fairquant.params import load_params

    table, images, info = load_prepared(multiclass_prepared)
    params = load_params(tmp_path / "params.yaml")
    predict_variant(tmp_path / "models" / "fp32", tmp_path / "pred", table, images, info, params)
    test = pd.read_parquet(tmp_path / "pred" / "test.parquet")
    probabilities = np.stack(test["y_prob"].to_numpy())
    assert probabilities.shape == (len(test), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(test["y_pred"], probabilities.argmax(axis=1))
    np.testing.assert_allclose(test["y_score"], probabilities.max(axis=1))


def test_finetune_with_no_epochs_audits_the_given_model_unchanged(tmp_path, multiclass_prepared, monkeypatch):
    from fairquant.compress.checkpoints import load_fp32

    given = _model(classes=2)
    monkeypatch.chdir(tmp_path)  # model.pretrained is read relative to the repository, as dvc runs the stage
    (tmp_path / "data" / "pretrained").mkdir(parents=True)
    torch.save(given.state_dict(), tmp_path / "data" / "pretrained" / "ours.pth")
    params = {"finetune.epochs": 0, "model.pretrained": "data/pretrained/ours.pth",
              "model.small_input_stem": True, **MULTICLASS}
    _finetune_in_process(tmp_path, multiclass_prepared, tmp_path / "fp32", tmp_path / "live", params)
    model, config = load_fp32(tmp_path / "fp32")
    assert config["trained_here"] is False and config["pretrained"].endswith("ours.pth")
    for name, tensor in given.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["fine_tuned"] is False


def test_auditing_a_binary_model_on_a_multiclass_target_names_the_head(tmp_path, multiclass_prepared):
    (tmp_path / "data" / "pretrained").mkdir(parents=True)  # run_stage runs the stage in tmp_path
    torch.save(_model().state_dict(), tmp_path / "data" / "pretrained" / "binary.pth")
    params = {"finetune.epochs": 0, "model.pretrained": "data/pretrained/binary.pth", "model.small_input_stem": True,
              **MULTICLASS}
    result = run_stage("finetune", ["--data", str(multiclass_prepared), "--out", str(tmp_path / "fp32"),
                                    "--live", str(tmp_path / "live")], tmp_path, params)
    assert_clean_failure(result, "layer 'fc.weight' has shape (1, 256) but the model needs (2, 256)", tmp_path / "fp32")
    assert not (tmp_path / "live").exists()


@pytest.mark.parametrize("params, message", [
    ({"finetune.epochs": 0}, "finetune.epochs is 0 (audit a trained model as it is) but model.pretrained is null"),
    ({"finetune.epochs": 0, "model.pretrained": "data/pretrained/w.pth",
      "sweep.architectures": ["face_resnet10", "resnet18"]},
     "sweep.architectures lists ['resnet18'], which would have no weights"),
    ({"finetune.epochs": 0, "model.pretrained": "data/pretrained/w.pth", "seeds": [0, 1]},
     "seeds lists [0, 1]: every seed would audit the same model"),
    ({"data.task": "multiclass"}, "mitigate.before_compression lists fairalm, a binary method"),
    ({"data.task": "multiclass", "mitigate.before_compression": []}, "mitigate.after lists caleqodds, a binary method"),
    ({"data.task": "multiclass", "mitigate.before_compression": [], "mitigate.after": [],
      "mitigate.ceag": {"rate": "tpr", "tolerance": 0.02}}, "mitigate.ceag.rate is tpr, a binary rate"),
    ({"data.task": "multiclass", "data.positive": ["a"]}, "data.positive is set but data.task is multiclass"),
    ({"model.pretrained": "/home/me/ours.pth"}, "model.pretrained is '/home/me/ours.pth', outside data/pretrained/"),
    ({"model.pretrained": "data/pretrained/../../ours.pth"}, "outside data/pretrained/, the folder its stage depends on"),
    ({"model.pretrained": "data/pretrained"}, "outside data/pretrained/"),
])
def test_params_that_cannot_run_are_refused_on_load(params, message):
    import yaml

    from fairquant.params import parse_params
    from tests.test_stages import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in params.items():
        if "." not in dotted:  # a top-level key (seeds)
            raw[dotted] = value
            continue
        section, key = dotted.split(".", 1)
        raw[section][key] = value
    with pytest.raises(FairquantError, match=re.escape(message)):
        parse_params(raw)


def test_a_binary_remedy_on_a_multiclass_target_stops_the_stage_before_any_work(tmp_path):
    result = run_stage("finetune", ["--data", str(tmp_path / "none"), "--out", str(tmp_path / "fp32"),
                                    "--live", str(tmp_path / "live")], tmp_path, {"data.task": "multiclass"})
    assert_clean_failure(result, "mitigate.before_compression lists fairalm, a binary method", tmp_path / "fp32")
