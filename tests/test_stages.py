"""Each bad input: one line on stderr naming the problem, exit status 2, and no output written."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


SEEDED = {"finetune", "quantize_ptq", "quantize_qat", "quantize_kmeans", "prune"}  # stages run per training seed


def stage_params(cwd, params=None) -> Path:
    """params.yaml in ``cwd``: the shipped file with the dotted ``params`` overrides."""
    params_path = Path(cwd) / "params.yaml"
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in (params or {}).items():  # "section.key" or deeper ("verify.data.image_size")
        *sections, key = dotted.split(".")
        node = base
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    params_path.write_text(yaml.safe_dump(base))
    return params_path


def run_stage(stage, args, cwd, params=None, *, subprocess_run=False):
    """Run ``python -m stages.<stage>`` with ``args`` in ``cwd``: in this process by default (the suite's time goes
    to importing torch once, not per call), through a real interpreter with ``subprocess_run=True``. Either way the
    result has the returncode, stdout and stderr a user would see."""
    if stage in SEEDED and "--seed" not in args:
        args = ["--seed", "0", *args]
    argv = [*map(str, args), "--params", str(stage_params(cwd, params))]
    if subprocess_run:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", f"stages.{stage}", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)
    return run_in_process(stage, argv, cwd)


def run_in_process(stage, argv, cwd) -> subprocess.CompletedProcess:
    """The stage's entry point (stages._cli.run) called here, with its exit status, stdout and stderr captured.
    torch's process-wide settings that a stage changes (threads, deterministic mode) are put back afterwards."""
    import importlib
    import io
    import warnings

    import torch

    from stages._cli import run

    module = importlib.import_module(f"stages.{stage}")
    out, err = io.StringIO(), io.StringIO()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    code = 0
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(), _argv([f"stages/{stage}.py", *argv]):
        try:
            run(module.app)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
    return subprocess.CompletedProcess([stage, *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def assert_clean_failure(result, message, out):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not Path(out).exists()


@pytest.mark.parametrize("params, message", [
    ({"data.root": "missing/dir"}, "missing/dir: dataset root not found"),
    ({"data.target": "Smile"}, "unknown target attribute 'Smile'; valid attributes:"),
    ({"data.protected": ["Race"]}, "unknown protected attribute 'Race'"),
    ({"finetune.epoch": 2}, "unknown key 'finetune.epoch'"),
    ({"model.arch": "vgg16"}, "'model.arch': expected 'resnet18'"),
    ({"evaluate.privileged_group": "female"}, "evaluate.privileged_group is 'female', not a group of the data (groups "
                                              "of data.protected ['Male']: Female, Male)"),
    ({"model.arch": "vit_small", "prepare.image_size": 33},
     "prepare.image_size is 33, which vit_small's 4 px patches (image_size // 8, at least 2) do not tile"),
])
def test_prepare_rejects_bad_input(tmp_path, tiny_celeba, params, message):
    params = {"data.root": str(tiny_celeba), **params}
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path, params)
    assert_clean_failure(result, message, tmp_path / "prepared")


def test_prepare_fails_on_too_many_corrupt_images(tmp_path, tiny_celeba):
    root = tmp_path / "celeba"
    shutil.copytree(tiny_celeba, root)
    for name in ("000001.jpg", "000002.jpg"):
        (root / "img_align_celeba" / name).write_bytes(b"\xff\xd8 truncated")
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path,
                       {"data.root": str(root), "data.max_corrupt_fraction": 0.01})
    assert_clean_failure(result, "2 of 120 images could not be decoded", tmp_path / "prepared")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["celeba", "params.yaml"]  # no temporary folder either


SMALL = {"prepare.image_size": 16}  # the size the `prepared` fixture is made at: stages check it against params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_celeba):
    cwd = tmp_path_factory.mktemp("prepared")
    result = run_stage("prepare", ["--out", str(cwd / "prepared")], cwd,
                       {"data.root": str(tiny_celeba), **SMALL})
    assert result.returncode == 0, result.stderr
    return cwd / "prepared"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    """A tiny fp32 model, the unlabelled faces folder and all four calibration sets, built by the stages."""
    cwd = tmp_path_factory.mktemp("trained")
    tiny = {**SMALL, "finetune.epochs": 1, "finetune.batch_size": 32, "faces.count": 6,
            "generate.workers": 1,
            "calibration.size": 8, "calibration.distilled_size": 4, "calibration.distilled_iterations": 2,
            "calibration.synthetic_folder": str(cwd / "faces")}
    for stage, args in [("finetune", ["--data", str(prepared), "--out", str(cwd / "fp32"), "--live", str(cwd / "live")]),
                        ("faces", ["--out", str(cwd / "faces")]),
                        ("calibration", ["--data", str(prepared), "--model", str(cwd / "fp32"), "--out", str(cwd / "cal")])]:
        result = run_stage(stage, args, cwd, tiny)
        assert result.returncode == 0, result.stderr
    return cwd


def test_calibration_sets_are_built_with_their_composition(trained):
    import json

    infos = {name: json.loads((trained / "cal" / name / "info.json").read_text())
             for name in ("train", "balanced", "synthetic", "distilled")}
    assert {name: info["size"] for name, info in infos.items()} == {"train": 8, "balanced": 8, "synthetic": 6,
                                                                    "distilled": 4}
    # balanced: 2 groups x 2 labels, 2 images each; the true mix is exact, not estimated
    assert infos["balanced"]["true_composition"] == {"Female": 0.5, "Male": 0.5}
    assert infos["synthetic"]["files"] == 6 and infos["synthetic"]["skipped_unreadable"] == 0
    assert "true_composition" not in infos["synthetic"]  # unlabelled: only an estimate exists
    for info in infos.values():  # the estimate covers exactly the groups the classifier was fitted on
        assert set(info["estimated_composition"]) == {"Female", "Male"}


@pytest.mark.parametrize("params, message", [
    ({"calibration.synthetic_folder": "no/such/faces"}, "synthetic calibration folder no/such/faces does not exist"),
    ({"calibration.size": 10_000}, "calibration.size=10000 is larger than the training split"),
])
def test_calibration_rejects_bad_input(tmp_path, prepared, trained, params, message):
    params = {"calibration.synthetic_folder": str(trained / "faces"), "calibration.distilled_iterations": 1,
              "calibration.size": 8, **SMALL, **params}
    result = run_stage("calibration", ["--data", str(prepared), "--model", str(trained / "fp32"), "--out",
                                       str(tmp_path / "cal")], tmp_path, params)
    assert_clean_failure(result, message, tmp_path / "cal")


@pytest.mark.parametrize("params, message", [
    ({"quantize_ptq.bits": 1}, "'quantize_ptq.bits': expected greater than or equal to 2; found 1"),
    ({"quantize_ptq.activation_bits": 17}, "'quantize_ptq.activation_bits': expected less than or equal to 16"),
    ({"quantize_ptq.bits": 4, "quantize_ptq.kernels": "int8"}, "kernels=int8 runs only the x86 int8 scheme"),
    ({"quantize_ptq.layers": {"fcc": None}}, "quantize_ptq.layers names 'fcc', which this model does not have (close names: fc)"),
    ({"quantize_ptq.calibration_size": 9}, "quantize_ptq.calibration_size=9 is larger than the 'train' calibration set (8"),
])
def test_quantize_ptq_rejects_bad_input(tmp_path, trained, params, message):
    result = run_stage("quantize_ptq", ["--model", str(trained / "fp32"), "--calibration", str(trained / "cal" / "train"),
                                        "--out", str(tmp_path / "ptq")], tmp_path, {**SMALL, **params})
    assert_clean_failure(result, message, tmp_path / "ptq")


def test_quantize_qat_refuses_a_layer_name_the_model_lacks_before_training(tmp_path, prepared, trained):
    result = run_stage("quantize_qat", ["--data", str(prepared), "--model", str(trained / "fp32"), "--calibration",
                                        str(trained / "cal" / "train"), "--out", str(tmp_path / "qat"), "--live",
                                        str(tmp_path / "live")], tmp_path, {"quantize_qat.layers": {"fcc": 8}, **SMALL})
    assert_clean_failure(result, "quantize_qat.layers names 'fcc', which this model does not have (close names: fc)",
                         tmp_path / "qat")
    assert not (tmp_path / "live").exists()  # refused before any fine-tuning


def test_missing_checkpoint_is_a_clear_error(tmp_path, trained):
    result = run_stage("quantize_ptq", ["--model", str(tmp_path / "nothing"), "--calibration",
                                        str(trained / "cal" / "train"), "--out", str(tmp_path / "ptq")], tmp_path)
    assert_clean_failure(result, "checkpoint not found; run the stage that writes it first", tmp_path / "ptq")


@pytest.mark.parametrize("stage, params, message", [
    ("prune", {"prune.sparsity": 1.0}, "'prune.sparsity': expected less than 1; found 1.0"),
    ("prune", {"prune.sparsity": -0.1}, "'prune.sparsity': expected greater than or equal to 0"),
    ("quantize_kmeans", {"quantize_kmeans.clusters": 1}, "'quantize_kmeans.clusters': expected greater than or equal to 2"),
])
def test_compressors_reject_bad_settings(tmp_path, prepared, trained, stage, params, message):
    result = run_stage(stage, ["--data", str(prepared), "--model", str(trained / "fp32"), "--out", str(tmp_path / "m"),
                               "--live", str(tmp_path / "live")], tmp_path, {**SMALL, **params})
    assert_clean_failure(result, message, tmp_path / "m")


@pytest.mark.slow
def test_each_compressor_writes_a_loadable_variant(tmp_path, prepared, trained):
    import torch

    from fairquant.compress import int8
    from fairquant.compress.variants import load_variant
    from fairquant.models import to_input

    tiny = {"quantize_qat.epochs": 1, "quantize_qat.batch_size": 32, "prune.epochs": 1, "prune.batch_size": 32,
            "quantize_kmeans.epochs": 1, "quantize_kmeans.batch_size": 32, "latency.batch": 8, **SMALL}
    runs = {
        "ptq": ("quantize_ptq", ["--model", str(trained / "fp32"), "--calibration", str(trained / "cal" / "balanced")],
                {"quantize_ptq.bits": 4, "quantize_ptq.calibration": "balanced"}, "ptq-w4a8-balanced", "simulated"),
        "int8": ("quantize_ptq", ["--model", str(trained / "fp32"), "--calibration", str(trained / "cal" / "train")],
                 {}, "ptq-w8a8-train", "int8"),
        "qat": ("quantize_qat", ["--data", str(prepared), "--model", str(trained / "fp32"), "--calibration",
                                 str(trained / "cal" / "distilled"), "--live", str(tmp_path / "qat-live")],
                {"quantize_qat.layers": {"fc": None}}, "qat-w4a4-mixed", "simulated"),
        "kmeans": ("quantize_kmeans", ["--data", str(prepared), "--model", str(trained / "fp32"), "--live",
                                       str(tmp_path / "km-live")], {}, "kmeans-k16-ft", "dense-decoded"),
        "prune": ("prune", ["--data", str(prepared), "--model", str(trained / "fp32"), "--live", str(tmp_path / "pr-live")],
                  {"prune.schedule": "iterative", "prune.steps": 2}, "prune-s80-iter", "dense-decoded"),
    }
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    for slot, (stage, args, params, name, kernels) in runs.items():
        result = run_stage(stage, [*args, "--out", str(tmp_path / slot)], tmp_path, {**tiny, **params})
        assert result.returncode == 0, result.stderr
        variant = load_variant(tmp_path / slot, batch_size=4, repeats=1, latency_batch=8)
        assert (variant.name, variant.kernels) == (name, kernels)
        scores = variant.score(images)
        # the scores are the stored module's own outputs (for int8, its compiled kernels vs the q/dq reference)
        with torch.no_grad():
            reference = torch.sigmoid(variant.model(to_input(images)).flatten()).numpy() if kernels != "int8" else \
                torch.sigmoid(int8.run_fixed_batches(variant.model, images, 8)).numpy()
        np.testing.assert_allclose(scores, reference, atol=0.05 if kernels == "int8" else 1e-6)  # noise: out of range
        # scoring on another device (meta: shapes only) moves every float kind; real int8 never leaves the CPU
        moved = load_variant(tmp_path / slot, batch_size=4, repeats=0, latency_batch=8, device="meta")
        if kernels == "int8":
            assert moved.device.type == "cpu"
            assert {t.device.type for t in moved.model.state_dict().values()} == {"cpu"}
            np.testing.assert_array_equal(moved.score(images), scores)
        else:
            assert moved.device.type == "meta" and {p.device.type for p in moved.model.parameters()} == {"meta"}
    assert (tmp_path / "qat-live" / "metrics.json").is_file()


def test_finetune_missing_pretrained_file_says_no_download(tmp_path, prepared):
    result = run_stage("finetune", ["--data", str(prepared), "--out", str(tmp_path / "fp32"), "--live",
                                    str(tmp_path / "live")], tmp_path,
                       {"model.pretrained": "data/pretrained/resnet18.pth", **SMALL})
    assert_clean_failure(result, "pretrained weights not found; no download is attempted", tmp_path / "fp32")


def test_predict_refuses_a_seed_whose_model_slots_are_missing(tmp_path):
    """The per-seed predict stage names every slot the study makes but the models folder lacks, before any work."""
    from conftest import write_prepared

    models = tmp_path / "models"
    (models / "fp32").mkdir(parents=True)
    (models / "fp32" / "model.pt").write_bytes(b"not read: the stage stops before loading any model")
    out = tmp_path / "predictions" / "variants"
    result = run_stage("predict", ["--data", str(write_prepared(tmp_path / "prepared")), "--models", str(models),
                                   "--out", str(out)], tmp_path)
    assert_clean_failure(result, "lacks the models of ['ptq', 'qat', 'kmeans', 'prune', 'fairalm-control'", out)
    (models / "ptq").mkdir()  # a slot folder without its checkpoint is missing too, found before any prediction
    result = run_stage("predict", ["--data", str(tmp_path / "prepared"), "--models", str(models), "--out", str(out)],
                       tmp_path)
    assert_clean_failure(result, "lacks the models of ['ptq', 'qat'", out)


def test_predict_refuses_an_out_path_that_is_a_file_before_any_work(tmp_path):
    from conftest import write_prepared

    out = tmp_path / "variants"
    out.write_text("mine")
    result = run_stage("predict", ["--data", str(write_prepared(tmp_path / "prepared")), "--models",
                                   str(ROOT / "tests"), "--out", str(out)], tmp_path, {"mitigate.before_compression": []})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert out.read_text() == "mine"


def test_report_on_damaged_metrics_is_one_line_and_writes_nothing(tmp_path):
    """Found by the bad-input probe: the plot tables were written before the document failed to build."""
    import json

    evaluations = tmp_path / "eval" / "s0"
    shutil.copytree(ROOT / "metrics" / "eval" / "s0", evaluations)
    damaged = json.loads((evaluations / "qat.json").read_text())
    del damaged["gaps"]
    (evaluations / "qat.json").write_text(json.dumps(damaged))
    plots = tmp_path / "plots"
    result = run_stage("report", ["--eval", str(tmp_path / "eval"), "--summary", str(tmp_path / "summary.json"),
                                  "--plots", str(plots)], tmp_path)
    assert_clean_failure(result, "qat.json: the metrics block lacks ['gaps']; re-run evaluate", plots)
    assert not (tmp_path / "summary.json").exists()


def test_latency_refuses_a_seed_without_its_timed_models(tmp_path):
    models = tmp_path / "models"
    (models / "fp32").mkdir(parents=True)
    (models / "fp32" / "model.pt").write_bytes(b"not read: the stage stops before loading any model")
    out = tmp_path / "latency.json"
    result = run_stage("latency", ["--models", str(models), "--out", str(out)], tmp_path)
    assert_clean_failure(result, "lacks the models of ['ptq']; run dvc repro (finetune and quantize_ptq)", out)


@pytest.mark.parametrize("latency, message", [
    (None, "latency.json: file not found"),
    ("{", "latency.json: not valid JSON"),
    ('{"fp32": {}}', "latency.json: expected the timings of ['fp32', 'ptq']; re-run the latency stage"),
    ('{"fp32": {}, "ptq": []}', "latency.json: expected the timings of ['fp32', 'ptq']; re-run the latency stage"),
])
def test_evaluate_refuses_a_missing_or_damaged_latency_file(tmp_path, latency, message):
    """The latency stage's file is an artifact evaluate reads for the timed slots: its bad cases, one line each."""
    from fairquant.mitigate.slots import predictions_folder, study_slots
    from fairquant.params import load_params
    from fairquant.results import PredictionsInfo

    mitigate = load_params(ROOT / "params.yaml").mitigate
    root = tmp_path / "s0"
    for slot in study_slots(mitigate):  # only the files' presence is checked before the latency file is read
        folder = predictions_folder(root, slot, mitigate)
        folder.mkdir(parents=True)
        (folder / "test.parquet").write_bytes(b"")
        PredictionsInfo(name=slot, kind="fp32", kernels="fp32", size_bytes=1, synthetic=True).write(folder)
    if latency is not None:
        (root / "latency.json").write_text(latency)
    out = tmp_path / "eval"
    assert_clean_failure(run_stage("evaluate", [str(root), "--out", str(out)], tmp_path), message, out)
