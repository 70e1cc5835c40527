"""The shrunken default: the study's own dvc.yaml and code in a fresh git repository, on a params profile small
enough for CI (about a minute of training on 2 cores). The end-to-end tests and benchmarks/faults.py build it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "generate": {"identities": 60, "images_per_identity": 4, "render_size": 32, "workers": 1},
    "faces": {"count": 12},
    "prepare": {"image_size": 16, "workers": 1},
    "finetune": {"epochs": 1, "batch_size": 64},
    "calibration": {"size": 32, "distilled_size": 8, "distilled_iterations": 3},
    "latency": {"batch": 16, "repeats": 0},  # no timing: two runs must then be byte-identical
    "quantize_qat": {"batch_size": 64},
    "quantize_kmeans": {"iterations": 10},
    "prune": {"batch_size": 64},
    "evaluate": {"bootstrap": 200},
    "sweep": {"ptq": ["w8a8", "w4a4", "w2a2"], "qat": ["w4a4"]},  # three points: a curve with a trend, real int8 at 8
}
MITIGATE_TINY = {"fairalm": {"epochs": 0.5}, "ceag": {"checks": 2}}
VERIFY_TINY = {  # face verification: 4 races x 8 test identities, one genuine and one impostor pair per fold
    "generate": {"train_identities": 24, "images_per_identity": 4, "test_identities_per_race": 8,
                 "test_images_per_identity": 3, "pairs_per_fold": 1, "render_size": 32, "faces": 16, "workers": 1},
    "data": {"image_size": 16, "calibration_size": 16, "workers": 1},
    "train": {"epochs": 1, "batch_size": 32},
    "quantface": {"epochs": 0.5, "batch_size": 16},
    "evaluate": {"bootstrap": 100},
}
RECORDIO = {"train_layout": "recordio", "train_root": "data/raw/synthetic_verify/recordio",
            "train_race_map": "data/raw/synthetic_verify/recordio/identity_races.csv"}
VERIFY_BITS = [8, 4]  # two points: the curve and its (undefined) trend without a third compression of the branch
STUDY_FILES = ("dvc.yaml", "params.yaml", "fairquant", "stages", ".dvc", ".dvcignore", "data/pretrained")


def shrunken_params() -> dict:
    """The shipped params.yaml with the shrunken profile applied (the verification branch from RecordIO)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    for method, values in MITIGATE_TINY.items():
        params["mitigate"][method].update(values)
    for section, values in VERIFY_TINY.items():
        params["verify"][section].update(values)
    params["verify"]["bits"] = VERIFY_BITS
    params["verify"]["generate"]["train_recordio"] = True  # the branch trains from insightface's RecordIO layout
    params["verify"]["data"].update(RECORDIO)
    return params


def study_env(tmp: Path, repo: Path) -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp / "site"), "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(repo)}


def study_repo(repo: Path, params: dict) -> dict:
    """A git repository at ``repo`` holding the study's code, dvc.yaml and ``params``, with an empty DVC cache;
    returns the environment to run dvc in it."""
    repo.mkdir(parents=True)
    for name in STUDY_FILES:  # data/pretrained: the tracked folder finetune depends on (the user's weights go there)
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = study_env(repo.parent, repo)
    sh("git init -q && git add -A && git commit -qm init", repo, env)
    return env


def sh(cmd, cwd, env, timeout=1800):
    result = subprocess.run(cmd, check=False, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout
