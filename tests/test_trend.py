"""The trend answer of a curve: slope and Spearman from one paired bootstrap shared by every point."""

import json

import numpy as np
import pytest

from fairquant.fairness.trend import curve_trends, slope, spearman, trend_answer


def _study(seed=0, n_major=600, n_minor=200, losses=(0, 4, 10, 25, 45)):
    """fp32 equal across groups; each point flips ``loss`` of the minority's correct positives to wrong."""
    rng = np.random.default_rng(seed)
    groups = np.array(["Female"] * n_major + ["Male"] * n_minor)
    y = rng.integers(0, 2, groups.size)
    reference = np.where(rng.random(groups.size) < 0.9, y, 1 - y)
    minority_hits = np.flatnonzero((groups == "Male") & (y == 1) & (reference == 1))
    points = []
    for loss in losses:
        pred = reference.copy()
        pred[minority_hits[:loss]] = 0
        points.append(pred)
    return y, reference, points, groups


def test_slope_and_spearman_match_numpy_and_scipy():
    from scipy.stats import spearmanr

    depth = np.array([-8.0, -6, -4, -3, -2])
    values = np.array([0.01, 0.02, 0.05, 0.04, 0.2])
    assert slope(depth, values) == pytest.approx(np.polyfit(depth, values, 1)[0])
    assert spearman(depth, values) == pytest.approx(spearmanr(depth, values).statistic)


def test_a_gap_that_grows_as_bits_fall_widens_and_the_minority_rate_falls():
    y, reference, points, groups = _study()
    out = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, axis="bits", left_out=[None] * 5,
                       privileged_group="Female", n_boot=400, confidence=0.95, seed=0)
    tpr = out["gap_changes"]["tpr_gap"]
    assert tpr["verdict"] == "widens" and tpr["ci_low"] > 0 and tpr["slope"] > 0
    assert tpr["spearman"] == pytest.approx(1.0)
    male = out["group_rates"]["tpr"]["Male"]
    assert male["verdict"] == "narrows" and male["slope"] < 0  # a falling rate: negative slope on depth
    assert out["group_rates"]["tpr"]["Female"]["verdict"] == "undefined" or \
        out["group_rates"]["tpr"]["Female"]["slope"] == pytest.approx(0.0)


def test_no_change_along_the_curve_gives_no_clear_trend_or_undefined():
    y, reference, points, groups = _study(losses=(0, 0, 0, 0, 0))
    out = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, axis="bits", left_out=[None] * 5,
                       privileged_group="Female", n_boot=200, confidence=0.95, seed=0)
    assert out["gap_changes"]["tpr_gap"]["verdict"] != "widens"
    assert out["gap_changes"]["tpr_gap"]["slope"] == pytest.approx(0.0)


def test_collapsed_points_are_left_out_and_named_and_two_points_are_undefined():
    y, reference, points, groups = _study()
    out = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, axis="bits",
                       left_out=[None, None, None, "collapsed", "at chance"], privileged_group="Female", n_boot=100,
                       confidence=0.95, seed=0)
    assert out["left_out"] == [{"x": 3.0, "reason": "collapsed"}, {"x": 2.0, "reason": "at chance"}]
    assert out["gap_changes"]["tpr_gap"]["points"] == 3
    short = trend_answer(np.array([-8.0, -4.0]), np.array([0.0, 0.1]), np.zeros((10, 2)), 0.95)
    assert short["verdict"] == "undefined"


def test_the_bootstrap_is_seeded():
    y, reference, points, groups = _study()
    args = dict(axis="bits", left_out=[None] * 5, privileged_group="Female", n_boot=100, confidence=0.95)
    a = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, seed=3, **args)
    b = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, seed=3, **args)
    assert json.dumps(a) == json.dumps(b)  # NaN-safe equality


def test_a_falling_ratio_is_a_widening_disparity():
    """The minority's selection rate falls point by point: every disparity grows. The DP difference rises and the
    DP ratio and disparate impact fall; all three must read 'widens'."""
    rng = np.random.default_rng(1)
    groups, y_true = np.array(["a"] * 600 + ["b"] * 400), rng.integers(0, 2, 1000)
    fp32 = y_true.copy()
    positives = np.flatnonzero((groups == "b") & (fp32 == 1))
    points = []
    for lost in (0, 20, 40, 60, 80):
        variant = fp32.copy()
        variant[positives[:lost]] = 0
        points.append(variant)
    out = curve_trends(y_true, fp32, points, [8, 6, 4, 3, 2], groups, axis="bits", left_out=[None] * 5,
                       privileged_group="a", n_boot=200, confidence=0.95, seed=0)
    assert out["gap_changes"]["dp_gap"]["slope"] > 0 and out["gap_changes"]["dp_ratio"]["slope"] < 0
    for gap in ("dp_gap", "dp_ratio", "disparate_impact"):
        assert out["gap_changes"][gap]["verdict"] == "widens", (gap, out["gap_changes"][gap])


def test_a_verdict_needs_a_point_whose_own_paired_change_excludes_zero():
    from fairquant.fairness.trend import gate_by_points

    widening = {"slope": 0.008, "ci_low": 0.002, "ci_high": 0.017, "verdict": "widens"}
    unsupported = [{"ci_low": -0.01, "ci_high": 0.12}, {"ci_low": -0.02, "ci_high": 0.05}]
    gated = gate_by_points(widening, unsupported)
    assert gated["verdict"] == "no clear trend" and "gated" in gated
    assert gate_by_points(widening, unsupported + [{"ci_low": 0.01, "ci_high": 0.2}])["verdict"] == "widens"
    assert gate_by_points(widening, [{"ci_low": -0.2, "ci_high": -0.01}])["verdict"] == "no clear trend"  # wrong sign
    narrowing_ratio = {"slope": -0.05, "ci_low": -0.08, "ci_high": -0.02, "verdict": "widens"}  # a falling ratio
    assert gate_by_points(narrowing_ratio, [{"ci_low": -0.3, "ci_high": -0.1}])["verdict"] == "widens"
    assert gate_by_points({"verdict": "undefined", "slope": None}, [])["verdict"] == "undefined"


def test_a_gate_over_points_without_intervals_says_so_rather_than_that_they_include_zero():
    """A multi-class accuracy gap over more than 12 groups (CIFAR-100's classes) has point changes only: the gate
    must not claim their intervals include 0."""
    from fairquant.fairness.multiclass_paired import MAX_PROFILED_GROUPS, multiclass_paired
    from fairquant.fairness.trend import gate_by_points

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    groups = np.array([f"g{i:02d}" for i in range(MAX_PROFILED_GROUPS + 2)])[rng.integers(0, MAX_PROFILED_GROUPS + 2, 2000)]
    reference = np.where(rng.random(2000) < 0.8, y, (y + 1) % 3)
    variant = np.where(rng.random(2000) < 0.1, (reference + 1) % 3, reference)
    change = multiclass_paired(y, reference, variant, groups, ["a", "b", "c"], n_boot=50)["gaps"]["accuracy_gap"]
    assert change["ci_low"] is None and change["reason"]
    gated = gate_by_points({"slope": 0.01, "ci_low": 0.004, "ci_high": 0.02, "verdict": "widens"}, [change, change])
    assert gated["verdict"] == "no clear trend"
    assert "has an interval" in gated["gated"] and "excludes 0" not in gated["gated"]


def test_a_curve_whose_every_point_is_left_out_answers_undefined_instead_of_crashing():
    y, reference, points, groups = _study()
    trend = curve_trends(y, reference, points, [8, 6, 4, 3, 2], groups, axis="bits",
                         left_out=["collapsed to one class"] * 5, privileged_group="Female", n_boot=100,
                         confidence=0.95, seed=0)
    answers = [*trend["gap_changes"].values(), *(a for r in trend["group_rates"].values() for a in r.values())]
    assert answers and all(a["verdict"] == "undefined" and a["points"] == 0 for a in answers)
    assert [entry["x"] for entry in trend["left_out"]] == [8, 6, 4, 3, 2]
