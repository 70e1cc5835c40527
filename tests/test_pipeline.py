"""The real pipeline under `dvc repro` in a temporary git repository, on a shrunken params profile."""

import json
import time

import pandas as pd
import pytest
import yaml

from tests.study import sh, shrunken_params, study_repo

VERIFY_VARIANTS = {"fp32", "ptq-w8a8-train", "ptq-w8a8-synthetic", "ptq-w4a4-train", "ptq-w4a4-synthetic",
                   "quantface-w8a8-train", "quantface-w8a8-synthetic", "quantface-w4a4-train",
                   "quantface-w4a4-synthetic"}
SLOTS = {"fp32", "ptq", "qat", "kmeans", "prune", "fairalm", "fairalm+ptq", "fairalm-control", "fairalm-control+ptq",
         "ceag+prune", "fp32+caleqodds", "ptq+caleqodds"}


@pytest.mark.slow
def test_dvc_repro_status_exp_run_and_metrics_diff(tmp_path):
    repo = tmp_path / "study"
    params = shrunken_params()
    env = study_repo(repo, params)

    sh("dvc repro", repo, env)
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary) == SLOTS | {"synthetic_data", "seeds", "verify"} and summary["synthetic_data"] is True
    # the verification branch: every variant's SER, STD, mean and per-race accuracy, and its pairs table
    trends = {k for k in summary["verify"] if k.startswith("trend ")}  # each bits curve: SER and accuracy slopes
    assert trends == {"trend ptq-train", "trend ptq-synthetic", "trend quantface-train", "trend quantface-synthetic"}
    assert summary["verify"]["trend ptq-train"]["ser_verdict"] == "undefined"  # two bit-widths: no trend claimed
    assert set(summary["verify"]) - trends == VERIFY_VARIANTS | {"synthetic_data"} and summary["verify"]["synthetic_data"]
    for name in VERIFY_VARIANTS:
        assert {"ser", "verification_std", "verification_accuracy", "acc_African", "acc_Asian", "acc_Caucasian",
                "acc_Indian"} <= set(summary["verify"][name])
        pairs = pd.read_parquet(repo / "data" / "predictions" / "verify" / name / "pairs.parquet")
        assert list(pairs.columns) == ["pair_id", "fold", "race", "genuine", "score"] and len(pairs) == 4 * 20
    verify = json.loads((repo / "metrics" / "verify.json").read_text())
    assert verify["variants"]["ptq-w8a8-train"]["variant"]["kernels"] == "int8"
    assert verify["variants"]["ptq-w4a4-synthetic"]["vs_real_calibration"]["reference"] == "ptq-w4a4-train"
    assert "Face verification" in (repo / "plots" / "report.md").read_text()
    prepared_verify = json.loads((repo / "data" / "prepared_verify" / "info.json").read_text())
    assert "recordio" in json.dumps(prepared_verify), prepared_verify  # trained from train.rec / train.idx
    assert summary["seeds"] == 1
    evaluated = {slot: json.loads((repo / "metrics" / "eval" / "s0" / f"{slot}.json").read_text()) for slot in SLOTS}
    for slot in SLOTS:  # one seed: the headline is that seed's value
        assert summary[slot]["accuracy"] == evaluated[slot]["overall"]["accuracy"] and summary[slot]["size_bytes"] > 0
    assert summary["fp32"]["size_bytes"] / summary["ptq"]["size_bytes"] > 3.9
    assert summary["fp32"]["size_bytes"] / summary["kmeans"]["size_bytes"] > 7.5
    assert summary["ptq"]["latency_ms"] is None and summary["qat"]["latency_ms"] is None  # latency.repeats: 0
    names = {slot: evaluated[slot]["variant"] for slot in SLOTS - {"fp32"}}
    assert names == {"ptq": "ptq-w8a8-train", "qat": "qat-w4a4", "kmeans": "kmeans-k16", "prune": "prune-s80",
                     "fairalm": "fairalm", "fairalm+ptq": "fairalm+ptq-w8a8-train", "ceag+prune": "ceag+prune-s80",
                     "fairalm-control": "fairalm-control", "fairalm-control+ptq": "fairalm-control+ptq-w8a8-train",
                     "fp32+caleqodds": "fp32+caleqodds", "ptq+caleqodds": "ptq-w8a8-train+caleqodds"}
    # each remedy is compared with the variant it fixes; CEAG's constraint is measured on train, val and test
    assert {slot: evaluated[slot].get("baseline") for slot in SLOTS} == {
        "fp32": None, "ptq": None, "qat": None, "kmeans": None, "prune": None, "fairalm": "fairalm-control",
        "fairalm+ptq": "fairalm-control+ptq", "fairalm-control": None, "fairalm-control+ptq": None,
        "ceag+prune": "prune", "fp32+caleqodds": "fp32", "ptq+caleqodds": "ptq"}
    assert set(evaluated["ceag+prune"]["constraint"]) == {"train", "validation", "test", "test_baseline", "multipliers"}
    assert evaluated["fairalm+ptq"]["kernels"] == "int8"
    assert (repo / "metrics" / "train" / "s0" / "fairalm" / "plots" / "metrics" / "fairalm" / "eta.tsv").is_file()
    variant = evaluated["ptq"]
    assert variant["kernels"] == "int8" and variant["split"] == "test" and "vs_fp32" in variant
    check = variant["details"]["int8_check"]  # the kernels were checked against their q/dq reference, and passed
    assert check["sqnr_db"] >= check["quant_sqnr_db"] - check["tolerance_db"] and check["cpu_capability"]
    assert "## int8 kernels" in (repo / "plots" / "report.md").read_text()
    report = (repo / "plots" / "report.md").read_text()
    assert "SYNTHETIC" in report and "| qat-w4a4 |" in report and "simulated" in report
    assert "## Calibration sets" in report and "| distilled |" in report
    assert "## Across training seeds (1: 0)" in report and "one seed" in report
    assert "## Remedies" in report and "| ceag+prune-s80 | prune-s80 |" in report and "pareto" in report
    # the sweep: the curve's points against the study's own fp32 (reused), the trend, heatmap, Pareto and LaTeX
    sweep = json.loads((repo / "metrics" / "sweep.json").read_text())
    assert set(sweep) == {"face_resnet10 ptq W=A (train)", "face_resnet10 qat W=A"}
    curve = sweep["face_resnet10 ptq W=A (train)"]
    assert {"w8a8", "w4a4", "w2a2", "tpr_gap_slope", "tpr_gap_verdict"} <= set(curve)
    assert curve["tpr_gap_verdict"] in ("widens", "narrows", "no clear trend", "undefined")
    points = repo / "metrics" / "sweep" / "s0" / "points" / "face_resnet10"
    assert json.loads((points / "ptq-w8a8-train.json").read_text())["kernels"] == "int8"
    assert (repo / "data" / "sweep" / "s0" / "models" / "face_resnet10" / "fp32" / "model.pt").read_bytes() == \
        (repo / "data" / "models" / "s0" / "fp32" / "model.pt").read_bytes()  # the study's own model, reused
    for name in ("groups.csv", "gaps.csv", "heatmap.csv", "pareto.csv", "heatmap.png", "pareto.png"):
        assert (repo / "plots" / "sweep" / name).is_file(), name
    assert "## Sweep: how each group's damage grows" in report and "### Curve: face_resnet10 ptq W=A (train)" in report
    assert (repo / "plots" / "tables" / "sweep_curve.tex").is_file()
    assert (repo / "plots" / "tables" / "table1_accuracy_eo_fpr.tex").is_file()
    plots = json.loads(sh("dvc plots show --json --split", repo, env))["data"]  # the custom templates render
    curve = plots["plots/sweep/groups.csv"][0]["content"]
    assert curve["description"].startswith("fairquant sweep") and curve["facet"]["row"]["field"] == "curve"
    import pyarrow.parquet as pq

    table = pq.read_table(repo / "data" / "predictions" / "s0" / "variants" / "ptq" / "test.parquet")
    assert table.schema.names == ["sample_id", "y_true", "y_score", "y_pred", "Male"]

    # Reproducible: a clean run of the same commit elsewhere gives a byte-identical dvc.lock (every output hash).
    sh("git add -A && git commit -qm baseline", repo, env)
    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path, env)
    sh("dvc repro -f", clone, {**env, "PYTHONPATH": str(clone)})  # -f: every stage runs again, report included
    assert (clone / "dvc.lock").read_text() == (repo / "dvc.lock").read_text()

    # Adding a training seed runs that seed's chain and the report, nothing of seed 0.
    params["seeds"] = [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc status", repo, env)
    changed = {line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith((" ", "\t"))}
    assert changed == {"finetune@1", "calibration@1", "quantize_ptq@1", "quantize_qat@1", "quantize_kmeans@1",
                       "prune@1", "mitigate_before@1-fairalm", "quantize_ptq_mitigated@1-fairalm",
                       "mitigate_control@1-fairalm", "quantize_ptq_control@1-fairalm",
                       "mitigate_during_prune@1-ceag", "predict@1", "latency@1", "mitigate_after@1-caleqodds-fp32",
                       "mitigate_after@1-caleqodds-ptq", "evaluate@1", "sweep_finetune@1-face_resnet10",
                       "sweep_ptq@1-face_resnet10-w8a8-train", "sweep_ptq@1-face_resnet10-w4a4-train",
                       "sweep_ptq@1-face_resnet10-w2a2-train", "sweep_qat@1-face_resnet10-w4a4", "sweep_predict@1",
                       "sweep_evaluate@1", "report"}, out
    sh("git checkout params.yaml", repo, env)

    assert "up to date" in sh("dvc status", repo, env).lower()

    # A quantize key re-runs quantization and after, never prepare or finetune.
    out = sh("sed -i 's/  bits: 8/  bits: 6/' params.yaml && dvc status", repo, env)
    assert "quantize_ptq" in out and "finetune" not in out and "prepare" not in out and "quantize_qat" not in out
    sh("git checkout params.yaml", repo, env)

    # A two-value sweep through the experiment queue, two workers, as the README shows.
    sh("dvc exp run --queue -S 'quantize_ptq.bits=8,4' -S 'quantize_ptq.calibration=balanced'", repo, env)
    sh("dvc queue start -j 2 > queue.log 2>&1", repo, env)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh("dvc queue status", repo, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    rows = json.loads(sh("dvc exp show --json", repo, env))
    experiments = [e for row in rows for e in (row.get("experiments") or [])]
    names = sorted(e["revs"][0]["name"] for e in experiments)
    assert len(names) == 2, names
    for name in names:
        logs = sh(f"dvc queue logs {name}", repo, env)
        assert "Running stage 'finetune@0'" not in logs and "Running stage 'prepare'" not in logs
        assert "Running stage 'quantize_ptq@0'" in logs and "Running stage 'quantize_qat@0'" not in logs
    diff = json.loads(sh(f"dvc metrics diff {names[0]} {names[1]} --json", repo, env))
    changed = diff["metrics/summary.json"]
    assert "ptq.size_bytes" in changed and "fp32.accuracy" not in changed
    table = sh("dvc exp show --md --drop '.*' --keep 'Experiment|quantize_ptq.bits|ptq.tpr_gap|ptq.size_bytes'", repo, env)
    assert "quantize_ptq.bits" in table and "ptq.tpr_gap" in table
    sh("dvc queue stop", repo, env)

    # an evaluation setting re-runs only evaluate and report (no training: it keeps the suite short)
    out = sh("dvc exp run -S evaluate.bootstrap=300", repo, env)
    assert "Running stage 'evaluate@0'" in out and "Running stage 'finetune@0'" not in out
    diff = json.loads(sh("dvc metrics diff --json", repo, env))
    assert "metrics/summary.json" in diff and "fp32.tpr_diff_ci_low" in diff["metrics/summary.json"]
    assert "fp32.accuracy" not in diff["metrics/summary.json"]
    shown = json.loads(sh("dvc exp show --json", repo, env))
    assert len(shown) >= 1
    assert "evaluate.bootstrap" in sh("dvc params diff", repo, env)
