"""The verification wing: margin heads, embeddings with the mirror, pair scores, QuantFace, the variants the
compressors make of an embedding network, and the verify stages end to end on tiny generated data."""

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fairquant.compress import fakequant, int8
from fairquant.models import build_model
from fairquant.params import Params, QuantFaceParams
from fairquant.verify.embedding import embed, pair_scores
from fairquant.verify.heads import MarginHead
from fairquant.verify.training import quantface, raw_embeddings
from tests.study import VERIFY_TINY
from tests.test_stages import run_in_process

ROOT = Path(__file__).resolve().parents[1]


def test_cosface_and_arcface_put_the_margin_on_the_true_class_only():
    head = MarginHead(4, 3, "cosface", scale=10.0, margin=0.3)
    embeddings, labels = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    cos = head.cosines(embeddings)
    logits = head.logits(embeddings, labels)
    expected = 10.0 * cos.clone()
    expected[torch.arange(5), labels] = 10.0 * (cos[torch.arange(5), labels] - 0.3)
    assert torch.allclose(logits, expected)
    arc = MarginHead(4, 3, "arcface", scale=10.0, margin=0.5)
    arc.weight.data = head.weight.data.clone()
    theta = torch.acos(cos[torch.arange(5), labels])
    wanted = torch.where(theta + 0.5 < math.pi, torch.cos(theta + 0.5), cos[torch.arange(5), labels] - 0.5 * math.sin(0.5))
    assert torch.allclose(arc.logits(embeddings, labels)[torch.arange(5), labels], 10.0 * wanted, atol=1e-5)
    # margin 0 (the softmax warm-up) is the plain normalised softmax
    assert torch.allclose(head.logits(embeddings, labels, margin=0.0), 10.0 * cos)
    assert torch.isclose(head(embeddings, labels), nn.functional.cross_entropy(logits, labels))


def test_embedding_sums_image_and_mirror_then_normalises():
    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    got = embed(model, images, batch_size=2)
    from fairquant.models import to_input

    x = to_input(images)
    with torch.no_grad():
        expected = nn.functional.normalize(model(x) + model(x.flip(3)), dim=1).numpy()
    assert np.allclose(got, expected, atol=1e-6) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    plain = embed(model, images, batch_size=2, mirror=False)
    assert not np.allclose(plain, got)  # the mirror matters for a model that is not flip-invariant
    scores = pair_scores(got, np.array([0, 1]), np.array([2, 1]))
    assert np.isclose(scores[0], got[0] @ got[2]) and np.isclose(scores[1], 1.0, atol=1e-6)


def test_int8_runner_keeps_embedding_rows():
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    images = np.zeros((5, 16, 16, 3), np.uint8)
    assert int8.run_fixed_batches(model, images, 4).shape == (5, 8)
    assert int8.run_fixed_batches(build_model("face_resnet10", small_input_stem=False).eval(), images, 4).shape == (5,)


def test_compiled_runner_compiles_once_for_an_image_and_its_mirror():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = torch.compile(build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval(), backend="eager")
    images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    got = embed(lambda batch: int8.run_fixed_tensor(model, batch, 4), images, batch_size=4)
    assert got.shape == (6, 8) and counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_quantface_moves_w4a4_embeddings_toward_fp32_without_labels(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("face_resnet10", small_input_stem=False, embedding_dim=16).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
    images = np.random.default_rng(1).integers(0, 255, (64, 16, 16, 3), dtype=np.uint8)
    scheme = Params().quantize_ptq.scheme().model_copy(update={"bits": 4, "activation_bits": 4,
                                                               "weight_symmetric": False})
    quantized = fakequant.calibrate(fakequant.quantize_model(teacher, scheme), images)
    target = raw_embeddings(teacher, images)
    before = float(((raw_embeddings(quantized, images) - target) ** 2).mean())
    tuned = quantface(quantized, teacher, images, QuantFaceParams(epochs=4, batch_size=16, lr=0.01),
                      torch.device("cpu"), tmp_path / "live", seed=0, label="quantface")
    after = float(((raw_embeddings(tuned, images) - target) ** 2).mean())
    assert after < 0.7 * before, (before, after)
    assert sum(isinstance(m, fakequant.QuantizedLayer) for m in tuned.modules()) == 13  # still quantized: 12 convs and the fc
    assert (tmp_path / "live" / "metrics.json").is_file()  # curves logged with dvclive


def test_calibration_contrasts_pair_each_set_with_real_data_at_the_same_bits():
    from stages.verify_evaluate import calibration_contrasts

    def config(method, bits, calibration):
        return {"verify_method": method, "scheme": {"bits": bits}, "calibration": {"set": calibration}}

    configs = {"fp32": {"kind": "fp32"}, "ptq-w4a4-train": config("ptq", 4, "train"),
               "ptq-w4a4-synthetic": config("ptq", 4, "synthetic"), "ptq-w8a8-synthetic": config("ptq", 8, "synthetic"),
               "quantface-w4a4-balanced": config("quantface", 4, "balanced"),
               "quantface-w4a4-train": config("quantface", 4, "train")}
    assert calibration_contrasts(configs) == {"ptq-w4a4-synthetic": "ptq-w4a4-train",
                                              "quantface-w4a4-balanced": "quantface-w4a4-train"}


# ---------------------------------------------------------------------------------------------------------------
# The stages, end to end on tiny generated data

TINY = VERIFY_TINY


def write_params(folder: Path, root: Path, **verify) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params["verify"][section].update(values)
    params["verify"]["data"].update({"train_root": str(root / "race_per_7000"), "rfw_root": str(root / "rfw"),
                                     "synthetic_folder": str(root / "faces")})
    params["latency"]["batch"] = 8
    for key, value in verify.items():
        params["verify"][key] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage(name: str, *args, params: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The stage command, run in ``cwd`` (the repository by default; relative params paths resolve there), through
    the stage's entry point in this process (tests/test_stages.py's run_in_process)."""
    return run_in_process(name, [*map(str, args), "--params", str(params)], cwd)


@pytest.fixture(scope="module")
def branch(tmp_path_factory):
    """generate -> prepare -> train -> compress (PTQ W8A8 real int8 and W4A4, QuantFace W4A4; train and
    synthetic calibration) -> evaluate, through the stage commands."""
    tmp = tmp_path_factory.mktemp("verify")
    raw = tmp / "raw"
    params = write_params(tmp, raw, methods=["ptq", "quantface"], bits=[8, 4])
    done = []
    for name, args in [("verify_generate", ["--out", raw]), ("verify_prepare", ["--out", tmp / "prepared"]),
                       ("verify_train", ["--data", tmp / "prepared", "--out", tmp / "fp32", "--live", tmp / "live"]),
                       ("verify_compress", ["--model", tmp / "fp32", "--data", tmp / "prepared", "--out",
                                            tmp / "variants", "--live", tmp / "live-variants"]),
                       ("verify_evaluate", ["--data", tmp / "prepared", "--fp32", tmp / "fp32", "--variants",
                                            tmp / "variants", "--predictions", tmp / "pred", "--metrics",
                                            tmp / "verify.json"])]:
        result = stage(name, *args, params=params)
        assert result.returncode == 0, f"{name}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        done.append(result)
    return tmp, params


@pytest.mark.slow
def test_branch_writes_every_variant_and_its_pairs(branch):
    import json

    import pandas as pd

    tmp, _ = branch
    metrics = json.loads((tmp / "verify.json").read_text())
    names = {"fp32"} | {f"{m}-w{b}a{b}-{c}" for m in ("ptq", "quantface") for b in (8, 4) for c in ("train", "synthetic")}
    assert set(metrics["variants"]) == names
    assert metrics["synthetic"] is True and metrics["races"] == ["African", "Asian", "Caucasian", "Indian"]
    assert metrics["variants"]["ptq-w8a8-train"]["variant"]["kernels"] == "int8"
    assert metrics["variants"]["ptq-w4a4-train"]["variant"]["kernels"] == "simulated"
    assert metrics["variants"]["quantface-w4a4-synthetic"]["variant"]["scheme"]["weight_symmetric"] is False
    assert metrics["variants"]["fp32"]["change"] is None
    trends = metrics["trends"]  # one curve per method x calibration set over verify.bits: two points, no trend
    assert set(trends) == {f"{m}-{c}" for m in ("ptq", "quantface") for c in ("train", "synthetic")}
    assert trends["ptq-train"]["x"] == [8, 4]
    assert trends["ptq-train"]["variants"] == ["ptq-w8a8-train", "ptq-w4a4-train"]
    assert trends["quantface-synthetic"]["ser"]["verdict"] == "undefined"
    assert set(trends["ptq-train"]["accuracy"]) == set(metrics["races"])
    fp32 = pd.read_parquet(tmp / "pred" / "fp32" / "pairs.parquet")
    assert len(fp32) == 4 * 20 and fp32.groupby("race")["fold"].nunique().eq(10).all()
    assert fp32["score"].between(-1.0001, 1.0001).all()
    mix = metrics["synthetic_race_mix"]
    assert abs(sum(mix["estimated"].values()) - 1) < 1e-9 and set(mix["true"]) <= set(mix["estimated"]) | {"African"}


@pytest.mark.slow
def test_report_section_and_summary_keys(branch, tmp_path):
    import json

    from fairquant.fairness.summary import verification_summary
    from fairquant.io import write_csv
    from fairquant.report import Document, plot_tables, render_markdown
    from fairquant.report.verification import verification_section

    tmp, _ = branch
    metrics = json.loads((tmp / "verify.json").read_text())
    section = verification_section(metrics)
    assert section.blocks[0].spans[0].text == "SYNTHETIC data" and section.blocks[0].spans[0].style == "strong"
    row = section.blocks[2].row("quantface-w4a4-synthetic")
    assert [row[k].value for k in ("method", "bits", "calibration")] == ["quantface", "W4A4", "synthetic"]
    for name in ("verify_ser", "verify_per_race", "verify_curve"):
        write_csv(tmp_path / f"{name}.csv", plot_tables({}, metrics)[name])
    render_markdown(Document("r", (), (section,)), assets=tmp_path)
    assert (tmp_path / "verify_ser.png").is_file() and (tmp_path / "verify_ser.csv").is_file()
    assert (tmp_path / "verify_curve.png").is_file()
    assert len(plot_tables({}, metrics)["verify_curve"]) == (1 + 4 * 2) * 4  # fp32 and 4 curves x 2 bits, 4 races
    keys = verification_summary(metrics)
    assert keys["fp32"]["ser"] == metrics["variants"]["fp32"]["summary"]["ser"]["value"]
    assert keys["ptq-w4a4-train"]["acc_Indian"] == metrics["variants"]["ptq-w4a4-train"]["summary"]["acc_Indian"]["value"]


@pytest.mark.slow
def test_compress_refuses_a_missing_calibration_set_without_output(branch, tmp_path):
    tmp, params = branch
    shutil_params = write_params(tmp_path, tmp / "raw", methods=["ptq"], bits=[4], calibration=["balanced"])
    import shutil

    shutil.rmtree(tmp / "prepared" / "calibration" / "balanced", ignore_errors=True)
    result = stage("verify_compress", "--model", tmp / "fp32", "--data", tmp / "prepared", "--out", tmp_path / "out",
                   "--live", tmp_path / "live", params=shutil_params)
    assert result.returncode == 2 and "calibration set 'balanced' is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compress_refuses_a_bad_verify_layers_name_before_any_variant(branch, tmp_path):
    tmp, _ = branch
    params = write_params(tmp_path, tmp / "raw", methods=["qat", "ptq"], bits=[4], layers={"layer5": None})
    result = stage("verify_compress", "--model", tmp / "fp32", "--data", tmp / "prepared", "--out", tmp_path / "out",
                   "--live", tmp_path / "live", params=params)
    assert result.returncode == 2, result.stderr
    assert "verify.layers names 'layer5', which this model does not have (close names: layer4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_prepare_refuses_a_bad_pairs_file_without_output(branch, tmp_path):
    import shutil

    tmp, _ = branch
    raw = tmp_path / "raw"
    shutil.copytree(tmp / "raw", raw)
    pairs = raw / "rfw" / "test" / "txts" / "Asian" / "Asian_pairs.txt"
    lines = pairs.read_text().splitlines()
    lines[3] = lines[3] + "\t7"  # a genuine line with a fourth field reads as an impostor, a fifth is wrong
    lines[3] = lines[3] + "\t9"
    pairs.write_text("\n".join(lines) + "\n")
    params = write_params(tmp_path, raw)
    result = stage("verify_prepare", "--out", tmp_path / "prepared", params=params)
    assert result.returncode == 2 and "Asian_pairs.txt:4" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "prepared").exists()


def test_adjusted_shares_undo_a_known_confusion():
    from fairquant.verify.races import adjusted_shares

    confusion = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    truth = np.array([0.6, 0.3, 0.1])
    observed = confusion.T @ truth
    assert np.allclose(adjusted_shares(confusion, observed), truth, atol=1e-6)
    assert np.allclose(adjusted_shares(np.eye(3), np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])


def test_each_variant_starts_from_the_unchanged_fp32_model(tmp_path):
    """Found in review: pruning (and k-means) changed the fp32 module in place, so the variants built after it
    were made from the pruned model."""
    from fairquant.compress.pruning import weight_sparsity
    from fairquant.verify.variants import VariantSpec, build_variant

    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data, fp32_config = _tiny_verification_inputs(tmp_path)
    params = Params().model_copy(update={"prune": Params().prune.model_copy(update={"epochs": 0}),
                                         "quantize_kmeans": Params().quantize_kmeans.model_copy(update={"epochs": 0})})
    for spec in (VariantSpec("prune"), VariantSpec("kmeans"), VariantSpec("ptq", 4, "train")):
        state, config = build_variant(spec, model, fp32_config, {}, params, data, tmp_path / "live", seed=0)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), spec
    assert config["name"] == "ptq-w4a4-train" and weight_sparsity(fakequant.quantize_model(model, Params().quantize_ptq)) < 0.01


def _tiny_verification_inputs(tmp_path):
    from fairquant.io import write_images, write_json
    from fairquant.verify.variants import VerificationData

    images = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    (tmp_path / "cal" / "train").mkdir(parents=True)
    write_images(tmp_path / "cal" / "train" / "images.npy", images)
    write_json(tmp_path / "cal" / "train" / "info.json", {"set": "train", "size": 16})
    fp32_config = {"kind": "fp32", "name": "fp32", "arch": "face_resnet10", "small_input_stem": False,
                   "embedding_dim": 8, "image_size": 16}
    return VerificationData(images, np.arange(16), np.arange(16) % 4, tmp_path / "cal", 16), fp32_config


def test_verify_layers_give_mixed_precision_variants_named_and_reported_as_such(tmp_path):
    """Issue 9 asks for mixed precision in the verification branch too: verify.layers sets some modules' bits
    over every verify.bits entry (the classifier's quantize_ptq.layers names other modules)."""
    from fairquant.report.verification import describe_variant
    from fairquant.verify.variants import build_variant, planned_variants

    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    data, fp32_config = _tiny_verification_inputs(tmp_path)
    verify = Params().verify.model_copy(update={"methods": ["ptq", "quantface"], "bits": [4],
                                                "calibration": ["train"], "layers": {"conv1": 8, "fc": None}})
    params = Params().model_copy(update={"verify": verify})
    specs = planned_variants(params)
    assert [s.name for s in specs] == ["ptq-w4a4-mixed-train", "quantface-w4a4-mixed-train"]
    state, config = build_variant(specs[0], model, fp32_config, {}, params, data, tmp_path / "live", seed=0)
    layers = {row["layer"]: row for row in config["layers"]}
    assert (layers["conv1"]["weight_bits"], layers["conv1"]["activation_bits"]) == (8, 8)
    assert (layers["layer2.0.conv1"]["weight_bits"], layers["layer2.0.conv1"]["activation_bits"]) == (4, 4)
    assert "fc" not in layers and config["kernels"] == "simulated" and config["scheme"]["layers"] == {"conv1": 8, "fc": None}
    plain = build_variant(type(specs[0])("ptq", 4, "train"), model, fp32_config, {},
                          Params().model_copy(update={"verify": verify.model_copy(update={"layers": {}})}), data,
                          tmp_path / "live", seed=0)[1]
    assert plain["size_bytes"] < config["size_bytes"]  # a float fc and an 8-bit conv1 take more bytes than W4
    described = describe_variant({"variant": config})
    assert described == ("ptq", "W4A4, conv1: 8, fc: float", "train")


def test_verify_layers_naming_a_missing_module_is_refused(tmp_path):
    from fairquant.errors import FairquantError
    from fairquant.verify.variants import VariantSpec, build_variant

    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    data, fp32_config = _tiny_verification_inputs(tmp_path)
    params = Params().model_copy(update={"verify": Params().verify.model_copy(update={"layers": {"fc1": None}})})
    with pytest.raises(FairquantError, match="names 'fc1', which this model does not have.*close names: fc"):
        build_variant(VariantSpec("ptq", 4, "train", mixed=True), model, fp32_config, {}, params, data,
                      tmp_path / "live", seed=0)


def test_verification_qat_takes_verify_layers_not_the_classifiers_map(tmp_path):
    """Found in review: the verification QAT variant applied quantize_qat.layers (the classifier's module names)
    to the embedding model, while ptq and quantface used verify.layers."""
    from fairquant.verify.variants import VariantSpec, build_variant

    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    data, fp32_config = _tiny_verification_inputs(tmp_path)
    qat = Params().quantize_qat.model_copy(update={"epochs": 0, "layers": {"layer5": None}})  # not an embedding name
    for layers, name in (({"fc": None}, "qat-w4a4-mixed"), ({}, "qat-w4a4")):
        params = Params().model_copy(update={"quantize_qat": qat, "verify": Params().verify.model_copy(
            update={"methods": ["qat"], "layers": layers})})
        _, config = build_variant(VariantSpec("qat"), model, fp32_config, {}, params, data, tmp_path / name, seed=0)
        assert config["name"] == name and config["scheme"]["layers"] == layers
        assert ("fc" in {row["layer"] for row in config["layers"]}) == (not layers)


def test_a_verify_layers_map_at_the_schemes_own_bits_is_not_mixed_and_keeps_int8():
    from fairquant.verify.variants import planned_variants, ptq_scheme

    verify = Params().verify.model_copy(update={"methods": ["ptq"], "bits": [8, 4], "calibration": ["train"],
                                                "layers": {"conv1": 8, "layer4": 8}})
    params = Params().model_copy(update={"verify": verify})
    assert [s.name for s in planned_variants(params)] == ["ptq-w8a8-train", "ptq-w4a4-mixed-train"]
    assert ptq_scheme(params, 8, "train").uses_int8_kernels()
    assert ptq_scheme(params, 4, "train").layers == {"conv1": 8, "layer4": 8}


def test_mixed_layers_keeps_a_map_when_inputs_run_other_bits_than_weights():
    """A mapped layer runs (b, b): with activations float (or at other bits) a map at the weight bits still
    changes that layer's input, so it is mixed."""
    from fairquant.verify.variants import mixed_layers

    assert mixed_layers({"fc": 4}, 4, 4) == {}
    assert mixed_layers({"fc": 4}, 4, None) == {"fc": 4}
    assert mixed_layers({"fc": 4}, 4, 8) == {"fc": 4}
    assert mixed_layers({"layer4": None, "layer4.0": 8}, 8, 8) == {"layer4": None, "layer4.0": 8}


def test_verify_ptq_scheme_records_no_classifier_calibration_size():
    """The verification set's size is verify.data.calibration_size's; quantize_ptq.calibration_size is not read."""
    from fairquant.verify.variants import ptq_scheme

    params = Params().model_copy(update={"quantize_ptq": Params().quantize_ptq.model_copy(
        update={"calibration_size": 64})})
    assert ptq_scheme(params, 4, "synthetic").calibration_size is None


def test_verification_qat_names_its_own_calibration_size_key_when_too_large(tmp_path):
    from fairquant.errors import FairquantError
    from fairquant.verify.variants import VariantSpec, build_variant

    model = build_model("face_resnet10", small_input_stem=False, embedding_dim=8).eval()
    data, fp32_config = _tiny_verification_inputs(tmp_path)
    params = Params().model_copy(update={"quantize_qat": Params().quantize_qat.model_copy(
        update={"epochs": 0, "calibration_size": 100})})
    with pytest.raises(FairquantError, match="quantize_qat.calibration_size=100 is larger than"):
        build_variant(VariantSpec("qat"), model, fp32_config, {}, params, data, tmp_path / "live", seed=0)


def test_generate_writes_only_the_faces_when_the_data_is_real(tmp_path):
    """Like the classification branch's generate stage: real data spends no time on an unused synthetic set.
    The faces are the very images of the full generation (each image has its own random stream), and test-set
    settings that could not make pairs do not block them."""
    from fairquant.data.synthetic_verification import generate_verification_data
    from fairquant.params import VerifyGenerateParams

    settings = VerifyGenerateParams(**{**TINY["generate"], "faces": 6})
    generate_verification_data(settings, tmp_path / "full")
    params = write_params(tmp_path, tmp_path / "real-data", data={
        **TINY["data"], "source": "real", "train_root": str(tmp_path / "bupt"), "rfw_root": str(tmp_path / "rfw"),
        "synthetic_folder": str(tmp_path / "faces-only" / "faces")}, generate={**TINY["generate"], "faces": 6,
                                                                           "pairs_per_fold": 50})
    result = stage("verify_generate", "--out", tmp_path / "faces-only", params=params)
    assert result.returncode == 0, result.stderr
    assert "generated only the 6 unlabelled SYNTHETIC faces" in result.stdout
    made = sorted(p.relative_to(tmp_path / "faces-only").as_posix() for p in (tmp_path / "faces-only").rglob("*")
                  if p.is_file())
    assert made == ["SYNTHETIC.txt", "faces/000001.jpg", "faces/000002.jpg", "faces/000003.jpg", "faces/000004.jpg",
                    "faces/000005.jpg", "faces/000006.jpg", "faces/manifest.json", "generator.json"]
    for k in range(1, 7):
        name = f"faces/{k:06d}.jpg"
        assert (tmp_path / "faces-only" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_generate_with_real_data_and_the_users_own_faces_writes_nothing(tmp_path):
    params = write_params(tmp_path, tmp_path / "real-data", data={
        **TINY["data"], "source": "real", "train_root": str(tmp_path / "bupt"), "rfw_root": str(tmp_path / "rfw"),
        "synthetic_folder": str(tmp_path / "stylegan")})
    result = stage("verify_generate", "--out", tmp_path / "out", params=params)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["README.txt"]


def test_generate_refuses_real_data_whose_roots_still_point_into_the_generated_default(tmp_path):
    """Found in review: dvc repro then stopped on a missing dependency path naming no params key."""
    out = tmp_path / "synthetic_verify"
    params = write_params(tmp_path, tmp_path / "real-data", data={
        **TINY["data"], "source": "real", "train_root": str(out / "race_per_7000"), "rfw_root": str(out / "rfw"),
        "synthetic_folder": str(out / "faces")})
    result = stage("verify_generate", "--out", out, params=params)
    assert result.returncode == 2, result.stderr
    assert ("verify.data.source is 'real' but verify.data.train_root and verify.data.rfw_root still point into the "
            "generated default") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
