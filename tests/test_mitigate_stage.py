"""The mitigate stage's bad input: one line naming the problem and the fix, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.io import predictions_schema, write_json, write_table
from conftest import write_prepared_samples
from tests.test_stages import run_in_process

ROOT = Path(__file__).resolve().parents[1]


def _predictions(folder: Path, groups: list[str], details: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).astype(np.float32)
    frame = pd.DataFrame({"sample_id": [str(i) for i in range(n)], "y_true": y,
                          "Male": [groups[i % len(groups)] for i in range(n)], "y_score": scores,
                          "y_pred": (scores > 0.5).astype("int8")})
    samples = []
    for split in ("val", "test"):  # the same rows under other sample ids: validation and test never share one
        ids = frame["sample_id"] if split == "test" else "val-" + frame["sample_id"]
        write_table(folder / f"{split}.parquet", frame.assign(sample_id=ids), predictions_schema(["Male"]))
        samples.append(frame.assign(sample_id=ids, split=split)[["sample_id", "split", "y_true", "Male"]])
    write_prepared_samples(folder.parent / "prepared", pd.concat(samples))  # what the predictions are checked against
    write_json(folder / "info.json", {"name": "ptq-w8a8-train", "kind": "ptq-int8", "kernels": "int8", "size_bytes": 1,
                                      "latency": {}, "synthetic": True, "details": details or {}})
    return folder


def _run(tmp_path, *args):
    """The mitigate stage; a post-processor gets ``--data`` (the prepared folder _predictions writes)."""
    data = ["--data", str(tmp_path / "prepared")] if "--predictions" in args and "--data" not in args else []
    return run_in_process("mitigate", [*map(str, args), *data, "--params", str(ROOT / "params.yaml")], ROOT)


def _assert_refused(result, message, out: Path):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not out.exists()


def test_unknown_method(tmp_path):
    out = tmp_path / "out"
    _assert_refused(_run(tmp_path, "--method", "fairness", "--out", str(out)),
                    "unknown remedy 'fairness'; known: fairalm, dp_regularizer, ceag", out)


def test_post_processor_on_a_single_group(tmp_path):
    source = _predictions(tmp_path / "ptq", ["Female"])
    out = tmp_path / "ptq+caleqodds"
    _assert_refused(_run(tmp_path, "--method", "caleqodds", "--predictions", str(source), "--out", str(out)),
                    "at least two groups", out)


def test_post_processor_needs_its_input(tmp_path):
    out = tmp_path / "out"
    _assert_refused(_run(tmp_path, "--method", "threshold", "--out", str(out)),
                    "threshold (after compression) needs --predictions --data", out)
    source = _predictions(tmp_path / "ptq", ["Female", "Male"])  # without --data its splits could not be checked
    _assert_refused(run_in_process("mitigate", ["--method", "caleqodds", "--predictions", str(source), "--out", str(out),
                                                "--params", str(ROOT / "params.yaml")], ROOT),
                    "caleqodds (after compression) needs --data", out)
    _assert_refused(_run(tmp_path, "--method", "caleqodds", "--predictions", str(tmp_path / "none"), "--out", str(out)),
                    "val.parquet is missing; run the predict stage", out)


def test_post_processing_twice_is_refused(tmp_path):
    source = _predictions(tmp_path / "ptq", ["Female", "Male"], {"mitigation": {"family": "post-processing"}})
    out = tmp_path / "twice"
    _assert_refused(_run(tmp_path, "--method", "caleqodds", "--predictions", str(source), "--out", str(out)),
                    "already post-processed", out)


def test_post_processor_writes_a_labelled_variant(tmp_path):
    from fairquant.io import read_json, read_table

    source = _predictions(tmp_path / "ptq", ["Female", "Male"])
    out = tmp_path / "ptq+caleqodds"
    result = _run(tmp_path, "--method", "caleqodds", "--predictions", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    info = read_json(out / "info.json")
    assert info["name"] == "ptq-w8a8-train+caleqodds" and info["details"]["mitigation"]["method"] == "caleqodds"
    assert info["latency"] == {} and info["kind"] == "ptq-int8"
    test = read_table(out / "test.parquet")
    assert list(test.columns) == ["sample_id", "y_true", "y_score", "y_pred", "Male"] and len(test) == 200


def test_a_binary_post_processor_refuses_multiclass_predictions(tmp_path):
    """Found in review: caleqodds turned 3-class predictions into binary labels with exit 0 (threshold: a traceback)."""
    from fairquant.io import read_json, write_json

    source = _predictions(tmp_path / "ptq", ["Female", "Male"])
    info = read_json(source / "info.json")
    write_json(source / "info.json", {**info, "details": {"classes": ["cat", "dog", "owl"]}})
    for method in ("caleqodds", "threshold"):
        out = tmp_path / f"ptq+{method}"
        _assert_refused(_run(tmp_path, "--method", method, "--predictions", str(source), "--out", str(out)),
                        f"{method} post-processes binary predictions but", out)


def test_training_remedy_needs_its_inputs(tmp_path):
    out = tmp_path / "out"
    _assert_refused(_run(tmp_path, "--method", "ceag", "--seed", "0", "--out", str(out)),
                    "ceag (during compression) needs --data --model --live --compressor", out)


def test_control_only_before_compression(tmp_path):
    out = tmp_path / "out"
    _assert_refused(_run(tmp_path, "--method", "caleqodds", "--control", "--predictions", str(tmp_path), "--out", str(out)),
                    "--control is the baseline of a remedy before compression; caleqodds is after compression", out)


def test_qat_during_mitigation_refuses_a_layer_name_the_model_lacks_before_any_work(tmp_path):
    """Found in review: a typo in quantize_qat.layers reached the mitigation stage's QAT only after the data
    and the reference scores were loaded, with an error naming no params key."""
    import yaml

    from fairquant.compress.checkpoints import save_variant
    from fairquant.models import build_model

    model = build_model("face_resnet10", small_input_stem=False)
    save_variant(tmp_path / "fp32", model.state_dict(), {"kind": "fp32", "name": "fp32", "arch": "face_resnet10",
                                                         "small_input_stem": False, "image_size": 32})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["quantize_qat"]["layers"] = {"fcc": 8}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, live = tmp_path / "out", tmp_path / "live"
    result = subprocess.run([sys.executable, "-m", "stages.mitigate", "--method", "ceag", "--seed", "0", "--data",
                             str(tmp_path / "no-data-read-yet"), "--model", str(tmp_path / "fp32"), "--compressor",
                             "qat", "--calibration", str(tmp_path / "no-calibration-read-yet"), "--live", str(live),
                             "--out", str(out), "--params", str(tmp_path / "params.yaml")],
                            cwd=ROOT, capture_output=True, text=True)
    _assert_refused(result, "quantize_qat.layers names 'fcc', which this model does not have (close names: fc)", out)
    assert not live.exists()  # nothing was trained or logged


def test_post_processor_on_a_slot_the_study_does_not_make_names_the_choices(tmp_path):
    """Found in review: with a per-seed predict stage, a typo in mitigate.post_on surfaced as DVC's missing-path error."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mitigate"]["post_on"] = ["fp32", "qatt"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "qatt+caleqodds"
    result = subprocess.run([sys.executable, "-m", "stages.mitigate", "--method", "caleqodds", "--predictions",
                             str(tmp_path / "variants" / "qatt"), "--data", str(tmp_path / "prepared"), "--out",
                             str(out), "--params",
                             str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)
    _assert_refused(result, "mitigate.post_on names 'qatt', a slot this study does not make; choose among", out)
