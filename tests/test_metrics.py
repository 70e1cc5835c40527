from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    true_positive_rate,
)

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import (
    GroupCounts,
    _stratified_resamples,
    fairness_metrics,
    group_labels,
    paired_comparison,
)
from fairquant.io import predictions_schema, write_table
from fairquant.params import EvaluateParams

ROOT = Path(__file__).resolve().parents[1]

# Group a: TP 1, FN 1, FP 0, TN 2 -> TPR .5, FPR 0, accuracy .75, selection .25
# Group b: TP 2, FN 0, FP 1, TN 1 -> TPR 1, FPR .5, accuracy .75, selection .75
Y_TRUE = np.array([1, 1, 0, 0, 1, 1, 0, 0])
Y_PRED = np.array([1, 0, 0, 0, 1, 1, 1, 0])
GROUPS = np.array(list("aaaabbbb"))


def test_rates_and_gaps_by_hand():
    m = fairness_metrics(Y_TRUE, Y_PRED, GROUPS, privileged_group="a", n_boot=200)
    bands = m["groups"]["a"].pop("intervals")
    assert m["groups"]["a"] == pytest.approx({"accuracy": 0.75, "tpr": 0.5, "fpr": 0.0, "selection_rate": 0.25,
                                              "n": 4, "positives": 2, "in_gaps": True})
    assert set(bands) == {"accuracy", "tpr", "fpr", "selection_rate"}
    assert bands["fpr"][0] == 0.0 < bands["fpr"][1] < 1  # 0 of 2 negatives: the band starts at the rate
    assert m["groups"]["b"]["tpr"] == 1.0 and m["groups"]["b"]["fpr"] == 0.5
    gaps = {k: v["value"] for k, v in m["gaps"].items()}
    assert gaps["tpr_gap"] == 0.5 and gaps["fpr_gap"] == 0.5 and gaps["eq_odds"] == 0.5
    assert gaps["dp_gap"] == 0.5 and gaps["dp_ratio"] == pytest.approx(1 / 3)
    assert gaps["accuracy_gap"] == 0.0
    assert gaps["disparate_impact"] == pytest.approx(3.0)  # b's selection over the declared privileged group a
    assert m["signed"]["tpr"]["b"]["value"] == 0.5 and m["signed"]["fpr"]["b"]["value"] == 0.5
    assert m["signed"]["accuracy"]["b"]["value"] == 0.0 and m["signed"]["selection_rate"]["b"]["value"] == 0.5
    assert set(m["signed"]["tpr"]) == {"b"}  # the reference group has no difference to itself
    flipped = fairness_metrics(Y_TRUE, Y_PRED, GROUPS, privileged_group="b", n_boot=200)
    assert flipped["gaps"]["disparate_impact"]["value"] == pytest.approx(1 / 3)
    assert flipped["signed"]["tpr"]["a"]["value"] == -0.5
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


def _tpr_difference(cells):
    """b's TPR minus a's from (..., 2, 4) counts."""
    tpr = cells[..., 3] / (cells[..., 2] + cells[..., 3])
    return tpr[..., 1] - tpr[..., 0]


def test_stratified_resample_matches_explicit_stratified_row_resampling():
    """The multinomial shortcut must be resampling rows with replacement within each group x label stratum."""
    rng = np.random.default_rng(7)
    n = 1500
    groups = rng.choice(["a", "b"], n, p=[0.75, 0.25])
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < np.where(groups == "b", 0.7, 0.9), y_true, 1 - y_true)
    cells = GroupCounts.from_predictions(y_true, y_pred, groups).cells
    by_label, by_group = _stratified_resamples(cells, 4000, np.random.default_rng(1))
    explicit = []
    strata = [np.flatnonzero((groups == g) & (y_true == y)) for g in ("a", "b") for y in (0, 1)]
    for _ in range(2000):
        idx = np.concatenate([rng.choice(rows, rows.size) for rows in strata])
        explicit.append(GroupCounts.from_predictions(y_true[idx], y_pred[idx], groups[idx]).cells)
    ours, theirs = _tpr_difference(by_label), _tpr_difference(np.array(explicit))
    assert ours.std() == pytest.approx(theirs.std(), rel=0.06)
    assert np.percentile(ours, [2.5, 97.5]) == pytest.approx(np.percentile(theirs, [2.5, 97.5]), abs=0.012)
    assert (by_group.sum(axis=-1) == cells.sum(axis=-1)).all()  # group sizes fixed
    # the published interval is the point +- c se with c about z for two groups, se as in explicit resampling
    signed = fairness_metrics(y_true, y_pred, groups, privileged_group="a", n_boot=4000, seed=1)["signed"]["tpr"]["b"]
    assert signed["value"] == pytest.approx(_tpr_difference(cells))
    assert (signed["ci_high"] - signed["ci_low"]) / 2 == pytest.approx(1.96 * theirs.std(), rel=0.08)


def test_small_group_keeps_its_positives_in_every_resample():
    """Groups of 1000, 1000 and 30 rows, 3 positives in the small one: its TPR (0) must stay in every gap."""
    # (tn, fp, fn, tp): TPRs 410/450 = 0.911, 400/450 = 0.889 and 0/3
    cells = np.array([[500, 50, 40, 410], [500, 50, 50, 400], [25, 2, 3, 0]])
    names = np.array(["a", "b", "c"])
    flat = np.repeat(np.tile(np.arange(4), 3), cells.ravel())
    groups = np.repeat(np.repeat(names, 4), cells.ravel())
    m = fairness_metrics(flat // 2, flat % 2, groups, privileged_group="a", n_boot=1000)
    gap = m["gaps"]["tpr_gap"]
    assert gap["value"] == pytest.approx(410 / 450)
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert gap["ci_low"] > 0.3  # the row bootstrap reported [0.017, 0.935]: a and b alone in some resamples
    by_label, by_group = _stratified_resamples(cells, 1000, np.random.default_rng(0))
    assert (by_label[..., 2:].sum(axis=-1) == cells[:, 2:].sum(axis=-1)).all()  # positives per group fixed
    assert (by_group.sum(axis=-1) == cells.sum(axis=-1)).all()
    # the unstratified row bootstrap this replaced does drop the small group's positives in some resamples
    rows = np.random.default_rng(0).multinomial(cells.sum(), cells.ravel() / cells.sum(), size=1000).reshape(1000, 3, 4)
    assert (rows[:, 2, 2:].sum(axis=-1) == 0).any()


def test_collapse_is_flagged():
    y_true = np.array([0, 1] * 50)
    m = fairness_metrics(y_true, np.zeros(100, int), np.array(["a"] * 50 + ["b"] * 50), n_boot=200)
    assert m["collapsed"] is True
    assert m["gaps"]["eq_odds"]["value"] == 0.0  # "perfectly fair" — which is why collapse is reported next to it


def test_paired_comparison_counts_flips_and_is_zero_for_identical_models():
    same = paired_comparison(Y_TRUE, Y_PRED, Y_PRED, GROUPS, n_boot=200)
    assert same["flipped"] == 0 and same["gaps"]["eq_odds"]["delta"] == 0.0
    # no flipped row is not "no change, with certainty": 4 rows a group leave a wide interval around 0
    assert same["gaps"]["eq_odds"]["ci_low"] < 0 < same["gaps"]["eq_odds"]["ci_high"]
    assert same["gaps"]["eq_odds"]["p_value"] == 1.0
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
    # one group's own changes: b lost a true positive and fixed a false positive, a fixed a false negative
    assert changed["group_changes"]["tpr"]["b"]["delta"] == -0.5 and changed["group_changes"]["fpr"]["b"]["delta"] == -0.5
    assert changed["group_changes"]["accuracy"]["b"]["delta"] == 0.0
    assert changed["group_changes"]["selection_rate"]["a"]["delta"] == 0.25
    assert changed["group_changes"]["tpr"]["a"]["p_value"] == 1.0  # 1 discordant row: McNemar cannot reject


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


def _evaluate(params, groups, y_true, y_pred):
    from fairquant.fairness.evaluation import evaluate_variant
    from fairquant.results import PredictionsInfo

    table = pd.DataFrame({"sample_id": [str(i) for i in range(len(groups))], "y_true": y_true, "y_pred": y_pred,
                          "Male": groups})
    info = PredictionsInfo(name="fp32", kind="fp32", kernels="fp32", synthetic=True, size_bytes=1)
    return evaluate_variant(table, table, info, ["Male"], params).to_dict()


@pytest.mark.parametrize("privileged, message", [
    (None, "evaluate.privileged_group is null; set it to the reference group, one of ['Female', 'Male']"),
    ("Woman", "evaluate.privileged_group is 'Woman', not one of the groups in gaps ['Female', 'Male'] (groups under "
              "evaluate.min_group_size=1 are left out); set it to one of them"),
])
def test_privileged_group_must_be_declared_and_exist(privileged, message):
    groups = np.array(["Female"] * 6 + ["Male"] * 4)
    with pytest.raises(FairquantError) as info:
        params = EvaluateParams(privileged_group=privileged, bootstrap=100)
        _evaluate(params, groups, np.arange(10) % 2, np.zeros(10, int))
    assert str(info.value) == message


def test_min_group_size_above_every_group_is_one_clear_error():
    groups = np.array(["Female"] * 6 + ["Male"] * 4)
    params = EvaluateParams(privileged_group="Female", min_group_size=50, bootstrap=100)
    with pytest.raises(FairquantError) as info:
        _evaluate(params, groups, np.arange(10) % 2, np.zeros(10, int))
    assert str(info.value) == ("evaluate.min_group_size is 50 but the largest group has 6 test samples, so no group is "
                               "left for gaps; set evaluate.min_group_size to at most 6")


def test_gaps_over_fewer_than_two_usable_groups_stay_null():
    groups = np.array(["Female"] * 60 + ["Male"] * 4)
    y_true = np.arange(64) % 2
    params = EvaluateParams(privileged_group="Female", min_group_size=10, bootstrap=100)
    m = _evaluate(params, groups, y_true, y_true)
    assert m["groups"]["Male"]["in_gaps"] is False
    for gap in m["gaps"].values():
        assert np.isnan(gap["value"]) and np.isnan(gap["ci_low"]) and np.isnan(gap["ci_high"])
    assert m["signed"]["tpr"] == {}


def test_stage_turns_a_missing_privileged_group_into_exit_2(tmp_path):
    import subprocess
    import sys

    from fairquant.io import write_json

    groups = np.array(["Female"] * 6 + ["Male"] * 4)
    table = pd.DataFrame({"sample_id": [str(i) for i in range(10)], "y_true": np.arange(10) % 2,
                          "y_score": np.zeros(10, np.float32), "y_pred": np.zeros(10, int), "Male": groups})
    folder = tmp_path / "fp32"
    write_table(folder / "test.parquet", table, predictions_schema(["Male"]))
    write_json(folder / "info.json", {"name": "fp32", "kind": "fp32", "kernels": "fp32", "synthetic": True,
                                      "size_bytes": 1})
    (tmp_path / "params.yaml").write_text("evaluate:\n  privileged_group: null\n")
    result = subprocess.run([sys.executable, "-m", "stages.evaluate", str(folder), "--out", str(tmp_path / "metrics"),
                             "--params", str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: evaluate.privileged_group is null; set it to the reference group, "
                                     "one of ['Female', 'Male']")
    assert not (tmp_path / "metrics").exists()
