"""The real pipeline under `dvc repro` in a temporary git repository, on a shrunken params profile."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "generate": {"identities": 60, "images_per_identity": 4, "render_size": 32, "workers": 1},
    "prepare": {"image_size": 16, "workers": 1},
    "finetune": {"epochs": 1, "batch_size": 64},
    "quantize_ptq": {"calibration_size": 32, "latency_batch": 16, "latency_repeats": 1},
    "evaluate": {"bootstrap": 200},
}


def sh(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_dvc_repro_status_exp_run_and_metrics_diff(tmp_path):
    repo = tmp_path / "study"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", "fairquant", "stages", ".dvc", ".dvcignore"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, repo / name)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PYTHONPATH": str(repo)}
    sh("git init -q && git add -A && git commit -qm init", repo, env)

    sh("dvc repro", repo, env)
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary) == {"fp32", "ptq", "synthetic_data"} and summary["synthetic_data"] is True
    for slot in ("fp32", "ptq"):
        assert 0 <= summary[slot]["accuracy"] <= 1 and summary[slot]["size_bytes"] > 0
    assert summary["fp32"]["size_bytes"] / summary["ptq"]["size_bytes"] > 3.9
    variant = json.loads((repo / "metrics" / "ptq.json").read_text())
    assert variant["variant"] == "ptq-int8" and variant["split"] == "test" and "vs_fp32" in variant
    assert "SYNTHETIC" in (repo / "plots" / "report.md").read_text()
    import pyarrow.parquet as pq

    table = pq.read_table(repo / "data" / "predictions" / "ptq" / "test.parquet")
    assert table.schema.names == ["sample_id", "y_true", "y_score", "y_pred", "Male"]

    assert "up to date" in sh("dvc status", repo, env).lower()
    sh("git add -A && git commit -qm baseline", repo, env)

    # A quantize key re-runs quantization and after, never prepare or finetune.
    out = sh("sed -i 's/calibration_size: 32/calibration_size: 16/' params.yaml && dvc status", repo, env)
    assert "quantize_ptq" in out and "finetune" not in out and "prepare" not in out
    sh("git checkout params.yaml", repo, env)

    sh("dvc exp run -S finetune.epochs=2", repo, env)
    diff = json.loads(sh("dvc metrics diff --json", repo, env))
    assert "metrics/summary.json" in diff and "fp32.accuracy" in diff["metrics/summary.json"]
    shown = json.loads(sh("dvc exp show --json", repo, env))
    assert len(shown) >= 1
    assert "finetune.epochs" in sh("dvc params diff", repo, env)
