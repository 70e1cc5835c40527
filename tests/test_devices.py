"""Where models run: ``evaluate.device`` picks where float models score (auto: CUDA when visible), real int8 never
leaves the CPU, latency is timed on the CPU on a seeded batch and names the device. The suite runs without a GPU:
CUDA's absence is faked only where the code asks whether it is there, never a result; the meta device (shapes
only, no values) shows where a float model goes."""

import json

import numpy as np
import pytest
import torch

from fairquant.errors import FairquantError
from fairquant.models import build_model, scoring_device
from tests.test_stages import assert_clean_failure, run_stage

NO_CUDA = "evaluate.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'"
SIZE = 8


def test_auto_scores_on_the_cpu_without_cuda_and_cuda_asked_for_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scoring_device("auto") == torch.device("cpu")
    assert scoring_device("cpu") == torch.device("cpu")
    with pytest.raises(FairquantError) as error:
        scoring_device("cuda")
    assert str(error.value) == NO_CUDA


def test_evaluate_device_is_one_of_three_names():
    from fairquant.params import parse_params

    assert parse_params({}).evaluate.device == "auto"
    assert parse_params({"evaluate": {"device": "cpu"}}).evaluate.device == "cpu"
    with pytest.raises(FairquantError, match=r"evaluate\.device"):
        parse_params({"evaluate": {"device": "gpu"}})


@pytest.mark.parametrize("stage, args, out", [
    ("predict", ["--data", "prepared", "--models", "models", "--out", "out"], "out"),
    ("predict", ["--sweep", "--data", "prepared", "--models", "models", "--out", "out"], "out"),
    ("calibration", ["--data", "prepared", "--model", "fp32", "--out", "out"], "out"),
    ("verify_evaluate", ["--data", "prepared", "--fp32", "fp32", "--variants", "variants", "--predictions", "out",
                         "--metrics", "verify.json"], "out"),
])
def test_a_scoring_stage_asked_for_cuda_without_one_stops_before_any_work(tmp_path, stage, args, out):
    """Refused at the stage's start (before reading data or models, none of which exist here): one line, exit 2."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    result = run_stage(stage, args, tmp_path, {"evaluate.device": "cuda"})
    assert_clean_failure(result, NO_CUDA, tmp_path / out)


def test_the_stage_report_names_the_device_when_asked(tmp_path, monkeypatch):
    """benchmarks/scale.py sets FAIRQUANT_STAGE_REPORT: each stage's last stderr line says whether it used CUDA."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    monkeypatch.setenv("FAIRQUANT_STAGE_REPORT", "1")
    result = run_stage("predict", ["--data", "p", "--models", "m", "--out", "o"], tmp_path, {"evaluate.device": "cuda"})
    assert result.stderr.strip().splitlines()[-1] == "fairquant-stage: device=cpu gpu_peak_bytes=0"


def _fp32_variant(folder):
    from fairquant.compress.checkpoints import save_variant

    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False).eval()
    config = {"kind": "fp32", "name": "fp32", "arch": "face_resnet10", "small_input_stem": False, "image_size": SIZE}
    save_variant(folder, model.state_dict(), config)
    return folder


def test_a_float_variant_moves_to_the_scoring_device(tmp_path):
    from fairquant.compress.variants import load_variant

    moved = load_variant(_fp32_variant(tmp_path / "fp32"), batch_size=4, repeats=0, latency_batch=4, device="meta")
    assert moved.device == torch.device("meta")
    assert {p.device.type for p in moved.model.parameters()} == {"meta"}
    assert {b.device.type for b in moved.model.buffers()} == {"meta"}


def test_float_scoring_on_the_cpu_equals_the_plain_model_bit_for_bit(tmp_path):
    """The device-aware paths (variant score and forward, embed, the group probe's features) on the CPU give what
    the model itself gives, computed independently."""
    from fairquant.compress.calibration import penultimate_features
    from fairquant.compress.checkpoints import load_fp32
    from fairquant.compress.variants import load_variant
    from fairquant.models import to_input
    from fairquant.training import predict_scores
    from fairquant.verify.embedding import embed

    folder = _fp32_variant(tmp_path / "fp32")
    images = np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    model, _ = load_fp32(folder)
    variant = load_variant(folder, batch_size=4, repeats=0, latency_batch=4, device=scoring_device("cpu"))
    assert variant.device == torch.device("cpu")
    np.testing.assert_array_equal(variant.score(images), predict_scores(model.eval(), images, 4))
    with torch.no_grad():
        logits = model(to_input(images))
        features = torch.nn.functional.normalize(logits + model(to_input(images).flip(3)), dim=1)
    np.testing.assert_array_equal(embed(variant.forward, images, 4, device=variant.device), features.numpy())
    np.testing.assert_array_equal(penultimate_features(variant.model, images, 4, device=variant.device),
                                  penultimate_features(model, images, 4))


def test_predictions_record_the_device_that_scored(tmp_path):
    from conftest import write_prepared
    from fairquant.data.prepare import load_prepared
    from fairquant.params import parse_params
    from stages.predict import predict_variant

    table, images, info = load_prepared(write_prepared(tmp_path / "prepared", size=SIZE))
    predict_variant(_fp32_variant(tmp_path / "fp32"), tmp_path / "pred", table, images, info, parse_params({}),
                    device=scoring_device("cpu"))
    assert json.loads((tmp_path / "pred" / "info.json").read_text())["details"]["device"] == "cpu"


def test_latency_is_timed_on_a_seeded_batch_on_the_cpu_and_names_it():
    """(warm-up + repeats) calls on one seeded batch of ``batch_size`` images, whatever any test set holds; the
    record names the device, threads and instruction set."""
    from fairquant.compress import int8

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean()

    first = int8.measure_latency(Recorder(), 5, SIZE, 2, "eager")
    assert len(seen) == int8.LATENCY_WARMUP + 2 and all(x.shape == (5, 3, SIZE, SIZE) for x in seen)
    int8.measure_latency(Recorder(), 5, SIZE, 1, "eager")
    assert torch.equal(seen[0], seen[-1])  # seeded: the same batch on every run
    cpu = int8.cpu_int8()
    assert (first.device, first.threads, first.isa, first.torch_isa, first.warmup, first.repeats) == (
        "cpu", torch.get_num_threads(), cpu.capability, cpu.torch_capability, int8.LATENCY_WARMUP, 2)
