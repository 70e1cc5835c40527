"""The calibration and quantize_ptq stages on bad input (one line, exit 2, nothing written) and the int8 check
they record, on the tiny pipeline of test_stages."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fairquant.compress import int8
from test_stages import SMALL, assert_clean_failure, prepared, run_stage, trained  # noqa: F401  (fixtures)

CPU = int8.cpu_int8()


def ptq(trained, out, params, calibration="train"):  # noqa: F811
    return run_stage("quantize_ptq", ["--seed", "0", "--model", str(trained / "fp32"), "--calibration",
                                      str(trained / "cal" / calibration), "--out", str(out)], out.parent,
                     {**SMALL, **params})


def test_calibration_refuses_a_folder_holding_a_copy_of_a_test_image(tmp_path, prepared, trained):  # noqa: F811
    from fairquant.data.prepare import load_prepared

    table, images, _ = load_prepared(prepared)
    row = table[table["split"] == "test"].iloc[0]
    faces = tmp_path / "faces"
    shutil.copytree(trained / "faces", faces)
    Image.fromarray(np.asarray(images[row["row"]])).save(faces / "zz_copy.png")
    result = run_stage("calibration", ["--data", str(prepared), "--model", str(trained / "fp32"), "--out",
                                       str(tmp_path / "cal")], tmp_path,
                       {"calibration.synthetic_folder": str(faces), "calibration.size": 8,
                        "calibration.distilled_iterations": 1, "prepare.image_size": 16})
    assert_clean_failure(result, f"zz_copy.png has exactly the pixels of test image {row['sample_id']}; remove it",
                         tmp_path / "cal")


def test_balanced_set_stores_each_images_cell(trained):  # noqa: F811
    info = json.loads((trained / "cal" / "balanced" / "info.json").read_text())
    cells = np.load(trained / "cal" / "balanced" / "cells.npy")
    assert len(cells) == info["size"] == 8 and len(info["cells"]) == 4
    assert np.bincount(cells).tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize("params, calibration, message", [
    ({"quantize_ptq.int8_reduce_range": "maybe"}, "train",
     "'quantize_ptq.int8_reduce_range': expected 'auto', True or False; found 'maybe'"),
    ({"quantize_ptq.int8_tolerance_db": -1}, "train",
     "'quantize_ptq.int8_tolerance_db': expected greater than or equal to 0; found -1"),
    ({"quantize_ptq.calibration": "balanced", "quantize_ptq.calibration_size": 3}, "balanced",
     "quantize_ptq.calibration_size=3 is smaller than the 4 group x label cells of the 'balanced' set"),
])
def test_quantize_ptq_rejects_bad_input(tmp_path, trained, params, calibration, message):  # noqa: F811
    result = ptq(trained, tmp_path / "ptq", {"latency.batch": 8, **params}, calibration)
    assert_clean_failure(result, message, tmp_path / "ptq")


@pytest.mark.skipif(CPU.vnni, reason=f"this CPU has VNNI ({CPU.capability}): full-range int8 does not saturate here")
def test_quantize_ptq_refuses_int8_kernels_that_disagree_with_their_reference(tmp_path, trained):  # noqa: F811
    result = ptq(trained, tmp_path / "ptq", {"latency.batch": 8, "quantize_ptq.int8_reduce_range": False})
    assert_clean_failure(result, "the compiled int8 kernels disagree with their own q/dq reference on this CPU",
                         tmp_path / "ptq")


def test_quantize_ptq_records_the_int8_check(tmp_path, trained):  # noqa: F811
    result = ptq(trained, tmp_path / "ptq", {"latency.batch": 8})
    assert result.returncode == 0, result.stderr
    check = json.loads((tmp_path / "ptq" / "info.json").read_text())["int8_check"]
    assert check["cpu_capability"] == CPU.capability
    assert check["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert check["reduce_range"] is (not CPU.vnni) and check["images"] == 8 and check["tolerance_db"] == 5.0
    assert check["sqnr_db"] is None or check["sqnr_db"] >= check["quant_sqnr_db"] - 5.0  # None: identical (inf)
    assert {"mean_abs_diff", "quant_noise"} <= set(check)
    assert "int8 kernels on" in result.stdout
