"""Training on several processes (fairquant.distributed, gloo on the CPU): 2 processes x a batch of b rows train
the model that 1 process x 2b trains, through the real entry point (fit_logged: the stage's own launch, the
memory-mapped store passed by file, rank 0's weights and curves handed back); a failing rank ends them all with its
one line."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fairquant import distributed
from fairquant.compress import fakequant, pruning
from fairquant.errors import FairquantError
from fairquant.io import image_store_writer, read_images, read_json
from fairquant.models import build_model
from fairquant.params import DistributedParams, FinetuneParams, QuantizeQATParams, TrainingParams
from fairquant.training import augment, fit_logged
from tests.test_stages import SMALL, prepared, run_stage, stage_params  # noqa: F401  (the prepared fixture)

ROOT = Path(__file__).resolve().parents[1]
# max |w_2proc - w_1proc| over the state dict after 8 SGD steps; measured 1.8e-7 (float32 rounding: the ranks sum
# the batch in another order). At lr 0.05 the fourth step amplified it to 4e-4 (README: several processes).
WEIGHT_TOLERANCE = 1e-5
LOSS_TOLERANCE = 1e-6  # the epochs' mean training loss; measured < 1e-7


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 96-row memory-mapped store (64 train, 32 val), 16 px, two groups: the prepared data in miniature."""
    folder = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    with image_store_writer(folder / "images.npy", 96, (16, 16, 3)) as writer:
        writer.append(rng.integers(0, 256, (96, 16, 16, 3), dtype=np.uint8))
    table = pd.DataFrame({"row": np.arange(96), "split": ["train"] * 64 + ["val"] * 32,
                          "y_true": rng.integers(0, 2, 96), "Male": rng.integers(0, 2, 96)})
    return table, read_images(folder / "images.npy")


def _model(images, prune: float = 0.0, qat: bool = False):
    torch.manual_seed(0)
    model = build_model("face_resnet10", small_input_stem=False, image_size=16)
    if prune:
        pruning.prune_global(model, prune)
    if qat:  # 4-bit weights, 8-bit activations, ranges calibrated on 16 images, then trained (weights) or fixed
        model = fakequant.calibrate(fakequant.quantize_model(model, QuantizeQATParams(bits=4).scheme()), images[:16])
    return model


def _fit(study, tmp_path, nproc: int, params, *, prune: float = 0.0, qat: bool = False, freeze_bn: bool = False):
    table, images = study
    model = _model(images, prune, qat)
    live = tmp_path / f"live{nproc}"
    model = fit_logged(model, table, images, ["Male"], params, live, "test", freeze_bn=freeze_bn, seed=3,
                       section="finetune", processes=DistributedParams(nproc=nproc))
    return model.state_dict(), read_json(live / "metrics.json")


def _differences(one, two):
    (weights1, metrics1), (weights2, metrics2) = one, two
    assert weights1.keys() == weights2.keys()  # the same checkpoint format: no 'module.' prefix, no extra keys
    weight = max(float((weights1[k].double() - weights2[k].double()).abs().max()) for k in weights1
                 if weights1[k].is_floating_point())
    loss = abs(metrics1["train"]["loss"] - metrics2["train"]["loss"])
    return weight, loss, metrics1, metrics2


@pytest.mark.slow  # ~2 min each on 2 busy cores: two spawned ranks import torch and train
@pytest.mark.parametrize("kind", ["finetune", "prune", "qat"])
def test_two_processes_train_the_one_process_model(study, tmp_path, kind):
    """fp32 fine-tuning (BatchNorm trained over the global batch), pruning's fine-tuning (masks attached) and QAT
    (4-bit weights, 8-bit activations, BatchNorm frozen):
    global batch 16 = 2 ranks x 8, augmentation on, 2 epochs (8 steps)."""
    if kind == "finetune":
        params = FinetuneParams(epochs=2, batch_size=16, lr=0.01, weight_decay=5e-4, augment=True, device="cpu")
        options = {}
    else:
        # QAT's 4-bit weights move little at 0.01 (4e-4): a larger rate, so that the model moves far past the tolerance
        params = TrainingParams(epochs=2, batch_size=16, lr=0.01 if kind == "prune" else 0.05, augment=True, device="cpu")
        options = {"prune": 0.5} if kind == "prune" else {"qat": True, "freeze_bn": True}
    one = _fit(study, tmp_path, 1, params, **options)
    two = _fit(study, tmp_path, 2, params, **options)
    weight, loss, metrics1, metrics2 = _differences(one, two)
    print(f"{kind}: max |weight difference| {weight:.3g}, |loss difference| {loss:.3g}")
    assert weight <= WEIGHT_TOLERANCE
    assert loss <= LOSS_TOLERANCE
    assert metrics1["val"] == metrics2["val"]  # the same predictions on validation
    trained = max(float((one[0][k] - _initial(k, study[1], options)).abs().max()) for k in one[0] if k.endswith("weight"))
    assert trained > 100 * WEIGHT_TOLERANCE  # the model moved far more than the tolerance: the test can fail
    if kind == "prune":
        masks = [k for k in two[0] if k.endswith("weight_mask")]
        assert masks and all(torch.equal(one[0][k], two[0][k]) for k in masks)


def _initial(key, images, options):
    return _model(images, options.get("prune", 0.0), options.get("qat", False)).state_dict()[key]


# Remedies: the objective's group statistics over the whole global batch on every rank (the other ranks' logits
# gathered), its multipliers and checks stepped identically; rank 0's weights, objective state and curves come back.
MULTIPLIER_TOLERANCE = 1e-5


def _curves(live: Path) -> dict[str, list[tuple[int, float]]]:
    """Every per-step curve dvclive wrote (name -> [(step, value)])."""
    curves = {}
    for path in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        curves[str(path.relative_to(live))] = list(zip(frame["step"], frame.iloc[:, -1]))
    return curves


def _remedy_runs(study, tmp_path, params, make_objective, *, prune: float = 0.0, section: str):
    """{nproc: (final weights, objective summary, curves)} for 1 and 2 processes, the same objective made afresh."""
    table, images = study
    runs = {}
    for nproc in (1, 2):
        model = _model(images, prune)
        objective = make_objective(model)
        live = tmp_path / f"live{nproc}"
        model = fit_logged(model, table, images, ["Male"], params, live, "test", seed=3, section=section,
                           objective=objective, processes=DistributedParams(nproc=nproc))
        model = objective.finish(model)
        runs[nproc] = (model.state_dict(), objective.summary(), _curves(live))
    return runs


def _remedy_differences(runs, what: str):
    (weights1, summary1, curves1), (weights2, summary2, curves2) = runs[1], runs[2]
    assert weights1.keys() == weights2.keys()
    weight = max(float((weights1[k].double() - weights2[k].double()).abs().max()) for k in weights1
                 if weights1[k].is_floating_point())
    assert summary1["multipliers"].keys() == summary2["multipliers"].keys()
    multiplier = max(abs(summary1["multipliers"][g] - summary2["multipliers"][g]) for g in summary1["multipliers"])
    assert curves1.keys() == curves2.keys() and curves1  # the same curves logged, once (rank 0's)
    curve = 0.0
    for name in curves1:
        assert [step for step, _ in curves1[name]] == [step for step, _ in curves2[name]], name
        curve = max([curve] + [abs(a - b) for (_, a), (_, b) in zip(curves1[name], curves2[name])])
    print(f"{what}: max |weight difference| {weight:.3g}, |multiplier difference| {multiplier:.3g}, "
          f"|logged value difference| {curve:.3g}")
    assert weight <= WEIGHT_TOLERANCE
    assert multiplier <= MULTIPLIER_TOLERANCE
    assert curve <= MULTIPLIER_TOLERANCE
    assert max(abs(v) for v in summary1["multipliers"].values()) > 100 * MULTIPLIER_TOLERANCE  # the duals moved
    return summary1, summary2


@pytest.mark.slow  # two spawned ranks import torch and train
def test_fairalm_on_two_processes_trains_the_one_process_model(study, tmp_path):
    """FairALM before compression (fp32, BatchNorm trained over the global batch): global batch 16 = 2 x 8,
    augmentation on, 2 epochs (8 steps), eta growing per epoch: the same weights, multipliers, eta and curves."""
    from fairquant.mitigate.inprocess import FairALM
    from fairquant.params import FairALMParams
    from fairquant.training import group_index

    names, _ = group_index(study[0], ["Male"])
    params = FairALMParams(epochs=2, batch_size=16, lr=0.01, eta=0.5, eta_growth=1.5, augment=True, device="cpu")
    runs = _remedy_runs(study, tmp_path, params, lambda model: FairALM(params, names), section="mitigate.fairalm")
    one, two = _remedy_differences(runs, "fairalm")
    assert one["final_eta"] == two["final_eta"] == 0.5 * 1.5 ** 2


@pytest.mark.slow  # two spawned ranks import torch and train
def test_ceag_during_pruning_on_two_processes_trains_the_one_process_model(study, tmp_path):
    """CEAG in place of pruning's fine-tuning (masks attached, BatchNorm training): replay buffers, dual steps and
    validation checks on every rank as on one; the same kept check, weights, multipliers and curves."""
    from fairquant.fairness.metrics import group_labels
    from fairquant.mitigate.constrained import constrained_objective, reference_for
    from fairquant.mitigate.remedies import Validation
    from fairquant.params import CEAGParams
    from fairquant.training import group_index, predict_scores

    table, images = study
    names, _ = group_index(table, ["Male"])
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    fp32 = _model(images).eval()
    reference, _ = reference_for(fp32, images, train["row"].to_numpy(), train["y_true"].to_numpy(),
                                 group_index(train, ["Male"], names)[1], len(names), "accuracy", 64)
    validate = Validation(images, val["row"].to_numpy(), val["y_true"].to_numpy(),
                          predict_scores(fp32, images, 64, rows=val["row"].to_numpy()), group_labels(val, ["Male"]),
                          "accuracy", 64)
    config = CEAGParams(tolerance=0.01, buffer=4, dual_lr=0.5, checks=3)
    params = TrainingParams(epochs=2, batch_size=16, lr=0.01, augment=True, device="cpu")
    runs = _remedy_runs(study, tmp_path, params, lambda model: constrained_objective(config, names, reference, model,
                                                                                   validate),
                        prune=0.5, section="mitigate.ceag")
    one, two = _remedy_differences(runs, "ceag during prune")
    assert [c["step"] for c in one["checks"]] == [c["step"] for c in two["checks"]] == [3, 6, 8]
    assert all(abs(a["accuracy"] - b["accuracy"]) <= 1e-12 for a, b in zip(one["checks"], two["checks"]))
    assert one["kept_step"] == two["kept_step"]


def test_each_rank_augments_its_slice_as_one_process_augments_the_batch():
    batch = torch.rand(10, 3, 16, 16)
    whole = augment(batch, torch.Generator().manual_seed(5))
    parts = [augment(batch[distributed.rank_slice(10, r, 3)], torch.Generator().manual_seed(5), drawn=10,
                     part=distributed.rank_slice(10, r, 3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)
    assert [len(p) for p in parts] == [3, 3, 4]


def _fails_on_rank_one(payload):
    if torch.distributed.get_rank() == 1:
        raise FairquantError(payload)
    torch.distributed.barrier()  # rank 0 waits for a rank that never comes: it must be stopped, not hang
    return {}


def _bug_on_rank_zero(payload):
    if torch.distributed.get_rank() == 0:
        raise KeyError(payload)
    return {}


def test_a_failing_rank_ends_every_rank_with_its_one_line():
    with pytest.raises(FairquantError, match=r"^the bad thing; fix it \(rank 1 of the distributed training"):
        distributed.launch(_fails_on_rank_one, "the bad thing; fix it", distributed.Plan(2, "gloo", True))


def test_a_bug_in_a_rank_keeps_its_traceback():
    with pytest.raises(RuntimeError, match=r"(?s)rank 0 of the distributed training failed.*KeyError: 'oops'"):
        distributed.launch(_bug_on_rank_zero, "oops", distributed.Plan(2, "gloo", True))


def test_a_stage_whose_rank_fails_exits_2_with_one_line(tmp_path):
    """Through the stages' entry point, as `python -m stages.X` runs: exit status 2, one `error:` line."""
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import typer
        from fairquant import distributed
        from stages._cli import run
        from tests.test_distributed import _fails_on_rank_one

        app = typer.Typer(add_completion=False)

        @app.command()
        def main() -> None:
            distributed.launch(_fails_on_rank_one, "no good; do better", distributed.Plan(2, "gloo", True))

        if __name__ == "__main__":
            run(app)
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["error: no good; do better (rank 1 of the distributed training; the other "
                                        "ranks were stopped)"]


@pytest.mark.parametrize("settings, device, message", [
    (DistributedParams(nproc=2, backend="nccl"), "cpu", "distributed.backend is nccl but training runs on the CPU"),
])
def test_what_this_machine_cannot_run_is_refused_before_training(settings, device, message):
    with pytest.raises(FairquantError, match=message):
        distributed.plan(settings, torch.device(device))


def test_more_processes_than_cuda_devices_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    with pytest.raises(FairquantError, match="distributed.nproc is 2 but 1 CUDA device"):
        distributed.plan(DistributedParams(nproc=2), torch.device("cuda"))


def test_more_processes_than_cores_warn_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "usable_cores", lambda: 1)
    assert distributed.plan(DistributedParams(nproc=2), torch.device("cpu")) == distributed.Plan(2, "gloo", True)
    assert "distributed.nproc is 2 on 1 CPU core(s)" in capsys.readouterr().err


def test_one_process_needs_no_process_group():
    assert distributed.plan(DistributedParams(nproc=1), torch.device("cpu")) is None



@pytest.mark.slow  # torchrun starts two interpreters that each import torch and run the whole stage
def test_the_finetune_stage_under_torchrun_writes_the_one_process_model_once(tmp_path, prepared):  # noqa: F811
    """Every rank runs `python -m stages.finetune`; rank 0 alone moves the model and curves into place."""
    from fairquant.io import load_checkpoint

    settings = {**SMALL, "finetune.epochs": 1, "finetune.batch_size": 16, "finetune.lr": 0.01}
    single = tmp_path / "single"
    single.mkdir()
    done = run_stage("finetune", ["--data", prepared, "--out", single / "model", "--live", single / "live"], single,
                     settings)
    assert done.returncode == 0, done.stderr
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    argv = ["--seed", "0", "--data", str(prepared), "--out", str(ranks / "model"), "--live", str(ranks / "live"),
            "--params", str(stage_params(ranks, settings))]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "stages.finetune", *argv], cwd=ranks, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    one, two = (load_checkpoint(folder / "model" / "model.pt") for folder in (single, ranks))
    assert one["state_dict"].keys() == two["state_dict"].keys()
    weight = max(float((one["state_dict"][k].double() - two["state_dict"][k].double()).abs().max())
                 for k in one["state_dict"] if one["state_dict"][k].is_floating_point())
    print(f"torchrun finetune stage: max |weight difference| {weight:.3g}")
    assert weight <= WEIGHT_TOLERANCE
    assert sorted(path.name for path in ranks.iterdir()) == ["live", "model", "params.yaml"]  # no rank's temporaries
