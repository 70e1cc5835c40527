"""Typed result records: reading a result file and writing it back gives the same bytes."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairquant.errors import FairquantError
from fairquant.io import write_json
from fairquant.params import EvaluateParams
from fairquant.results import EvaluationResult, PredictionsInfo

ROOT = Path(__file__).resolve().parents[1]
EVAL_FILES = sorted((ROOT / "metrics" / "eval" / "s0").glob("*.json"))


def _info_of(evaluation: dict) -> dict:
    """The info.json that the predict (or mitigate) stage wrote for the variant of a committed evaluation, in the
    key order stages/predict.py writes."""
    latency = {mode: {"median_ms": ms, "batch_size": 256, "repeats": 5} for mode, ms in evaluation["latency_ms"].items()}
    return {"name": evaluation["variant"], "kind": evaluation["kind"], "kernels": evaluation["kernels"],
            "details": evaluation["details"], "size_bytes": evaluation["size_bytes"], "latency": latency,
            "synthetic": evaluation["synthetic"]}


def test_the_committed_evaluations_are_there():
    assert len(EVAL_FILES) == 12, [p.name for p in EVAL_FILES]


@pytest.mark.parametrize("path", EVAL_FILES, ids=lambda p: p.stem)
def test_evaluation_round_trip_is_byte_identical(path, tmp_path):
    result = EvaluationResult.read(path)
    assert result.variant == json.loads(path.read_text())["variant"]
    result.write(tmp_path / path.name)
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("path", EVAL_FILES, ids=lambda p: p.stem)
def test_info_round_trip_is_byte_identical(path, tmp_path):
    written = tmp_path / "written"
    write_json(written / "info.json", _info_of(json.loads(path.read_text())))
    info = PredictionsInfo.read(written)
    info.write(tmp_path / "again")
    assert (tmp_path / "again" / "info.json").read_bytes() == (written / "info.json").read_bytes()
    assert info.latency_ms == json.loads(path.read_text())["latency_ms"]


def test_info_exposes_the_mitigation_record():
    plain = PredictionsInfo(name="ptq", kind="ptq-int8", kernels="int8", size_bytes=1, synthetic=True)
    assert plain.mitigation is None and plain.details == {} and plain.latency == {}
    remedy = PredictionsInfo(name="ptq+caleqodds", kind="ptq-int8", kernels="int8", size_bytes=1, synthetic=True,
                             details={"mitigation": {"method": "caleqodds", "collapsed": ["Male"]}})
    assert remedy.mitigation == {"method": "caleqodds", "collapsed": ["Male"]}


def test_info_with_missing_or_unknown_keys_is_one_clear_error(tmp_path):
    write_json(tmp_path / "info.json", {"name": "fp32", "kind": "fp32", "kernels": "fp32", "size": 1,
                                        "synthetic": True})
    with pytest.raises(FairquantError) as error:
        PredictionsInfo.read(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'info.json'}: missing ['size_bytes'], unknown ['size']; expected the "
                                f"keys ['name', 'kind', 'kernels', 'size_bytes', 'synthetic', 'details', 'latency']: "
                                f"re-run the stage that writes it")


def test_an_evaluation_without_its_head_is_refused():
    with pytest.raises(FairquantError, match=r"missing \['kind'"):
        EvaluationResult.from_dict({"variant": "fp32", "n": 10})


def test_evaluate_variant_writes_the_same_file_as_it_reads(tmp_path):
    from fairquant.fairness.evaluation import evaluate_variant

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 60)
    table = pd.DataFrame({"sample_id": [str(i) for i in range(60)], "y_true": y_true,
                          "y_pred": np.where(rng.random(60) < 0.8, y_true, 1 - y_true),
                          "Male": np.where(np.arange(60) < 40, "Female", "Male")})
    info = PredictionsInfo(name="ptq", kind="ptq-int8", kernels="int8", size_bytes=10, synthetic=True,
                           details={"training_seed": 0}, latency={"batch": {"median_ms": 1.5, "batch_size": 8}})
    result = evaluate_variant(table, table, info, ["Male"], EvaluateParams(privileged_group="Female", bootstrap=100))
    result.write(tmp_path / "ptq.json")
    data = json.loads((tmp_path / "ptq.json").read_text())
    assert list(data)[:9] == list(EvaluationResult.HEAD) and list(data)[-1] == "vs_fp32"
    assert data["latency_ms"] == {"batch": 1.5} and data["details"] == {"training_seed": 0}
    EvaluationResult.read(tmp_path / "ptq.json").write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "ptq.json").read_bytes()


@pytest.mark.parametrize("key, value, message", [
    ("size_bytes", "big", "'size_bytes' should be int, found 'big'"),
    ("synthetic", "yes", "'synthetic' should be bool, found 'yes'"),
    ("size_bytes", True, "'size_bytes' should be int, found True"),
    ("details", [], "'details' should be dict, found []"),
    ("latency", "fast", "'latency' should be dict, found 'fast'"),
    ("latency", {"compiled": {"batch_size": 64}}, "latency ['compiled'] without a median_ms"),
    ("details", {"mitigation": "fairalm"}, "details.mitigation is not an object"),
])
def test_info_with_values_of_the_wrong_type_is_one_clear_error(key, value, message):
    """Found by the bad-input probe: a string size or flag was copied into the metrics silently."""
    data = {"name": "qat-w4a4", "kind": "fakequant", "kernels": "simulated", "details": {}, "size_bytes": 10,
            "latency": {}, "synthetic": True, key: value}
    with pytest.raises(FairquantError, match=re.escape(message)):
        PredictionsInfo.from_dict(data)


@pytest.mark.parametrize("column, values, message", [
    ("y_pred", [0.2, 0.9, 0.7, 0.1], "y_pred must hold the labels 0 and 1 as integers, found float64"),
    ("y_pred", [0, 1, 2, 1], "y_pred must hold the labels 0 and 1 as integers, found int64 [0, 1, 2]"),
    ("y_true", [1, 0, 1, 3], "y_true must hold the labels 0 and 1 as integers"),
])
def test_predictions_whose_labels_are_not_binary_integers_are_refused(column, values, message):
    """Found by the bad-input probe: scores in y_pred were cut to 0 and evaluated as predictions, silently."""
    import pandas as pd

    from fairquant.fairness.evaluation import check_labels

    frame = pd.DataFrame({"sample_id": list("abcd"), "y_true": [1, 0, 1, 0], "y_pred": [1, 0, 0, 0]})
    frame[column] = values
    with pytest.raises(FairquantError, match=re.escape(message)):
        check_labels(frame, "ptq")
    with pytest.raises(FairquantError, match="lack the column 'y_pred'"):
        check_labels(frame.drop(columns="y_pred"), "ptq")


def test_a_multiclass_evaluation_reads_back_with_its_per_class_block(tmp_path):
    """overall.per_class is an object of per-class numbers, not damage (the check once refused every multi-class
    evaluation read back)."""
    import numpy as np
    import pandas as pd

    from fairquant.fairness.evaluation import evaluate_variant
    from fairquant.params import EvaluateParams
    from fairquant.results import EvaluationResult, PredictionsInfo

    rng = np.random.default_rng(0)
    classes, n = ["c0", "c1", "c2"], 300
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 3
    prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "y_true": y.astype("int16"),
                          "y_pred": prob.argmax(1).astype("int16"), "g": rng.choice(["a", "b"], n)})
    frame["y_score"], frame["y_prob"] = prob[np.arange(n), frame["y_pred"]], list(prob)
    info = PredictionsInfo(name="fp32", kind="fp32", kernels="fp32", details={"classes": classes}, size_bytes=1,
                           synthetic=True)
    result = evaluate_variant(frame, frame, info, ["g"], EvaluateParams(privileged_group="a", bootstrap=100))
    result.write(tmp_path / "fp32.json")
    back = EvaluationResult.read(tmp_path / "fp32.json")
    assert set(back.metrics["overall"]["per_class"]) == set(classes)


def test_verification_metrics_with_non_finite_values_pass_and_a_bad_kind_is_refused():
    """A non-finite estimate is stored as null and named in ``nonfinite`` ('undefined', 'inf', '-inf'): valid (the
    check once refused every real verify.json); another word there is damage."""
    from fairquant.errors import FairquantError
    from fairquant.results import check_verification_metrics

    estimate = {"value": None, "ci_low": None, "ci_high": 2.0, "nonfinite": {"value": "undefined", "ci_low": "-inf"}}
    verify = {"races": ["African"], "confidence": 0.95, "reference": "fp32",
              "variants": {"fp32": {"summary": {"ser": 1.0}, "global_threshold": {"fmr_ratio": estimate}}}}
    check_verification_metrics(verify, "verify.json")
    estimate["nonfinite"]["value"] = "huge"
    with pytest.raises(FairquantError, match="fmr_ratio.nonfinite.value' should name a non-finite kind"):
        check_verification_metrics(verify, "verify.json")
