"""The report reads its confidence level and reference group from the metrics, and says what the CIs say."""

import numpy as np

from fairquant.fairness.metrics import fairness_metrics, paired_comparison
from fairquant.report import markdown_report, signed_sentence, summary


def _result(name, y_true, y_pred, groups, confidence, reference=None):
    options = {"privileged_group": "Female", "confidence": confidence, "n_boot": 500}
    result = {"variant": name, "kind": name, "kernels": "simulated", "details": {}, "synthetic": True,
              "protected": ["Male"], "size_bytes": 1000, "latency_ms": {},
              **fairness_metrics(y_true, y_pred, groups, **options)}
    if reference is not None:
        result["vs_fp32"] = paired_comparison(y_true, reference, y_pred, groups, **options)
    return result


def _results(confidence):
    rng = np.random.default_rng(0)
    groups = np.where(np.arange(2000) < 1600, "Female", "Male")
    y_true = rng.integers(0, 2, 2000)
    fp32 = np.where(rng.random(2000) < np.where(groups == "Male", 0.7, 0.9), y_true, 1 - y_true)
    variant = np.where((groups == "Male") & (y_true == 1) & (rng.random(2000) < 0.1), 0, fp32)
    return {"fp32": _result("fp32", y_true, fp32, groups, confidence),
            "ptq": _result("ptq-w4a4", y_true, variant, groups, confidence, reference=fp32)}


def test_summary_adds_the_worst_groups_signed_tpr_difference():
    results = _results(0.95)
    out = summary(results)
    signed = results["fp32"]["signed"]["tpr"]["Male"]
    assert out["fp32"]["tpr_diff_group"] == "Male"
    assert (out["fp32"]["tpr_diff"], out["fp32"]["tpr_diff_ci_low"], out["fp32"]["tpr_diff_ci_high"]) == (
        signed["value"], signed["ci_low"], signed["ci_high"])
    assert {"accuracy", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "worst_group_accuracy", "flip_rate"} <= set(out["ptq"])


def test_headline_names_the_disadvantaged_group_and_whether_the_ci_excludes_zero():
    r = _results(0.95)["fp32"]
    d = r["signed"]["tpr"]["Male"]
    assert d["ci_high"] < 0
    assert signed_sentence(r, "tpr") == (f"Male's TPR is {-d['value']:.3f} lower than Female's [{-d['ci_high']:.3f}, "
                                         f"{-d['ci_low']:.3f}]: the CI excludes 0, so Male is disadvantaged on TPR.")


def test_report_uses_the_configured_confidence():
    report = markdown_report(_results(0.9), [])
    assert "95%" not in report and "90% simultaneous CIs" in report and "p < 0.1" in report
    assert "## Signed differences vs Female" in report and "| ptq-w4a4 | Male |" in report


def test_int8_section_shows_the_cpu_and_the_kernel_check():
    from fairquant.report import int8_section

    check = {"cpu_capability": "AVX2", "reduce_range": True, "images": 256, "image_set": "held-out validation",
             "sqnr_db": 31.4, "correlation": 0.9996, "quant_sqnr_db": 30.6, "tolerance_db": 5.0,
             "mean_abs_diff": 0.0364, "quant_noise": 0.0657}
    lines = int8_section({"ptq": {"variant": "ptq-w8a8-train", "details": {"int8_check": check}},
                          "qat": {"variant": "qat-w4a4", "details": {}}})
    rows = [line for line in lines if line.startswith("| ptq")]
    assert rows == ["| ptq-w8a8-train | AVX2 | yes | 256 held-out validation | 31.4 | 0.9996 | 30.6 | 5 | "
                    "0.0364 (0.0657) |"]
    assert int8_section({"qat": {"variant": "qat-w4a4", "details": {}}}) == []
