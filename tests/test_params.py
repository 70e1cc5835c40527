import re
from pathlib import Path

import pytest

from fairquant.errors import FairquantError
from fairquant.params import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "synthetic" and params.model.arch == "face_resnet10"


def test_a_params_file_without_a_model_section_gets_the_default_classifier():
    """Found in review: the schema's model default was still resnet18 with the small-input stem after
    params.yaml moved to face_resnet10 with the stride-2 stem."""
    from fairquant.params import Params

    assert Params().model == load_params(ROOT / "params.yaml").model


def test_the_schema_defaults_are_the_shipped_params_file():
    """One source of truth: a section left out of a params file means the shipped study's values (the defaults once
    differed: 8 fine-tuning epochs instead of 4, no privileged group, no CEAG tolerance)."""
    from fairquant.params import Params

    assert Params() == load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("raw, message", [
    ({"finetune": {"epoch": 3}}, "params.yaml: unknown key 'finetune.epoch' (found 3); remove it or fix its spelling"),
    ({"finetune": {"epochs": -1}}, "params.yaml: 'finetune.epochs': expected greater than or equal to 0; found -1"),
    ({"model": {"arch": "vgg"}}, "params.yaml: 'model.arch': expected 'resnet18', 'resnet50', 'mobilenet_v2', "
                                 "'mobilenet_v3_small', 'efficientnet_b0', 'squeezenet1_1', 'face_resnet10' or "
                                 "'vit_small'; found 'vgg'"),
    ({"verify": {"generate": {"train_mix": {"African": 0.5, "Martian": 0.5}}}},
     "params.yaml: 'verify.generate': verify.generate.train_mix names unknown races ['Martian']; use African, Asian, "
     "Caucasian, Indian"),
    ({"verify": {"generate": {"train_mix": {"African": 0.5, "Asian": 0.2}}}},
     "params.yaml: 'verify.generate': verify.generate.train_mix shares must be >= 0 and sum to 1, found "
     "{'African': 0.5, 'Asian': 0.2}"),
    ({"verify": {"bits": [8, 8]}}, "params.yaml: 'verify': verify.bits lists a value more than once ([8, 8]); list "
                                   "each once"),
    ({"verify": {"calibration": ["distilled"]}}, "params.yaml: 'verify.calibration.0': expected 'train', 'balanced' "
                                                 "or 'synthetic'; found 'distilled'"),
    ({"generate": {"minority_share": 1.5}}, "params.yaml: 'generate.minority_share': expected less than 1; found 1.5"),
    ({"data": {"protected": []}}, "params.yaml: 'data.protected': List should have at least 1 item after validation, not 0; found []"),
    ({"nonsense": {}}, "params.yaml: unknown key 'nonsense' (found {}); remove it or fix its spelling"),
    ({"data": {"protected": ["Male", "Young", "Male"]}},
     "params.yaml: 'data': data.protected names Male more than once; list each attribute once"),
    ({"mitigate": {"after": ["caleqodds"], "post_on": []}},
     "params.yaml: 'mitigate': mitigate.after lists ['caleqodds'] but mitigate.post_on is empty, so none would run; "
     "name the slots to fix in post_on (e.g. [fp32, ptq]) or empty after"),
])
def test_errors_name_the_key_expected_and_found(raw, message):
    with pytest.raises(FairquantError) as info:
        parse_params(raw)
    assert str(info.value) == message


def test_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(FairquantError, match="expected a mapping of sections, found list"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(FairquantError, match="params file not found"):
        load_params(tmp_path / "params.yaml")



def test_each_remedy_is_declared_once_by_its_params_class():
    """Its section is named by its method; each mitigate list allows exactly its family's methods, in order."""
    import typing

    from fairquant.params import REMEDY_PARAMS, MitigateParams

    fields = MitigateParams.model_fields
    for remedy in REMEDY_PARAMS:
        assert fields[remedy.method].annotation is remedy
    families = {"before_compression": "before", "during_prune": "during", "during_qat": "during",
                "during_kmeans": "during", "after": "after", "precision": "precision"}
    for key, family in families.items():
        [allowed] = typing.get_args(fields[key].annotation)
        assert typing.get_args(allowed) == tuple(r.method for r in REMEDY_PARAMS if r.family == family)
    assert typing.get_args(typing.get_args(fields["after"].annotation)[0]) == ("caleqodds", "threshold")


def test_a_method_of_another_family_is_refused_in_a_list():
    with pytest.raises(FairquantError, match=r"^params.yaml: 'mitigate.after.0': expected 'caleqodds' or 'threshold'; "
                                             r"found 'ceag'$"):
        parse_params({"mitigate": {"after": ["ceag"]}})


def test_the_shipped_params_file_names_every_key_of_the_schema():
    """DVC reads the keys a stage lists from params.yaml: a schema key missing there fails `dvc repro` of any stage
    that lists it (the sweep's QAT points list quantize_qat.activation_ranges), and the file is the documentation."""
    import yaml

    from fairquant.params import Params

    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())

    def missing(file: dict, schema: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in schema.items():
            if key not in file:
                out.append(prefix + key)
            elif isinstance(value, dict) and isinstance(file[key], dict) and key != "layers":
                out += missing(file[key], value, f"{prefix}{key}.")
        return out

    assert missing(shipped, Params().model_dump()) == []


@pytest.mark.parametrize("mitigate", [
    {},
    {"before_compression": ["fairalm", "dp_regularizer"], "during_qat": ["ceag", "equalized_loss"],
     "during_kmeans": ["equalized_loss"], "calibration_sets": ["balanced", "distilled"], "precision": ["sensitivity"]},
    {"before_compression": [], "during_prune": [], "after": []},
])
def test_post_on_is_checked_against_the_slots_the_study_makes(mitigate):
    """The params-level list of model slots (checked on load) is the one fairquant.mitigate.slots builds."""
    from fairquant.mitigate.slots import model_slots

    section = parse_params({"quantize_kmeans": {"epochs": 0.5}, "mitigate": mitigate}).mitigate
    assert section.model_slot_names() == list(model_slots(section))


@pytest.mark.parametrize("raw, message", [
    ({"data": {"target": "Male"}}, "data.target 'Male' is also in data.protected, but data.task is binary"),
    ({"mitigate": {"post_on": ["fp23"]}}, "mitigate.post_on names 'fp23', a slot this study does not make"),
    ({"mitigate": {"during_kmeans": ["ceag"]}}, "mitigate.during_kmeans lists ceag but quantize_kmeans.epochs is 0"),
    ({"mitigate": {"ceag": {"tolerance": None}}}, "mitigate.during_prune lists ceag but mitigate.ceag.tolerance is null"),
    ({"mitigate": {"calibration_sets": ["train"]}}, "mitigate.calibration_sets lists train, quantize_ptq's own"),
    ({"finetune": {"epochs": True}}, "'finetune.epochs': expected a valid integer; found True; YAML read a boolean"),
    ({"evaluate": {"privileged_group": False}}, "found False; YAML reads an unquoted yes/no/on/off/true/false"),
    ({"data": None}, "section 'data' is empty (nothing indented below it)"),
    ({"distributed": {"nproc": 65}}, "'distributed.nproc': expected less than or equal to 64; found 65"),
    ({"distributed": {"backend": "mpi"}}, "'distributed.backend': expected 'auto', 'gloo' or 'nccl'; found 'mpi'"),
    ({"distributed": {"backend": "nccl"}, "prune": {"device": "cpu"}}, "distributed.backend is nccl but prune.device "
                                                                        "is cpu"),
    ({"distributed": {"backend": "nccl"}, "verify": {"train": {"device": "cpu"}}},
     "distributed.backend is nccl but verify.train.device is cpu"),
    ({"distributed": {"nproc": 4}, "verify": {"quantface": {"batch_size": 2}}},
     "verify.quantface.batch_size is 2 but distributed.nproc is 4: each process needs a row of every batch"),
])
def test_params_that_contradict_each_other_are_refused_on_load(raw, message):
    with pytest.raises(FairquantError, match=re.escape(message)):
        parse_params(raw)


def test_a_multiclass_target_may_be_its_own_group():
    params = parse_params({"data": {"target": "Male", "task": "multiclass"},
                           "mitigate": {"before_compression": [], "after": []}})
    assert params.data.target in params.data.protected


def test_yaml_1_2_exponents_are_numbers(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("finetune:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    params = load_params(path)
    assert (params.finetune.lr, params.finetune.weight_decay) == (0.001, 0.0005)


@pytest.mark.parametrize("text, message", [
    ("", "mine.yaml is empty; copy the shipped params.yaml"),
    ("# only a comment\n", "mine.yaml is empty"),
    ("finetune:\n  epochs: 4\n  epochs: 8\n", "mine.yaml:3:3: duplicate key 'epochs' in 'finetune' (first at line 2)"),
    ("finetune:\n\tepochs: 4\n", "mine.yaml:2:1: not valid YAML (found character '\\t' that cannot start any token); "
                                 "indent with spaces, not tabs"),
    ("data: 3\n", "mine.yaml:1:1: section 'data' must be a mapping of its keys, found 3"),
    ("seeds: [0]\nfinetune:\n  epochs: 2.5\n", "mine.yaml:3:3: 'finetune.epochs': expected a valid integer; found 2.5"),
])
def test_file_errors_name_the_file_and_the_line(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(FairquantError, match="^" + re.escape(str(tmp_path / message))):
        load_params(path)
