"""Across-seed aggregation: spread by hand, and a t-test verdict that needs the change to hold across seeds."""

import math

import pytest
from scipy import stats

from fairquant.fairness.seeds import across_seeds, seed_table, spread


def test_spread_by_hand():
    s = spread([0.1, 0.2, 0.3, None])
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)
    assert (s["min"], s["max"]) == (0.1, 0.3)
    assert spread([0.5])["sd"] is None


def test_t_interval_by_hand_and_verdicts():
    changes = [0.02, 0.04, 0.03]
    result = across_seeds(changes, 0.95)
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert result["ci_low"] == pytest.approx(0.03 - half) and result["ci_high"] == pytest.approx(0.03 + half)
    assert result["verdict"] == "widens" and result["p_value"] < 0.05
    assert across_seeds([-0.02, -0.04, -0.03], 0.95)["verdict"] == "narrows"
    # large in one seed, opposite in another: a single seed's effect is not a finding
    assert across_seeds([0.10, -0.02, 0.01], 0.95)["verdict"] == "no consistent change"
    assert across_seeds([0.10], 0.95)["verdict"] == "one seed"


def test_seed_table_collects_values_and_counts_seeds_whose_ci_excludes_zero():
    def metrics(acc, gap, delta, low, high):
        r = {"variant": "ptq-w8a8", "overall": {"accuracy": acc}, "worst_group_accuracy": acc - 0.1,
             "gaps": {"tpr_gap": {"value": gap}}}
        if delta is not None:
            r["vs_fp32"] = {"gaps": {"tpr_gap": {"delta": delta, "ci_low": low, "ci_high": high}}}
        return r

    per_seed = {0: {"fp32": metrics(0.9, 0.1, None, None, None), "ptq": metrics(0.88, 0.15, 0.05, 0.01, 0.09)},
                1: {"fp32": metrics(0.8, 0.2, None, None, None), "ptq": metrics(0.79, 0.21, 0.01, -0.02, 0.04)}}
    table = seed_table(per_seed, ("tpr_gap",), 0.95)
    assert table["fp32"]["accuracy"]["values"] == [0.9, 0.8] and "changes" not in table["fp32"]
    change = table["ptq"]["changes"]["tpr_gap"]
    assert change["values"] == [0.05, 0.01] and change["seeds_whose_paired_ci_excludes_0"] == 1
    assert change["across_seeds"]["verdict"] == "no consistent change"


def test_summary_over_seeds_follows_one_group_and_keeps_sizes_integer():
    """Found in review: the mean mixed two groups' TPR differences and averaged CI ends."""
    from fairquant.fairness.seeds import summary_over_seeds

    def run(signed: dict, accuracy: float) -> dict:
        slot = {"variant": "fp32", "overall": {"accuracy": accuracy}, "worst_group_accuracy": accuracy - 0.1,
                "gaps": {k: {"value": 0.1} for k in ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap")},
                "size_bytes": 1000, "latency_ms": {}, "synthetic": True, "confidence": 0.95,
                "signed": {"tpr": {g: {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1} for g, v in signed.items()}}}
        return {"fp32": slot}

    per_seed = {0: run({"B": -0.30, "C": 0.20}, 0.9), 1: run({"B": -0.20, "C": 0.25}, 0.8)}
    out = summary_over_seeds(per_seed)["fp32"]
    assert out["tpr_diff_group"] == "B" and out["tpr_diff"] == pytest.approx(-0.25)
    t = across_seeds([-0.30, -0.20], 0.95)
    assert (out["tpr_diff_ci_low"], out["tpr_diff_ci_high"]) == (t["ci_low"], t["ci_high"])
    assert out["size_bytes"] == 1000 and isinstance(out["size_bytes"], int)
    assert out["accuracy"] == pytest.approx(0.85)
    one = summary_over_seeds({0: per_seed[0]})["fp32"]
    assert (one["tpr_diff"], one["tpr_diff_ci_low"], one["tpr_diff_ci_high"]) == pytest.approx((-0.30, -0.40, -0.20))


def test_a_remedys_change_vs_its_baseline_gets_an_across_seed_verdict():
    def remedy(delta):
        return {"variant": "fairalm", "overall": {"accuracy": 0.9}, "worst_group_accuracy": 0.8, "baseline": "control",
                "gaps": {"tpr_gap": {"value": 0.1}},
                "vs_fp32": {"gaps": {"tpr_gap": {"delta": 0.0, "ci_low": -0.1, "ci_high": 0.1}}},
                "vs_baseline": {"gaps": {"tpr_gap": {"delta": delta, "ci_low": delta - 0.05, "ci_high": delta + 0.05}}}}

    per_seed = {s: {"fairalm": remedy(d)} for s, d in enumerate([-0.20, -0.15, -0.25])}
    entry = seed_table(per_seed, ("tpr_gap",), 0.95)["fairalm"]
    change = entry["changes_vs_baseline"]["tpr_gap"]
    assert entry["baseline"] == "control" and change["values"] == [-0.20, -0.15, -0.25]
    assert change["seeds_whose_paired_ci_excludes_0"] == 3 and change["across_seeds"]["verdict"] == "narrows"
    assert entry["changes"]["tpr_gap"]["across_seeds"]["verdict"] == "no consistent change"
