"""Troubleshooting catalogue: the command line: options, interrupted and failed runs, a params file of another name (README, Troubleshooting, "Artifacts and the command line"). Each case id
is a README row.

Each case damages one input as a user of a shared DVC remote might find it, runs the stage that reads it as a user
would, and checks the promise: exit status 2, one line on stderr naming the problem and the fix, and nothing
written."""

from pathlib import Path

import pytest
from conftest import write_prepared

from tests.catalogue_builders import TINY_MODEL, fp32_folder, user_file
from tests.test_stages import assert_clean_failure, run_stage

# ---------------------------------------------------------------- the command line


CLI_CASES = [
    pytest.param("evaluate", lambda t: ["fp32", "--out", "eval", "--bogus"], "No such option: --bogus",
                 "eval", id="cli-unknown-option"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--live", "live"],
                 "Missing option '--out'", "live", id="cli-missing-option"),
    pytest.param("evaluate", lambda t: ["fp32", "--out", "eval", "--params", "nope.yaml"],
                 "nope.yaml: params file not found", "eval", id="cli-params-not-found"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out", str(user_file(t / "fp32")),
                                        "--live", "live"],
                 "--out fp32 is a file; the output is a folder", "live", id="cli-out-is-a-file"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out", "fp32", "--live",
                                        str(user_file(t / "live"))],
                 "--live live is a file; the output is a folder", "fp32", id="cli-live-is-a-file"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", "data/prepared", "--out",
                                        str(user_file(t / "models") / "fp32"), "--live", "live"],
                 "--out models/fp32: models is a file, where a folder of the path should be", "live",
                 id="cli-out-under-a-file"),
    pytest.param("latency", lambda t: ["--models", "models", "--out", (t / "latency.json").mkdir() or "latency.json"],
                 "--out latency.json is a folder; the output is a file", "models", id="cli-file-output-is-a-folder"),
    pytest.param("finetune", lambda t: ["--seed", "0", "--data", str(user_file(t / "data" / "prepared")), "--out", "fp32",
                                        "--live", "live"],
                 "data/prepared/info.json: file not found", "fp32", id="cli-data-is-a-file"),
    pytest.param("report", lambda t: ["--eval", "eval", "--summary", "summary.json", "--plots", "plots", "--data",
                                      "data/prepared"],
                 "--data and --predictions go together", "plots", id="cli-report-data-without-predictions"),
    pytest.param("report", lambda t: ["--eval", "eval", "--summary", "summary.json", "--plots", "plots",
                                      "--variant-metrics", "eval"],
                 "--variant-metrics eval and --eval eval are the same path or one holds the other", "plots",
                 id="cli-report-output-overlaps-input"),
    pytest.param("predict", lambda t: ["--data", "data/prepared", "--models", "models", "--out", "variants", "--params",
                                       user_file(t / "gpu.yaml", "evaluate:\n  device: cuda\n").name],
                 "evaluate.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'", "variants",
                 id="cli-cuda-where-there-is-none",
                 marks=pytest.mark.skipif("__import__('torch').cuda.is_available()",
                                          reason="a CUDA device is visible")),
]


@pytest.mark.parametrize("stage, argv, message, out", CLI_CASES)
def test_command_line_mistakes_are_one_line(tmp_path, stage, argv, message, out):
    """The stage's real argument parsing (run in this process): a mistake on the command line, one line, exit 2."""
    from tests.test_stages import run_in_process, stage_params

    args = [str(Path(a).relative_to(tmp_path)) if a.startswith(str(tmp_path)) else a for a in argv(tmp_path)]
    stage_params(tmp_path, {"prepare.image_size": 8})
    if not (tmp_path / "data").exists():
        write_prepared(tmp_path / "data" / "prepared")
    result = run_in_process(stage, args, tmp_path)
    assert_clean_failure(result, message, tmp_path / out)


def test_a_failure_during_training_leaves_the_live_folder_as_it_was(tmp_path, monkeypatch):
    """dvclive writes into a temporary folder that replaces --live only when the stage succeeds: a failure after an
    epoch was logged leaves the previous run's curves untouched (and no curves of a run that did not finish)."""
    import fairquant.training
    from fairquant.errors import FairquantError

    def one_epoch_then_fail(model, *args, on_epoch, **kwargs):
        on_epoch(type("Log", (), {"epoch": 0, "train_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.5,
                                  "val_group_accuracy": {}})())
        raise FairquantError("disk full (injected)")

    monkeypatch.setattr(fairquant.training, "train_classifier", one_epoch_then_fail)
    write_prepared(tmp_path / "data" / "prepared")
    live = user_file(tmp_path / "live" / "metrics.json", "the previous run's").parent
    out = tmp_path / "fp32"
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(live)], tmp_path,
                       {"prepare.image_size": 8, "finetune.epochs": 1})
    assert_clean_failure(result, "disk full (injected)", out)
    assert [p.name for p in live.iterdir()] == ["metrics.json"]
    assert (live / "metrics.json").read_text() == "the previous run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "live", "params.yaml"]  # no temporary folder left


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch):
    import fairquant.training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fairquant.training, "train_classifier", interrupted)
    write_prepared(tmp_path / "data" / "prepared")
    result = run_stage("finetune", ["--data", "data/prepared", "--out", "fp32", "--live", "live"], tmp_path,
                       {"prepare.image_size": 8, "finetune.epochs": 1})
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["interrupted: the stage stopped before finishing; no output was "
                                                  "written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml"]


# ---------------------------------------------------------------- finetune's two outputs, together or not at all


KILL_SAFE_CASES = [
    pytest.param("live", "cannot move the curves in place (injected)", id="artifact-finetune-live-move-fails"),
]


@pytest.mark.parametrize("failing, message", KILL_SAFE_CASES)
def test_finetune_writes_the_model_only_with_its_curves(tmp_path, monkeypatch, failing, message):
    """The model and --live appear together: when moving the curves in place fails (a full disk, a kill), the
    model is not left behind without them (it was written, before, inside the curves' folder block)."""
    import os

    import fairquant.io
    from fairquant.errors import FairquantError

    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == failing:
            raise FairquantError(message)
        return real_replace(source, target)

    monkeypatch.setattr(fairquant.io.os, "replace", replace)
    write_prepared(tmp_path / "data" / "prepared")
    out = tmp_path / "fp32"
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(tmp_path / failing)],
                       tmp_path, {"prepare.image_size": 8, "finetune.epochs": 1})
    assert_clean_failure(result, message, out)
    assert not (tmp_path / failing).exists()


# ---------------------------------------------------------------- a params file not called params.yaml


PARAMS_FILE_CASES = [
    pytest.param("mitigate", "data/prepared was made with protected ['Male'] but experiment.yaml has data.protected "
                 "['Young']", id="artifact-prepared-stale-named-params-file"),
]


@pytest.mark.parametrize("stage, message", PARAMS_FILE_CASES)
def test_stale_prepared_data_names_the_params_file_given(tmp_path, stage, message):
    from tests.test_stages import run_in_process, stage_params

    write_prepared(tmp_path / "data" / "prepared")
    fp32_folder(tmp_path / "fp32")
    params = stage_params(tmp_path, {**TINY_MODEL, "data.protected": ["Young"]})
    params.rename(tmp_path / "experiment.yaml")
    out, live = tmp_path / "fair", tmp_path / "live"
    result = run_in_process(stage, ["--method", "fairalm", "--seed", "0", "--data", "data/prepared", "--model",
                                    str(tmp_path / "fp32"), "--out", str(out), "--live", str(live),
                                    "--params", str(tmp_path / "experiment.yaml")], tmp_path)
    assert_clean_failure(result, message, out)
    assert not live.exists()


LAUNCHER_CASES = [
    pytest.param("report", ["--eval", "eval", "--summary", "summary.json", "--plots", "plots"],
                 "error: report runs on one process, but WORLD_SIZE is 2", id="cli-stage-under-a-launcher"),
    pytest.param("mitigate", ["--method", "caleqodds", "--predictions", "predictions", "--out", "plots"],
                 "error: caleqodds (after compression) trains nothing and runs on one process, but WORLD_SIZE is 2",
                 id="cli-mitigate-under-a-launcher"),
]


@pytest.mark.parametrize("subprocess_run", [False, True], ids=["in-process", "python-m"])
@pytest.mark.parametrize("stage, argv, message", LAUNCHER_CASES)
def test_a_stage_that_does_not_train_refuses_a_launcher(tmp_path, monkeypatch, stage, argv, message, subprocess_run):
    """Under torchrun (or a job launcher's RANK/WORLD_SIZE) a stage that does not train once exited 0 on every rank
    but 0 having written nothing; it refuses instead (named as `python -m stages.<name>` runs it, too)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = run_stage(stage, argv, tmp_path, subprocess_run=subprocess_run)
    assert_clean_failure(result, message, tmp_path / "plots")
    assert not (tmp_path / "summary.json").exists()


CASES = (LAUNCHER_CASES + CLI_CASES + KILL_SAFE_CASES + PARAMS_FILE_CASES)
