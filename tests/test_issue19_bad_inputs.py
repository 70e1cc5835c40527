"""Bad inputs to issue 19's new keys and files (the folder layout, CIFAR-100, audited state dicts, RecordIO race
maps, multi-class predictions): each is refused with one line naming the problem and the fix, never a traceback
and never a silent wrong result."""

import io
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from fairquant.errors import FairquantError
from fairquant.params import DataParams
from tests.conftest import write_prepared
from tests.test_stages import assert_clean_failure, run_stage

BINARY_REMEDIES_OFF = {"mitigate.before_compression": [], "mitigate.after": []}


def _folder(root, frame, table="labels.csv"):
    root.mkdir(parents=True, exist_ok=True)
    if table.endswith(".csv"):
        frame.to_csv(root / table, index=False)
    else:
        frame.to_parquet(root / table)
    return root


def _rows(n=6):
    return pd.DataFrame({"file": [f"{i}.jpg" for i in range(n)], "Expression": ["a", "b", "c"] * (n // 3),
                         "Male": ["0", "1"] * (n // 2)})


def _folder_params(root, **changes):
    return DataParams(source="folder", root=str(root), target="Expression", task="multiclass", protected=["Male"],
                      **changes)


def test_a_control_character_in_a_file_path_is_refused_by_the_prepare_stage(tmp_path):
    frame = _rows()
    frame.loc[0, "file"] = "0.jpg\x00.png"  # the first row: files are checked in table order
    root = _folder(tmp_path / "data", frame)
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path,
                       {"data.source": "folder", "data.root": str(root), "data.target": "Expression",
                        "data.task": "multiclass", **BINARY_REMEDIES_OFF})
    assert_clean_failure(result, "labels.csv: line 2: file '0.jpg\\x00.png' holds a control character",
                         tmp_path / "prepared")


@pytest.mark.parametrize("column, cells, found", [
    ("Male", lambda n: [[i % 2] for i in range(n)], "ndarray"),  # a list column: it printed as the group '[0]'
    ("file", lambda n: [f"{i}.jpg".encode() for i in range(n)], "bytes"),
])
def test_a_parquet_cell_that_is_not_one_value_is_refused_with_its_row(tmp_path, column, cells, found):
    from fairquant.data.folder import load_folder

    frame = _rows()
    frame[column] = cells(len(frame))
    root = _folder(tmp_path, frame, "labels.parquet")
    with pytest.raises(FairquantError, match=rf"labels.parquet: row 1: '{column}' cell holds a {found}, not a text"):
        load_folder(root, _folder_params(root, folder={"table": "labels.parquet"}))


def test_cifar_labels_that_are_not_integers_are_refused_not_truncated(tmp_path):
    from fairquant.data.loaders import _read_cifar_batch

    batch = {"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0.5, 1.5, 2.0]}
    (tmp_path / "train").write_bytes(pickle.dumps(batch))
    with pytest.raises(FairquantError, match="fine_labels are float64, not integer class indices"):
        _read_cifar_batch(tmp_path / "train", "fine_labels", "CIFAR-100 python file")
    batch["fine_labels"] = [0, 1, 2]
    (tmp_path / "train").write_bytes(pickle.dumps(batch))
    assert _read_cifar_batch(tmp_path / "train", "fine_labels", "CIFAR-100 python file")[1].tolist() == [0, 1, 2]


def test_coarse_cifar100_labels_on_another_source_are_refused_on_load():
    with pytest.raises(ValidationError, match="data.cifar100_labels is coarse but data.source is mnist"):
        DataParams(source="mnist", target="class", task="multiclass", protected=["class"], cifar100_labels="coarse")
    assert DataParams(source="cifar100", target="class", task="multiclass", protected=["class"],
                      cifar100_labels="coarse").cifar100_labels == "coarse"


def _face_resnet(classes=None, embedding_dim=None):
    from fairquant.models import build_model

    torch.manual_seed(0)
    return build_model("face_resnet10", small_input_stem=False, classes=classes, embedding_dim=embedding_dim)


@pytest.mark.parametrize("write, message", [
    (lambda f: f.write_bytes(b""), "not a readable state dict (EOFError: empty file)"),
    (lambda f: torch.save({1: torch.zeros(1)}, f), "holds no state dict of tensors (layer name -> tensor)"),
    (lambda f: torch.save({k: v.fill_(float("nan")) if k == "fc.weight" else v
                           for k, v in _face_resnet(classes=3).state_dict().items()}, f),
     "layer 'fc.weight' holds NaN or infinite values"),
])
def test_a_damaged_model_to_audit_is_refused(tmp_path, write, message):
    from fairquant.models import load_audited

    write(tmp_path / "m.pt")
    with pytest.raises(FairquantError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_audited(_face_resnet(classes=3), str(tmp_path / "m.pt"))


def test_fine_tuning_from_an_empty_pretrained_file_is_refused(tmp_path):
    from fairquant.models import load_pretrained

    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(FairquantError, match="m.pt: not a readable state dict"):
        load_pretrained(_face_resnet(), str(tmp_path / "m.pt"))


@pytest.mark.parametrize("state, message", [
    (lambda s: {**s, "fc.bias": torch.full_like(s["fc.bias"], float("inf"))}, "layer fc.bias holds NaN or infinite"),
    (lambda s: {0: s["fc.bias"]}, "not a state dict"),
])
def test_a_damaged_verification_backbone_is_refused(tmp_path, state, message):
    from fairquant.verify.pretrained import load_backbone

    model = _face_resnet(embedding_dim=16)
    torch.save(state(model.state_dict()), tmp_path / "backbone.pth")
    with pytest.raises(FairquantError, match=message):
        load_backbone(model, tmp_path / "backbone.pth", "face_resnet10")


def _jpeg(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, format="JPEG")
    return out.getvalue()


def test_an_empty_race_map_is_refused(tmp_path):
    from fairquant.data.recordio import read_race_map

    (tmp_path / "map.csv").write_text("")
    with pytest.raises(FairquantError, match="map.csv: not a readable CSV .*header 'identity,race'"):
        read_race_map(tmp_path / "map.csv", ["African"])


def test_a_race_map_that_misses_identities_is_refused_not_dropping_them(tmp_path):
    from fairquant.data.recordio import read_recordio, write_recordio

    write_recordio(tmp_path / "rec", {0: [_jpeg((1, 2, 3))], 1: [_jpeg((9, 9, 9))], 2: [_jpeg((5, 5, 5))]})
    with pytest.raises(FairquantError, match="train_race_map lacks 2 of the 3 training identities \\(first: label 1\\)"):
        read_recordio(tmp_path / "rec", races=["Asian"], race_map={0: "Asian"})
    table, _ = read_recordio(tmp_path / "rec", races=["Asian"], race_map={0: "Asian", 1: "unknown", 2: "African"})
    assert table["identity_name"].tolist() == ["0"]  # listed as unknown or of another race: dropped, as asked


def _info(name, classes):
    from fairquant.results import PredictionsInfo

    details = {} if classes is None else {"classes": classes}
    return PredictionsInfo(name=name, kind=name, kernels="fp32", details=details, size_bytes=1, synthetic=True)


@pytest.mark.parametrize("variant, message", [
    (["a", "b", "c", "d"], r"ptq are for classes \['a', 'b', 'c', 'd'\] but fp32's for \['a', 'b', 'c'\]"),
    (["c", "b", "a"], r"ptq are for classes \['c', 'b', 'a'\]"),
    (None, r"ptq are for classes None"),
    ("abc", r"details.classes in info.json is 'abc', not a list of two or more distinct class names"),
])
def test_predictions_of_other_classes_than_fp32s_are_refused(variant, message):
    from fairquant.fairness.evaluation import check_same_classes

    check_same_classes({"fp32": _info("fp32", ["a", "b", "c"]), "ptq": _info("ptq", ["a", "b", "c"])})
    with pytest.raises(FairquantError, match=message):
        check_same_classes({"fp32": _info("fp32", ["a", "b", "c"]), "ptq": _info("ptq", variant)})


def test_finetune_refuses_a_prepared_folder_of_the_other_task(tmp_path):
    import yaml

    from stages.finetune import main
    from tests.test_stages import ROOT

    prepared = write_prepared(tmp_path / "prepared")  # binary: its info.json has no classes
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["task"] = "multiclass"
    raw["mitigate"].update(before_compression=[], after=[])
    raw["prepare"]["image_size"] = 8  # write_prepared's size: only the task differs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(FairquantError, match="was made with task 'binary' but params.yaml has data.task 'multiclass'; "
                                             "re-run prepare"):
        main(seed=0, data=prepared, out=tmp_path / "fp32", live_dir=tmp_path / "live", arch=None, study_model=None,
             study_live=None, params_file=tmp_path / "params.yaml")
    assert not (tmp_path / "fp32").exists() and not (tmp_path / "live").exists()


def test_a_column_named_twice_in_the_header_is_refused(tmp_path):
    from fairquant.data.folder import load_folder

    root = _folder(tmp_path, _rows())
    text = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([text[0] + ",Male"] + [line + ",1" for line in text[1:]]) + "\n")
    with pytest.raises(FairquantError, match="labels.csv: the header names column 'Male' twice; rename or drop one"):
        load_folder(root, _folder_params(root))

