"""The sweep: points named in params, their sections, dynamic activation ranges, the per-seed evaluation with its
curves' trends, and the report's curves, heatmap, Pareto front, plot tables and compact metrics."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fairquant.compress.fakequant import ActivationQuantizer, quantize_model
from fairquant.errors import FairquantError
from fairquant.fairness.sweep import curves, evaluate_sweep, sweep_points
from fairquant.mitigate.slots import sweep_slots
from fairquant.params import EvaluateParams, Params, SweepParams, parse_params
from fairquant.report import render_markdown
from fairquant.report.document import Document
from fairquant.report.sweep import plot_frames, sweep_metrics, sweep_section
from fairquant.results import PredictionsInfo


def test_the_default_sweep_is_the_ptq_curve_of_the_default_classifier():
    sweep = Params().sweep
    assert sweep.folders() == ["ptq-w8a8-train", "ptq-w6a6-train", "ptq-w4a4-train", "ptq-w3a3-train",
                               "ptq-w2a2-train"]
    assert sweep_slots(sweep)[0] == "face_resnet10/fp32" and len(sweep_slots(sweep)) == 6


def test_a_point_overrides_only_its_values_and_names_its_curve():
    params = parse_params({"sweep": {"ptq": ["w4a4", "w4", "w8a8-dyn"], "kmeans": ["k4"], "prune": ["s50"],
                                     "qat": ["w2a8"], "ptq_calibration": ["train", "balanced"]}})
    w4 = params.section_for("ptq", "w4")
    assert (w4.bits, w4.activation_bits, w4.observer) == (4, None, params.quantize_ptq.observer)
    dynamic = params.section_for("ptq", "w8a8-dyn")
    assert dynamic.activation_ranges == "dynamic" and not dynamic.uses_int8_kernels()
    assert dynamic.variant_name() == "ptq-w8a8-dyn-train"
    assert params.section_for("ptq", "w8a8").uses_int8_kernels()  # the real int8 point
    assert params.section_for("kmeans", "k4").clusters == 4 and params.section_for("prune", "s50").sparsity == 0.5
    assert params.section_for("qat", None) == params.quantize_qat
    series = {p.name: p.series for p in params.sweep.points()}
    assert series == {"w4a4": "ptq W=A", "w4": "ptq weight-only", "w8a8-dyn": "ptq W=A dynamic", "w2a8": "qat A8",
                      "k4": "kmeans", "s50": "prune"}
    assert len(params.sweep.folders()) == 3 * 2 + 3  # each PTQ point with each calibration set


@pytest.mark.parametrize("sweep, words", [
    ({"ptq": ["w4a"]}, "'w4a' is not a ptq point"),
    ({"ptq": ["w4-dyn"]}, "is not a ptq point"),
    ({"ptq": ["w1a1"]}, "is not a ptq point"),
    ({"ptq": ["w17a17"]}, "is not a ptq point"),
    ({"ptq": ["w4a4", "w4a4"]}, "more than once"),
    ({"qat": ["w4a4-dyn"]}, "is not a qat point"),
    ({"kmeans": ["k1"]}, "is not a kmeans point"),
    ({"kmeans": ["k300"]}, "is not a kmeans point"),
    ({"prune": ["s100"]}, "is not a prune point"),
    ({"prune": ["50"]}, "is not a prune point"),
    ({"ptq_calibration": []}, "sweep.ptq_calibration"),
    ({"ptq_calibration": ["test"]}, "sweep.ptq_calibration"),
    ({"architectures": []}, "sweep.architectures"),
    ({"architectures": ["vgg16"]}, "sweep.architectures"),
    ({"architectures": ["resnet18", "resnet18"]}, "more than once"),
    ({"ptq": "w4a4"}, "sweep.ptq"),
    ({"points": ["w4a4"]}, "unknown key 'sweep.points'"),
    ({"ptq": [4]}, "'sweep.ptq.0': expected a valid string; found 4"),
    ({"ptq": ["W4A4"]}, "'W4A4' is not a ptq point"),
    ({"ptq": ["w8a8", False]}, "'sweep.ptq.1': expected a valid string; found False"),  # YAML's bare `no`
    ({"ptq": ["w4a4 "]}, "'w4a4 ' is not a ptq point"),
    ({"prune": ["s50.5"]}, "'s50.5' is not a prune point"),
    ({"kmeans": ["k016"]}, "'k016' is not a kmeans point"),
    ({"qat": ["w8a8-dyn"]}, "'w8a8-dyn' is not a qat point"),
    ({"ptq": []}, "the sweep lists no points; list at least one in sweep.ptq, qat, kmeans or prune"),
])
def test_bad_sweep_params_are_refused_in_one_line(sweep, words):
    with pytest.raises(FairquantError, match="params.yaml") as error:
        parse_params({"sweep": sweep})
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_point_its_section_cannot_run_is_refused_on_load_naming_both_keys():
    with pytest.raises(FairquantError, match="sweep.ptq point 'w4a4' cannot run.*kernels=int8"):
        parse_params({"quantize_ptq": {"kernels": "int8"}, "sweep": {"ptq": ["w8a8", "w4a4"]}})


@pytest.mark.parametrize("raw, words", [
    ({"quantize_ptq": {"activation_ranges": "dynamic", "activation_bits": None}},
     "'quantize_ptq': activation_ranges is dynamic but activation_bits is null"),
    ({"quantize_qat": {"activation_ranges": "dynamic"}, "sweep": {"qat": ["w4"]}},
     "sweep.qat point 'w4' cannot run with the section's settings: activation_ranges is dynamic"),
    ({"quantize_ptq": {"activation_ranges": "Dynamic"}}, "'quantize_ptq.activation_ranges': expected 'static' or"),
])
def test_dynamic_ranges_without_quantized_inputs_are_refused_on_load(raw, words):
    with pytest.raises(FairquantError) as error:
        parse_params(raw)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_dynamic_ranges_with_a_layers_map_that_quantizes_inputs_load():
    params = parse_params({"quantize_ptq": {"activation_ranges": "dynamic", "activation_bits": None,
                                            "layers": {"fc": 8}}})
    assert params.quantize_ptq.activation_ranges == "dynamic"


def test_a_bad_point_on_the_command_line_is_one_line():
    with pytest.raises(FairquantError, match="--point w4x4: 'w4x4' is not a ptq point"):
        Params().section_for("ptq", "w4x4")


def test_dynamic_ranges_are_each_samples_own_and_never_depend_on_the_batch():
    quantizer = ActivationQuantizer(8, False, "minmax", 1.0, dynamic=True)
    x = torch.randn(4, 3, 5, 5)
    x[1] *= 20
    y = quantizer(x)
    for i in range(4):  # each sample within half a step of its own range
        step = (x[i].max().clamp(min=0) - x[i].min().clamp(max=0)) / 255
        assert (y[i] - x[i]).abs().max() <= step / 2 + 1e-6
        assert torch.equal(quantizer(x[i:i + 1])[0], y[i])  # alone or in a batch: the same values
    assert (y[0] - x[0]).abs().max() < (y[1] - x[1]).abs().max()  # a static range would give sample 0 sample 1's step


def test_a_dynamic_scheme_builds_dynamic_quantizers():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 1))
    scheme = Params().section_for("ptq", "w8a8-dyn").scheme()
    quantized = quantize_model(model, scheme)
    quantizers = [m for m in quantized.modules() if isinstance(m, ActivationQuantizer)]
    assert len(quantizers) == 2 and all(q.dynamic for q in quantizers)


def _frames(seed=0, n_major=500, n_minor=150, losses=(0, 3, 8, 20, 40)):
    """fp32 and five points of one curve on the same rows; each point loses ``loss`` of the minority's hits."""
    rng = np.random.default_rng(seed)
    groups = np.array(["Female"] * n_major + ["Male"] * n_minor)
    y = rng.integers(0, 2, groups.size)
    fp32 = np.where(rng.random(groups.size) < 0.9, y, 1 - y)
    hits = np.flatnonzero((groups == "Male") & (y == 1) & (fp32 == 1))
    sweep = SweepParams()
    frames, infos = {}, {}
    base = pd.DataFrame({"sample_id": np.arange(groups.size), "y_true": y, "Male": (groups == "Male").astype(int)})
    base["Male"] = np.where(groups == "Male", "Male", "Female")
    for slot, loss in zip(["face_resnet10/fp32"] + [p.slot for p in sweep_points(sweep)], (0, *losses)):
        pred = fp32.copy()
        pred[hits[:loss]] = 0
        frames[slot] = base.assign(y_pred=pred, y_score=pred.astype("float32"))
        name = slot.split("/")[1]
        infos[slot] = PredictionsInfo(name=name, kind="fp32" if name == "fp32" else "fakequant", kernels="simulated",
                                      details={}, size_bytes=4_000_000 // (1 if name == "fp32" else 4), synthetic=True)
    return frames, infos, sweep


def _evaluated(seed=0):
    frames, infos, sweep = _frames(seed)
    params = EvaluateParams(bootstrap=200, privileged_group="Female")
    results, trends = evaluate_sweep(frames, infos, sweep, ["Male"], params)
    return {"points": {slot: r.to_dict() for slot, r in results.items()}, "trends": json.loads(json.dumps(trends))}


def test_the_curve_is_ordered_deepest_last_and_its_trend_widens():
    sweep = SweepParams(ptq=["w2a2", "w8a8", "w4a4"], prune=["s90", "s50"])
    ordered = {key: [p.name for p in members] for key, members in curves(sweep_points(sweep)).items()}
    assert ordered[("face_resnet10", "ptq", "ptq W=A", "train")] == ["w8a8", "w4a4", "w2a2"]
    assert ordered[("face_resnet10", "prune", "prune", None)] == ["s50", "s90"]
    sweep_result = _evaluated()
    (curve,) = sweep_result["trends"]["curves"]
    assert [p["x"] for p in curve["points"]] == [8, 6, 4, 3, 2]
    assert curve["trend"]["gap_changes"]["tpr_gap"]["verdict"] == "widens"
    assert curve["trend"]["group_rates"]["tpr"]["Male"]["verdict"] == "narrows"  # Male's TPR falls with depth
    point = sweep_result["points"]["face_resnet10/ptq-w2a2-train"]
    assert point["vs_fp32"]["gaps"]["tpr_gap"]["ci_low"] > 0  # 40 lost hits: a significant widening


def test_the_report_reads_the_curve_heatmap_and_pareto_and_writes_compact_metrics(tmp_path):
    per_seed = {0: _evaluated(0), 1: _evaluated(1)}
    section = sweep_section(per_seed)
    titles = [s.title for s in section.subsections]
    assert titles[0] == "Curve: face_resnet10 ptq W=A (train)" and "Trends across training seeds" in titles
    assert "Heatmap: methods x depth" in titles and "Pareto front over every point" in titles
    curve_table = section.subsections[0].blocks[0]
    assert curve_table.row("w2a2").get("TPR gap change vs fp32").emphasis  # significant: bold
    assert curve_table.row("fp32").get("TPR gap change vs fp32").note == "(reference)"
    trend = section.subsections[0].blocks[1].row("tpr_gap change")
    assert trend["as compression deepens"].value == "widens"
    markdown = render_markdown(Document("t", (), (section,)), assets=tmp_path)
    assert "widens" in markdown and (tmp_path / "sweep" / "heatmap.png").is_file()
    assert (tmp_path / "sweep" / "pareto.png").is_file() and (tmp_path / "sweep" / "face_resnet10_ptq_WeqA_train.png").is_file()
    frames = plot_frames(per_seed[0])
    assert set(frames) == {"sweep/groups", "sweep/gaps", "sweep/heatmap", "sweep/pareto"}
    groups = frames["sweep/groups"]
    assert set(groups["group"]) == {"Female", "Male"} and len(groups) == 10
    assert (groups["accuracy_low"] <= groups["accuracy"]).all() and (groups["accuracy"] <= groups["accuracy_high"]).all()
    assert frames["sweep/pareto"]["on_front"].any()
    metrics = sweep_metrics(per_seed)
    flat = pd.json_normalize(metrics).columns
    assert len(flat) <= 30  # a curve is a few keys, not a column per number
    assert metrics["face_resnet10 ptq W=A (train)"]["tpr_gap_verdict"] == "widens/widens"


def test_a_point_at_chance_or_collapsed_is_left_out_of_the_trend_with_its_reason():
    from fairquant.fairness.sweep import broken

    fp32 = {"collapsed": False, "overall": {"tpr": 0.9, "fpr": 0.1}}  # balanced accuracy 0.9: 0.4 above chance
    assert broken({"collapsed": False, "overall": {"tpr": 0.85, "fpr": 0.15}}, fp32) is None
    assert broken({"collapsed": False, "overall": {"tpr": 0.98, "fpr": 0.9}}, fp32).startswith("at chance")
    assert broken({"collapsed": True, "overall": {"tpr": 1.0, "fpr": 1.0}}, fp32) == "collapsed to one class"


def _stage(stage, args, cwd, params=None):
    from test_stages import run_stage

    return run_stage(stage, args, cwd, params)


@pytest.mark.parametrize("stage, args, message", [
    ("finetune", ["--data", "missing", "--arch", "vgg16", "--out", "out", "--live", "live"],
     "--arch vgg16 is not an architecture fairquant builds"),
    ("finetune", ["--data", "missing", "--arch", "face_resnet10", "--study-model", "nowhere", "--out", "out",
                  "--live", "live"], "nowhere holds no model.pt"),
    ("quantize_ptq", ["--point", "w4x4", "--model", "m", "--calibration", "c", "--out", "out"],
     "--point w4x4: 'w4x4' is not a ptq point"),
    ("quantize_kmeans", ["--point", "w4a4", "--data", "d", "--model", "m", "--out", "out", "--live", "live"],
     "--point w4a4: 'w4a4' is not a kmeans point"),
    ("predict", ["--sweep", "--data", "d", "--models", "nowhere", "--out", "out"],
     "nowhere lacks the models of ['face_resnet10/fp32'"),
    ("sweep_evaluate", ["--predictions", "nowhere", "--out", "out"],
     "nowhere lacks predictions of ['face_resnet10/fp32'"),
    ("report", ["--eval", "e", "--sweep", "nowhere", "--summary", "out", "--plots", "p"], "holds no fp32.json"),
    ("report", ["--eval", "e", "--summary", "out/s.json", "--sweep-summary", "out/sweep.json", "--plots", "out/p"],
     "--sweep-summary needs --sweep"),
    ("report", ["--eval", "e", "--sweep", "s", "--summary", "out/s.json", "--sweep-summary", "e", "--plots", "out/p"],
     "--sweep-summary e is a folder; the report writes a file there"),
])
def test_sweep_stages_refuse_bad_inputs_in_one_line_with_nothing_written(tmp_path, stage, args, message):
    from test_stages import assert_clean_failure

    (tmp_path / "e" / "s0").mkdir(parents=True)
    assert_clean_failure(_stage(stage, args, tmp_path), message, tmp_path / "out")


@pytest.mark.parametrize("args, made, message", [
    (["--seed", "0", "--study-model", "study"], [], "--study-model and --study-live go with --arch"),
    (["--seed", "1", "--arch", "face_resnet10", "--study-model", "study"], [],
     "study holds a fp32 face_resnet10 model of training seed 0, not the fp32 face_resnet10 of seed 1"),
    (["--seed", "0", "--arch", "vit_small", "--study-model", "study"], [],
     "not the fp32 vit_small of seed 0"),  # params below make vit_small the study's arch
    (["--seed", "0", "--arch", "face_resnet10", "--study-model", "study", "--study-live", "curves"], ["live"],
     "live is a file; the output is a folder"),  # nothing copied to out before the live folder is refused
])
def test_finetune_reuses_only_the_studys_own_fp32_and_all_or_nothing(tmp_path, args, made, message):
    from fairquant.compress.checkpoints import save_variant
    from test_stages import assert_clean_failure

    save_variant(tmp_path / "study", {}, {"kind": "fp32", "arch": "face_resnet10", "training_seed": 0})
    (tmp_path / "curves").mkdir()
    for name in made:
        (tmp_path / name).write_text("x")
    params = {"model.arch": "vit_small"} if "vit_small" in args else None
    result = _stage("finetune", [*args, "--data", "missing", "--out", "out", "--live", "live"], tmp_path, params)
    assert_clean_failure(result, message, tmp_path / "out")


def test_the_report_refuses_a_seed_without_its_sweep_trends(tmp_path):
    from stages.report import seed_sweep

    (tmp_path / "s0" / "points" / "face_resnet10").mkdir(parents=True)
    with pytest.raises(FairquantError, match="holds no trends.json; run the sweep_evaluate stage"):
        seed_sweep(tmp_path / "s0", SweepParams())
    _write_sweep(tmp_path / "s0", _evaluated())
    (tmp_path / "s0" / "points" / "face_resnet10" / "ptq-w4a4-train.json").unlink()
    with pytest.raises(FairquantError, match=r"lacks the metrics of \['face_resnet10/ptq-w4a4-train'\]"):
        seed_sweep(tmp_path / "s0", SweepParams())


def _write_sweep(folder, evaluated):
    for slot, result in evaluated["points"].items():
        (folder / "points" / slot).parent.mkdir(parents=True, exist_ok=True)
        (folder / "points" / f"{slot}.json").write_text(json.dumps(result))
    (folder / "trends.json").write_text(json.dumps(evaluated["trends"]))


def _curves_edit(edit):
    return lambda t: {"curves": [edit(c) for c in t["curves"]]}


def _point_edit(edit):
    def change(points):
        edit(points["face_resnet10/ptq-w4a4-train"])
        return points
    return change


@pytest.mark.parametrize("trends_edit, points_edit, sweep, message", [
    (lambda t: [], None, {}, "not a sweep_evaluate trends file (expected an object with a list of curves)"),
    (lambda t: {"curves": "x"}, None, {}, "expected an object with a list of curves"),
    (_curves_edit(lambda c: {k: v for k, v in c.items() if k != "points"}), None, {}, "curve 0 lacks ['points']"),
    (_curves_edit(lambda c: {k: v for k, v in c.items() if k != "trend"}), None, {}, "curve 0 lacks ['trend']"),
    (_curves_edit(lambda c: {**c, "trend": {**c["trend"], "gap_changes": {}}}), None, {},
     "curve 0's trend lacks answers for every gap"),
    (_curves_edit(lambda c: {**c, "points": [{**p, "x": "eight"} for p in c["points"]]}), None, {},
     "points are not objects with a slot, a point and a numeric x"),
    (lambda t: {"curves": []}, None, {}, "holds the sweep of other params"),
    (None, None, {"ptq": ["w8a8", "w4a4"]}, "holds the sweep of other params (differs in"),
    (None, None, {"ptq": ["w8a8", "w6a6", "w5a5", "w3a3", "w2a2"]}, "'face_resnet10/ptq-w5a5-train'"),
    (None, None, {"architectures": ["resnet18"]}, "holds the sweep of other params"),
    (None, _point_edit(lambda r: [g.pop("intervals") for g in r["groups"].values()]), {},
     "lacks ['groups.Female.intervals', 'groups.Male.intervals']"),
    (None, _point_edit(lambda r: r["vs_fp32"].pop("group_changes")), {}, "lacks ['vs_fp32.group_changes']"),
])
def test_the_report_refuses_a_damaged_or_stale_sweep_in_one_line(tmp_path, trends_edit, points_edit, sweep, message):
    from stages.report import seed_sweep

    evaluated = _evaluated()
    if trends_edit:
        evaluated["trends"] = trends_edit(evaluated["trends"])
    if points_edit:
        evaluated["points"] = points_edit(evaluated["points"])
    _write_sweep(tmp_path / "s0", evaluated)
    with pytest.raises(FairquantError) as error:
        seed_sweep(tmp_path / "s0", SweepParams(**sweep))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_report_reads_only_the_points_params_lists(tmp_path):
    from stages.report import seed_sweep

    evaluated = _evaluated()
    _write_sweep(tmp_path / "s0", evaluated)
    stale = tmp_path / "s0" / "points" / "face_resnet10" / "ptq-w5a5-train.json"  # left by other params
    stale.write_text(json.dumps(evaluated["points"]["face_resnet10/ptq-w4a4-train"]))
    read = seed_sweep(tmp_path / "s0", SweepParams())
    assert set(read["points"]) == set(sweep_slots(SweepParams())) and "face_resnet10/ptq-w5a5-train" not in read["points"]


def test_a_vit_in_the_sweep_is_checked_against_the_image_size_on_load():
    with pytest.raises(FairquantError, match="prepare.image_size is 33"):
        parse_params({"prepare": {"image_size": 33}, "sweep": {"architectures": ["face_resnet10", "vit_small"]}})
    assert parse_params({"prepare": {"image_size": 32}, "sweep": {"architectures": ["vit_small"]}})


def test_a_trend_resting_on_a_handful_of_flips_is_not_called_a_trend():
    """The reviewer's case: the only change on the curve is 4 lost Male true positives (2 already at 3 bits). The
    point's exact McNemar p is 0.125, so no point differs from fp32; the row bootstrap alone says the TPR gap widens
    (slope interval above 0), and the verdict must not."""
    groups = np.array(["Female"] * 660 + ["Male"] * 140)
    y = np.tile([0, 1], 400)
    rng = np.random.default_rng(0)
    fp32 = np.where(rng.random(800) < np.where(groups == "Male", 0.7, 0.95), y, 1 - y)
    male_hits = np.flatnonzero((groups == "Male") & (y == 1) & (fp32 == 1))
    sweep = SweepParams()
    base = pd.DataFrame({"sample_id": np.arange(800), "y_true": y, "Male": groups})
    frames, infos = {}, {}
    for slot, lost in zip(["face_resnet10/fp32"] + [p.slot for p in sweep_points(sweep)], (0, 0, 0, 0, 2, 4)):
        pred = fp32.copy()
        pred[male_hits[:lost]] = 0
        frames[slot] = base.assign(y_pred=pred, y_score=pred.astype("float32"))
        infos[slot] = PredictionsInfo(name=slot.split("/")[1], kind="fakequant", kernels="simulated", details={},
                                      size_bytes=1000, synthetic=True)
    results, trends = evaluate_sweep(frames, infos, sweep, ["Male"],
                                     EvaluateParams(bootstrap=1000, privileged_group="Female"))
    deepest = results["face_resnet10/ptq-w2a2-train"].vs_fp32
    assert deepest["group_changes"]["tpr"]["Male"]["p_value"] == pytest.approx(0.125)
    tpr = trends["curves"][0]["trend"]["gap_changes"]["tpr_gap"]
    assert tpr["ci_low"] > 0  # the bootstrap's own answer: it would have said widens
    assert tpr["verdict"] == "no clear trend" and tpr["gated"].startswith("no point's own paired change")


@pytest.fixture(scope="module")
def sweep_models(tmp_path_factory):
    """A prepared folder, an untrained fp32 and its real simulated w8a8 point (the quantize_ptq stage)."""
    from conftest import write_prepared
    from fairquant.compress.checkpoints import save_variant
    from fairquant.io import read_images, write_images, write_json
    from fairquant.models import build_model

    root = tmp_path_factory.mktemp("sweep_models")
    write_prepared(root / "prepared", n=60, size=16)
    model = build_model("face_resnet10", small_input_stem=False, image_size=16)
    fp32 = root / "models" / "face_resnet10" / "fp32"
    save_variant(fp32, model.state_dict(), {"kind": "fp32", "name": "fp32", "arch": "face_resnet10",
                                            "small_input_stem": False, "image_size": 16, "synthetic": True,
                                            "target": "Smiling", "protected": ["Male"], "training_seed": 0})
    (root / "calibration").mkdir()
    write_images(root / "calibration" / "images.npy", np.array(read_images(root / "prepared" / "images.npy"))[:16])
    write_json(root / "calibration" / "info.json", {"set": "train", "size": 16})
    result = _stage("quantize_ptq", ["--point", "w8a8", "--model", str(fp32), "--calibration", str(root / "calibration"),
                                     "--out", str(root / "models" / "face_resnet10" / "ptq-w8a8-train")], root,
                    {"quantize_ptq.kernels": "simulated", "prepare.image_size": 16})
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.parametrize("damage, message", [
    ("w8a8 copied as w4a4", "ptq-w4a4-train holds the face_resnet10 model ptq-w8a8-train, not ptq-w4a4-train"),
    ("fp32 copied as w4a4", "ptq-w4a4-train holds the face_resnet10 model fp32, not ptq-w4a4-train"),
    ("data of another size", "holds a model of 16 px images but 24 px data"),
])
def test_predict_refuses_sweep_models_that_are_not_what_params_name_in_one_line(tmp_path, sweep_models, damage,
                                                                                message):
    import shutil

    from conftest import write_prepared
    from test_stages import assert_clean_failure

    models = tmp_path / "models" / "face_resnet10"
    shutil.copytree(sweep_models / "models", tmp_path / "models")
    source = {"w8a8 copied as w4a4": "ptq-w8a8-train", "fp32 copied as w4a4": "fp32"}.get(damage, "ptq-w8a8-train")
    shutil.copytree(models / source, models / "ptq-w4a4-train")
    data = write_prepared(tmp_path / "prepared24", n=60, size=24) if damage == "data of another size" \
        else sweep_models / "prepared"
    result = _stage("predict", ["--sweep", "--data", str(data), "--models", str(tmp_path / "models"), "--out", "out"],
                    tmp_path, {"sweep.ptq": ["w8a8", "w4a4"], "quantize_ptq.kernels": "simulated",
                               "data.protected": ["Male"],  # the data's own size: the stage checks it against params
                               "prepare.image_size": 24 if damage == "data of another size" else 16})
    assert_clean_failure(result, message, tmp_path / "out")  # one line: torchao's import chatter is silenced too
