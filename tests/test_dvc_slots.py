"""dvc.yaml's model and prediction folders are the slots fairquant/mitigate/slots.py names: the graph makes exactly the
study's slots, where the predict, mitigate_after and evaluate stages look for them, for the shipped params and for a
study with every remedy switched on (stages read through DVC's own resolver, foreach/matrix expanded)."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from fairquant.mitigate.slots import (LATENCY, POSTPROCESSED, TIMED, VARIANTS, model_slots, postprocessed_slots,
                                      predictions_folder, study_slots)
from fairquant.params import MitigateParams

ROOT = Path(__file__).resolve().parents[1]
EVERY_REMEDY = {"before_compression": ["fairalm", "dp_regularizer"], "during_prune": ["ceag", "equalized_loss"],
                "during_qat": ["ceag"], "during_kmeans": ["equalized_loss"], "after": ["caleqodds", "threshold"],
                "post_on": ["fp32", "ptq", "fairalm+ptq"], "precision": ["sensitivity"],
                "calibration_sets": ["balanced", "synthetic"]}


def resolved(tmp_path: Path, mitigate: dict | None, seeds: list[int]) -> tuple[dict, MitigateParams]:
    from dvc.repo import Repo

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seeds"] = seeds
    params["mitigate"].update(mitigate or {})
    Repo.init(str(tmp_path), no_scm=True)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with Repo(str(tmp_path)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
        out = {name: {"cmd": stage.cmd, "deps": [d.def_path for d in stage.deps],
                      "params": [key for d in stage.deps for key in (getattr(d, "params", None) or [])],
                      "outs": [o.def_path for o in stage.outs]} for name, stage in stages.items()}
    return out, MitigateParams(**params["mitigate"])


@pytest.mark.parametrize("mitigate", [None, EVERY_REMEDY], ids=["shipped", "every-remedy"])
def test_dvc_yaml_makes_exactly_the_study_slots_where_the_code_reads_them(tmp_path, mitigate):
    stages, params = resolved(tmp_path, mitigate, [0, 3])
    outs = [o for stage in stages.values() for o in stage["outs"]]
    for seed in (0, 3):
        models = sorted(o.split("/")[3] for o in outs if re.fullmatch(rf"data/models/s{seed}/[^/]+", o))
        assert models == sorted(model_slots(params))
        post = sorted(o.split("/")[4] for o in outs if o.startswith(f"data/predictions/s{seed}/{POSTPROCESSED}/"))
        assert post == sorted(postprocessed_slots(params))
        predict = stages[f"predict@{seed}"]
        assert predict["outs"] == [f"data/predictions/s{seed}/{VARIANTS}"]
        assert f"--models data/models/s{seed}" in " ".join(predict["cmd"].split())
        root = Path(f"data/predictions/s{seed}")
        for slot in study_slots(params):  # evaluate finds each slot where predict or mitigate_after wrote it
            folder = predictions_folder(root, slot, params).as_posix()
            assert any(folder == o or folder.startswith(o + "/") for o in outs), slot
        assert root.as_posix() in stages[f"evaluate@{seed}"]["deps"]
        latency = stages[f"latency@{seed}"]  # times exactly the timed slots' models, into the file evaluate reads
        assert latency["outs"] == [(root / LATENCY).as_posix()]
        assert [d for d in latency["deps"] if d.startswith("data/")] == [f"data/models/s{seed}/{s}" for s in TIMED]
        # adding a post-processor re-predicts nothing, a timing setting re-predicts nothing
        assert not {"mitigate.after", "mitigate.post_on", "latency"} & set(predict["params"])
    after = [s for name, s in stages.items() if name.startswith("mitigate_after@")]
    for stage in after:  # each post-processor reads a predicted variant, never another post-processor's output
        (source,) = [d for d in stage["deps"] if d.startswith("data/predictions/")]  # the seed's variants: so that
        assert source.endswith(f"/{VARIANTS}")  # the stage runs, and names a bad post_on slot, when it is missing
        assert f"--predictions {source}/" in " ".join(stage["cmd"].split())


def test_a_post_processor_on_a_slot_the_study_does_not_make_is_refused():
    from fairquant.errors import FairquantError

    from fairquant.params import parse_params

    with pytest.raises(FairquantError, match=r"mitigate.post_on names 'qat\+caleqodds', a slot this study does not"):
        parse_params({"mitigate": {"post_on": ["qat+caleqodds"]}})  # on load, since issue 20
    unchecked = MitigateParams.model_construct(**{**MitigateParams().model_dump(), "post_on": ["qat+caleqodds"]})
    with pytest.raises(FairquantError, match=r"mitigate.post_on names \['qat\+caleqodds'\]"):
        study_slots(unchecked)  # and still here, for a section built without validation


def test_model_slots_do_not_depend_on_the_post_processing_lists():
    plain = MitigateParams(**{**EVERY_REMEDY, "after": [], "post_on": []})
    assert model_slots(plain) == model_slots(MitigateParams(**EVERY_REMEDY))
    assert list(study_slots(MitigateParams(**EVERY_REMEDY)))[:len(model_slots(plain))] == list(model_slots(plain))


def test_a_post_processed_precision_plan_is_the_slot_it_claims():
    """A precision plan's name holds the number of layers it kept, also inside its post-processed slot's name."""
    from fairquant.errors import FairquantError
    from fairquant.mitigate.slots import check_slot_holds, study_model_names
    from fairquant.params import Params

    params = Params().model_copy(deep=True, update={"mitigate": Params().mitigate.model_copy(update={
        "precision": ["sensitivity"], "post_on": ["fp32", "sensitivity+ptq"], "after": ["caleqodds"]})})
    names = study_model_names(params)
    check_slot_holds("sensitivity+ptq", "sensitivity+ptq-w4-keep3", names=names, where="m")
    check_slot_holds("sensitivity+ptq+caleqodds", "sensitivity+ptq-w4-keep3+caleqodds", names=names, where="m")
    for slot, found in (("sensitivity+ptq", "sensitivity+ptq-w4-keep3+caleqodds"),
                        ("sensitivity+ptq+caleqodds", "sensitivity+ptq-w4-keepx+caleqodds"),
                        ("sensitivity+ptq", "sensitivity+ptq-w8-keep3")):
        with pytest.raises(FairquantError, match="slot holds 'sensitivity\\+ptq-w4-keep<k>"):
            check_slot_holds(slot, found, names=names, where="m")
