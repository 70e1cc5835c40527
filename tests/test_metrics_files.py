"""One metrics file per variant (metrics/variants/<slot>.json, metrics/verify/<variant>.json): the rows of
`dvc metrics show`. They hold summary.json's own values on a fixed set of keys, and the report stage writes them
whole or not at all. The end-to-end checks (`dvc metrics show --md` on the study) are in tests/test_pipeline.py."""

import json
import shutil

import pytest

from fairquant.errors import FairquantError
from fairquant.fairness.summary import (MULTICLASS_ROW_KEYS, VARIANT_ROW_KEYS, VERIFY_ROW_KEYS, variant_rows,
                                        verification_rows)
from fairquant.report.build import row_files
from tests.test_stages import ROOT, assert_clean_failure, run_stage

# The documented columns (README "Reading the metrics"): renaming one breaks every user's `--keep` recipe.
VARIANT_KEYS = ["accuracy", "worst_group_accuracy", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "flip_rate",
                "size_bytes", "latency_ms"]
MULTICLASS_KEYS = VARIANT_KEYS + ["balanced_accuracy", "worst_class_recall", "max_excess_drop", "max_class_excess_drop"]
VERIFY_KEYS = ["verification_accuracy", "verification_std", "worst_group_accuracy", "ser", "ser_change", "size_bytes"]


def test_the_row_keys_are_the_documented_ones():
    assert list(VARIANT_ROW_KEYS) == VARIANT_KEYS
    assert list(VARIANT_ROW_KEYS + MULTICLASS_ROW_KEYS) == MULTICLASS_KEYS
    assert list(VERIFY_ROW_KEYS) == VERIFY_KEYS


def test_rows_hold_the_summarys_own_values():
    """The committed study's summary.json: every slot a row of its values, nothing else (seeds, flags, trends)."""
    summary = json.loads((ROOT / "metrics" / "summary.json").read_text())
    rows = variant_rows(summary)
    assert set(rows) == {k for k, v in summary.items() if isinstance(v, dict) and k != "verify"}
    for slot, row in rows.items():
        assert list(row) == VARIANT_KEYS
        assert row == {key: summary[slot][key] for key in VARIANT_KEYS}
    assert rows["qat"]["latency_ms"] is None  # not timed: the key stays, null (DVC leaves the cell empty)
    verify = verification_rows(summary["verify"])
    assert set(verify) == {k for k in summary["verify"] if not k.startswith("trend ") and k != "synthetic_data"}
    for name, row in verify.items():
        assert list(row) == VERIFY_KEYS
        source = summary["verify"][name]
        assert {k: row[k] for k in VERIFY_KEYS if k != "worst_group_accuracy"} == \
            {k: source.get(k) for k in VERIFY_KEYS if k != "worst_group_accuracy"}
    # the worst race by hand: fp32's four race accuracies, the lowest African's 0.885
    fp32 = summary["verify"]["fp32"]
    assert [fp32[f"acc_{race}"] for race in ("African", "Asian", "Caucasian", "Indian")] == [0.885, 0.9075, 0.921,
                                                                                               0.9184999999999999]
    assert verify["fp32"]["worst_group_accuracy"] == 0.885 and verify["fp32"]["ser_change"] is None


def test_a_multiclass_row_adds_the_class_keys_and_a_race_without_a_number_is_skipped():
    head = {key: 0.5 for key in VARIANT_KEYS} | {"worst_class": "cat", "tpr_diff": -0.1}
    multiclass = head | {"balanced_accuracy": 0.6, "worst_class_recall": 0.2, "max_excess_drop": 0.1,
                         "max_class_excess_drop": 0.3}
    rows = variant_rows({"fp32": head, "ptq": multiclass, "seeds": 2, "synthetic_data": True})
    assert list(rows["fp32"]) == VARIANT_KEYS and list(rows["ptq"]) == MULTICLASS_KEYS
    assert rows["ptq"]["worst_class_recall"] == 0.2
    verify = verification_rows({"fp32": {"ser": "inf", "acc_A": 0.8, "acc_B": None, "acc_C": 0.7},
                                "int8": {"ser": 1.2, "acc_A": None}, "synthetic_data": False})
    assert verify["fp32"]["worst_group_accuracy"] == 0.7 and verify["fp32"]["ser"] == "inf"
    assert verify["int8"]["worst_group_accuracy"] is None


@pytest.mark.parametrize("name", ["../fp32", ".hidden", "a/b"])
def test_a_variant_that_cannot_name_a_file_is_refused(name):
    with pytest.raises(FairquantError, match="cannot name a metrics file"):
        row_files({name: {key: 0.5 for key in VARIANT_KEYS}, "seeds": 1})


def _report_args(tmp, *extra):
    return ["--eval", str(tmp / "eval"), "--verify", str(ROOT / "metrics" / "verify.json"),
            "--summary", str(tmp / "summary.json"), "--plots", str(tmp / "plots"), *extra]


@pytest.mark.slow
def test_the_report_stage_writes_one_file_per_variant_and_replaces_the_folders(tmp_path):
    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    variants, verify = tmp_path / "metrics" / "variants", tmp_path / "metrics" / "verify"
    (variants / "gone.json").parent.mkdir(parents=True)
    (variants / "gone.json").write_text("{}")  # a slot of older params: the folder is replaced whole
    result = run_stage("report", _report_args(tmp_path, "--variant-metrics", str(variants),
                                              "--verify-variant-metrics", str(verify)), tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    slots = {path.stem for path in (ROOT / "metrics" / "eval" / "s0").glob("*.json")}
    assert {path.stem for path in variants.iterdir()} == slots
    for slot in slots:
        assert json.loads((variants / f"{slot}.json").read_text()) == {k: summary[slot][k] for k in VARIANT_KEYS}
    names = {path.stem for path in verify.iterdir()}
    assert names == set(json.loads((ROOT / "metrics" / "verify.json").read_text())["variants"])
    assert json.loads((verify / "fp32.json").read_text())["ser"] == summary["verify"]["fp32"]["ser"]
    assert [p.name for p in (tmp_path / "metrics").iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_report_refuses_a_file_where_the_variant_folder_goes(tmp_path):
    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    (tmp_path / "variants").write_text("mine")
    result = run_stage("report", _report_args(tmp_path, "--variant-metrics", str(tmp_path / "variants")), tmp_path)
    assert_clean_failure(result, "--variant-metrics", tmp_path / "plots")
    assert "is a file; the output is a folder" in result.stderr
    assert (tmp_path / "variants").read_text() == "mine" and not (tmp_path / "summary.json").exists()


def test_report_refuses_verification_rows_without_the_verification_metrics(tmp_path):
    shutil.copytree(ROOT / "metrics" / "eval", tmp_path / "eval")
    args = ["--eval", str(tmp_path / "eval"), "--summary", str(tmp_path / "summary.json"), "--plots",
            str(tmp_path / "plots"), "--verify-variant-metrics", str(tmp_path / "verify")]
    result = run_stage("report", args, tmp_path)
    assert_clean_failure(result, "--verify-variant-metrics needs --verify", tmp_path / "plots")
    assert not (tmp_path / "verify").exists() and not (tmp_path / "summary.json").exists()
