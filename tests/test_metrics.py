import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    true_positive_rate,
)

from fairquant.fairness.metrics import GroupCounts, fairness_metrics, group_labels, paired_comparison

# Group a: TP 1, FN 1, FP 0, TN 2 -> TPR .5, FPR 0, accuracy .75, selection .25
# Group b: TP 2, FN 0, FP 1, TN 1 -> TPR 1, FPR .5, accuracy .75, selection .75
Y_TRUE = np.array([1, 1, 0, 0, 1, 1, 0, 0])
Y_PRED = np.array([1, 0, 0, 0, 1, 1, 1, 0])
GROUPS = np.array(list("aaaabbbb"))


def test_rates_and_gaps_by_hand():
    m = fairness_metrics(Y_TRUE, Y_PRED, GROUPS, n_boot=200)
    assert m["groups"]["a"] == pytest.approx({"accuracy": 0.75, "tpr": 0.5, "fpr": 0.0, "selection_rate": 0.25,
                                              "n": 4, "positives": 2, "in_gaps": True})
    assert m["groups"]["b"]["tpr"] == 1.0 and m["groups"]["b"]["fpr"] == 0.5
    gaps = {k: v["value"] for k, v in m["gaps"].items()}
    assert gaps["tpr_gap"] == 0.5 and gaps["fpr_gap"] == 0.5 and gaps["eq_odds"] == 0.5
    assert gaps["dp_gap"] == 0.5 and gaps["dp_ratio"] == pytest.approx(1 / 3)
    assert gaps["accuracy_gap"] == 0.0
    assert gaps["disparate_impact"] == pytest.approx(3.0)  # b's selection over the privileged (first largest) a
    assert m["overall"]["accuracy"] == 0.75 and m["worst_group_accuracy"] == 0.75


def test_counts_cells_order():
    counts = GroupCounts.from_predictions(Y_TRUE, Y_PRED, GROUPS)
    assert counts.names == ["a", "b"]
    assert counts.cells.tolist() == [[2, 0, 1, 1], [1, 1, 0, 2]]  # tn, fp, fn, tp


def test_group_without_positives_is_undefined_not_a_crash():
    y_true = np.array([1, 0, 1, 0, 0, 0])
    y_pred = np.array([1, 0, 0, 0, 1, 0])
    groups = np.array(list("aabbcc"))  # c has no positives
    m = fairness_metrics(y_true, y_pred, groups, n_boot=200)
    assert np.isnan(m["groups"]["c"]["tpr"])
    assert m["gaps"]["tpr_gap"]["value"] == 1.0  # a (TPR 1) vs b (TPR 0); c left out
    single = fairness_metrics(np.array([1, 0]), np.array([1, 0]), np.array(["a", "b"]), n_boot=200)
    assert np.isnan(single["gaps"]["tpr_gap"]["value"])  # one group with positives: undefined


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_estimates_equal_fairlearn(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < np.where(groups == "z", 0.6, 0.85), y_true, 1 - y_true)
    m = fairness_metrics(y_true, y_pred, groups, n_boot=200)
    assert m["gaps"]["eq_odds"]["value"] == pytest.approx(equalized_odds_difference(y_true, y_pred, sensitive_features=groups))
    assert m["gaps"]["dp_gap"]["value"] == pytest.approx(demographic_parity_difference(y_true, y_pred, sensitive_features=groups))
    assert m["gaps"]["dp_ratio"]["value"] == pytest.approx(demographic_parity_ratio(y_true, y_pred, sensitive_features=groups))
    frame = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=y_true, y_pred=y_pred,
                        sensitive_features=groups)
    for g in ["x", "y", "z"]:
        assert m["groups"][g]["tpr"] == pytest.approx(frame.by_group.loc[g, "tpr"])
        assert m["groups"][g]["fpr"] == pytest.approx(frame.by_group.loc[g, "fpr"])
    assert m["gaps"]["tpr_gap"]["value"] == pytest.approx(frame.difference()["tpr"])


def test_intersectional_groups_match_fairlearn_with_two_columns():
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 2000
    frame = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "race": rng.choice(["A", "B", "C"], n)})
    y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
    groups = group_labels(frame, ["sex", "race"])
    assert set(groups) == {f"{s} & {r}" for s in "FM" for r in "ABC"}
    ours = fairness_metrics(y_true, y_pred, groups, n_boot=200)["gaps"]["eq_odds"]["value"]
    assert ours == pytest.approx(equalized_odds_difference(y_true, y_pred, sensitive_features=frame))


def test_bootstrap_interval_matches_row_resampling():
    """The multinomial shortcut must give the same CI as resampling rows explicitly."""
    rng = np.random.default_rng(7)
    n = 1500
    groups = rng.choice(["a", "b"], n, p=[0.75, 0.25])
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < np.where(groups == "b", 0.7, 0.9), y_true, 1 - y_true)
    ours = fairness_metrics(y_true, y_pred, groups, n_boot=4000, seed=1)["gaps"]["tpr_gap"]
    explicit = []
    for _ in range(2000):
        idx = rng.integers(0, n, n)
        g, t, p = groups[idx], y_true[idx], y_pred[idx]
        tpr = [p[(g == k) & (t == 1)].mean() for k in ("a", "b")]
        explicit.append(abs(tpr[0] - tpr[1]))
    low, high = np.percentile(explicit, [2.5, 97.5])
    assert ours["ci_low"] == pytest.approx(low, abs=0.012)
    assert ours["ci_high"] == pytest.approx(high, abs=0.012)
    assert ours["ci_low"] < ours["value"] < ours["ci_high"]


def test_collapse_is_flagged():
    y_true = np.array([0, 1] * 50)
    m = fairness_metrics(y_true, np.zeros(100, int), np.array(["a"] * 50 + ["b"] * 50), n_boot=200)
    assert m["collapsed"] is True
    assert m["gaps"]["eq_odds"]["value"] == 0.0  # "perfectly fair" — which is why collapse is reported next to it


def test_paired_comparison_counts_flips_and_is_zero_for_identical_models():
    same = paired_comparison(Y_TRUE, Y_PRED, Y_PRED, GROUPS, n_boot=200)
    assert same["flipped"] == 0 and same["gaps"]["eq_odds"]["delta"] == 0.0
    assert same["gaps"]["eq_odds"]["ci_low"] == 0.0 == same["gaps"]["eq_odds"]["ci_high"]
    variant = Y_PRED.copy()
    variant[1] = 1  # a: fixes a false negative (wrong -> correct)
    variant[6] = 0  # b: fixes a false positive
    variant[4] = 0  # b: breaks a true positive (correct -> wrong)
    changed = paired_comparison(Y_TRUE, Y_PRED, variant, GROUPS, n_boot=200)
    assert changed["groups"]["a"]["wrong_to_correct"] == 1 and changed["groups"]["a"]["correct_to_wrong"] == 0
    assert changed["groups"]["b"]["flipped"] == 2
    assert changed["groups"]["b"]["positive_to_negative"] == 2
    assert changed["flipped"] == 3
    # a's TPR rises .5 -> 1, b's falls 1 -> .5: the TPR gap goes from .5 to .5 (delta 0), FPR gap .5 -> 0
    assert changed["gaps"]["tpr_gap"]["delta"] == pytest.approx(0.0)
    assert changed["gaps"]["fpr_gap"]["delta"] == pytest.approx(-0.5)


def test_paired_test_detects_a_real_change():
    rng = np.random.default_rng(11)
    n = 4000
    groups = rng.choice(["a", "b"], n, p=[0.8, 0.2])
    y_true = rng.integers(0, 2, n)
    fp32 = np.where(rng.random(n) < 0.9, y_true, 1 - y_true)
    hurt = fp32.copy()
    victims = np.flatnonzero((groups == "b") & (y_true == 1) & (fp32 == 1))[:60]
    hurt[victims] = 0
    result = paired_comparison(y_true, fp32, hurt, groups, n_boot=1000)
    assert result["gaps"]["tpr_gap"]["delta"] > 0
    assert result["gaps"]["tpr_gap"]["ci_low"] > 0 and result["gaps"]["tpr_gap"]["p_value"] < 0.01
    assert result["groups"]["b"]["mcnemar_p"] < 1e-6
