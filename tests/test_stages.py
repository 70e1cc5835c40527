"""Each bad input: one line on stderr naming the problem, exit status 2, and no output written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_stage(stage, args, cwd, params=None):
    params_path = Path(cwd) / "params.yaml"
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in (params or {}).items():
        section, key = dotted.split(".", 1)
        base.setdefault(section, {})[key] = value
    params_path.write_text(yaml.safe_dump(base))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args, "--params", str(params_path)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_celeba):
    cwd = tmp_path_factory.mktemp("prepared")
    result = run_stage("prepare", ["--out", str(cwd / "prepared")], cwd,
                       {"data.root": str(tiny_celeba), "prepare.image_size": 16})
    assert result.returncode == 0, result.stderr
    return cwd / "prepared"


def test_quantize_rejects_calibration_larger_than_train(tmp_path, prepared):
    fake_model = tmp_path / "fp32"
    fake_model.mkdir()
    result = run_stage("quantize_ptq", ["--data", str(prepared), "--model", str(fake_model), "--out",
                                        str(tmp_path / "ptq")], tmp_path, {"quantize_ptq.calibration_size": 10_000})
    assert_clean_failure(result, "quantize_ptq.calibration_size=10000 is larger than the training split", tmp_path / "ptq")


def test_missing_checkpoint_is_a_clear_error(tmp_path, prepared):
    result = run_stage("quantize_ptq", ["--data", str(prepared), "--model", str(tmp_path / "nothing"), "--out",
                                        str(tmp_path / "ptq")], tmp_path, {"quantize_ptq.calibration_size": 8})
    assert_clean_failure(result, "checkpoint not found; run the stage that writes it first", tmp_path / "ptq")


def test_finetune_missing_pretrained_file_says_no_download(tmp_path, prepared):
    result = run_stage("finetune", ["--data", str(prepared), "--out", str(tmp_path / "fp32"), "--live",
                                    str(tmp_path / "live")], tmp_path, {"model.pretrained": "weights/resnet18.pth"})
    assert_clean_failure(result, "pretrained weights not found; no download is attempted", tmp_path / "fp32")
