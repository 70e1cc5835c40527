"""Multi-class group fairness metrics, their paired changes vs fp32 and Balancing Act's drops: cross-checked against
fairlearn (and scikit-learn) on the same predictions, against the binary metrics where K = 2, and by simulation."""

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, recall_score

from fairquant.errors import FairquantError
from fairquant.fairness.balancing_act import _excess, balancing_act
from fairquant.fairness.metrics import excess_drops, fairness_metrics, paired_comparison
from fairquant.fairness.multiclass import multiclass_metrics
from fairquant.fairness.multiclass_paired import multiclass_paired

ONE_VS_REST = {"tpr": true_positive_rate, "fpr": false_positive_rate, "selection_rate": selection_rate}
CLASS_GAPS = ("tpr_gap", "fpr_gap", "dp_gap", "eq_odds", "dp_ratio", "disparate_impact")


def _data(seed: int, k: int, groups: int, n: int = 1500):
    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(groups)]
    group = rng.choice(names, n, p=np.arange(1, groups + 1) / np.arange(1, groups + 1).sum())
    y_true = rng.integers(0, k, n)
    skill = np.where(group == names[0], 0.55, 0.8)  # the first group is served worse
    y_pred = np.where(rng.random(n) < skill, y_true, rng.integers(0, k, n))
    return y_true, y_pred, group, [f"class{c}" for c in range(k)]


def _fairlearn_class_gaps(y_true, y_pred, group, k: int, privileged: str, frames: list | None = None):
    """Per class (one-vs-rest labels), fairlearn's gaps; disparate impact from its by-group selection rates. The
    per-class MetricFrames are appended to ``frames`` when given."""
    out = {gap: [] for gap in CLASS_GAPS}
    for c in range(k):
        t, p = (y_true == c).astype(int), (y_pred == c).astype(int)
        frame = MetricFrame(metrics=ONE_VS_REST, y_true=t, y_pred=p, sensitive_features=group)
        if frames is not None:
            frames.append(frame)
        out["tpr_gap"].append(frame.difference()["tpr"])
        out["fpr_gap"].append(frame.difference()["fpr"])
        out["dp_gap"].append(demographic_parity_difference(t, p, sensitive_features=group))
        out["eq_odds"].append(equalized_odds_difference(t, p, sensitive_features=group))
        out["dp_ratio"].append(demographic_parity_ratio(t, p, sensitive_features=group))
        rates = frame.by_group["selection_rate"]
        out["disparate_impact"].append((rates.drop(privileged) / rates[privileged]).min())
    return {gap: np.array(values) for gap, values in out.items()}


@pytest.mark.parametrize("seed,k,groups", [(0, 3, 2), (1, 3, 4), (2, 5, 3)])
def test_every_value_fairlearn_computes_agrees(seed, k, groups):
    y_true, y_pred, group, classes = _data(seed, k, groups)
    m = multiclass_metrics(y_true, y_pred, group, classes, privileged_group="g1", n_boot=200, seed=seed)
    accuracy = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=group)
    for g, value in accuracy.by_group.items():
        assert m["groups"][g]["accuracy"] == pytest.approx(value)
        assert m["signed"].get("accuracy", {}).get(g, {"value": 0.0})["value"] == pytest.approx(
            value - accuracy.by_group["g1"])
    assert m["gaps"]["accuracy_gap"]["value"] == pytest.approx(accuracy.difference())
    assert m["overall"]["accuracy"] == pytest.approx(accuracy.overall)
    frames = []
    expected = _fairlearn_class_gaps(y_true, y_pred, group, k, "g1", frames)
    for name, frame in zip(classes, frames):
        for g, row in frame.by_group.iterrows():
            for rate in ONE_VS_REST:
                assert m["groups"][g]["per_class"][name][rate] == pytest.approx(row[rate]), (g, name, rate)
        assert m["overall"]["per_class"][name]["tpr"] == pytest.approx(frame.overall["tpr"])
    for gap in CLASS_GAPS:
        per_class = np.array([m["gaps"][gap]["per_class"][c]["value"] for c in classes])
        np.testing.assert_allclose(per_class, expected[gap], err_msg=gap)
        worst = np.argmin(expected[gap]) if gap in ("dp_ratio", "disparate_impact") else np.argmax(expected[gap])
        assert m["gaps"][gap]["value"] == pytest.approx(expected[gap][worst])
        assert m["gaps"][gap]["worst_class"] == classes[worst]
    recall = recall_score(y_true, y_pred, average=None)
    for c, name in enumerate(classes):
        assert m["classes"]["per_class"][name]["recall"] == pytest.approx(recall[c])
    assert m["classes"]["worst_class"] == classes[int(np.argmin(recall))]
    assert m["classes"]["balanced_accuracy"] == pytest.approx(recall.mean())
    assert m["worst_group"] == "g0" and m["class_as_group"] is False and m["collapsed"] is False


def test_every_interval_holds_its_estimate_and_the_worst_class_interval_holds_every_class():
    y_true, y_pred, group, classes = _data(4, 5, 3)
    m = multiclass_metrics(y_true, y_pred, group, classes, privileged_group="g1", n_boot=300)
    for gap, entry in m["gaps"].items():
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], gap
        for c, per_class in entry.get("per_class", {}).items():
            assert per_class["ci_low"] <= per_class["value"] <= per_class["ci_high"], (gap, c)
            if gap not in ("dp_ratio", "disparate_impact"):  # a max: its ends are the largest of the classes' ends
                assert per_class["ci_high"] <= entry["ci_high"] + 1e-12
    assert m["gaps"]["accuracy_gap"]["ci_low"] > 0  # g0 is served far worse: the gap is detected
    for block in m["groups"].values():
        low, high = block["intervals"]["accuracy"]
        assert low < block["accuracy"] < high
        for band in block["per_class"].values():
            assert band["intervals"]["tpr"][0] < band["tpr"] < band["intervals"]["tpr"][1]


def test_two_classes_agree_with_the_binary_metrics():
    rng = np.random.default_rng(5)
    group = rng.choice(["a", "b", "c"], 1500)
    y_true = rng.integers(0, 2, 1500)
    y_pred = np.where(rng.random(1500) < np.where(group == "c", 0.6, 0.85), y_true, 1 - y_true)
    binary = fairness_metrics(y_true, y_pred, group, privileged_group="a", n_boot=200)
    m = multiclass_metrics(y_true, y_pred, group, ["no", "yes"], privileged_group="a", n_boot=200)
    for g in "abc":
        for rate in ("tpr", "fpr", "selection_rate"):
            assert m["groups"][g]["per_class"]["yes"][rate] == pytest.approx(binary["groups"][g][rate])
            assert m["groups"][g]["per_class"]["yes"]["intervals"][rate] == pytest.approx(
                binary["groups"][g]["intervals"][rate])
        assert m["groups"][g]["accuracy"] == pytest.approx(binary["groups"][g]["accuracy"])
    assert m["gaps"]["accuracy_gap"]["value"] == pytest.approx(binary["gaps"]["accuracy_gap"]["value"])
    # class "no"'s recall is the TNR: the worst-class TPR gap of two classes is binary's equalized odds
    assert m["gaps"]["tpr_gap"]["value"] == pytest.approx(binary["gaps"]["eq_odds"]["value"])
    assert m["gaps"]["dp_gap"]["value"] == pytest.approx(binary["gaps"]["dp_gap"]["value"])


def _class_as_group(seed: int = 6, k: int = 10, n: int = 2000):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    skill = np.linspace(0.4, 0.95, k)[y_true]
    y_pred = np.where(rng.random(n) < skill, y_true, rng.integers(0, k, n))
    classes = [f"c{c}" for c in range(k)]
    return y_true, y_pred, np.asarray(classes)[y_true], classes


def test_class_as_group_is_detected_and_its_degenerate_gaps_are_null():
    y_true, y_pred, group, classes = _class_as_group()
    m = multiclass_metrics(y_true, y_pred, group, classes, privileged_group="c9", n_boot=200)
    assert m["class_as_group"] is True
    recall = recall_score(y_true, y_pred, average=None)
    for c, name in enumerate(classes):
        assert m["groups"][name]["accuracy"] == pytest.approx(recall[c])  # a group's accuracy is its class recall
    assert m["gaps"]["accuracy_gap"]["value"] == pytest.approx(recall.max() - recall.min())
    assert m["gaps"]["accuracy_gap"]["ci_low"] > 0
    for gap in CLASS_GAPS:
        assert m["gaps"][gap]["value"] is None and m["gaps"][gap]["ci_low"] is None
        assert "class as the group" in m["gaps"][gap]["reason"]
    assert m["classes"]["worst_class"] == "c0" == m["worst_group"]
    # a coarser grouping of the classes (CIFAR-100's superclasses) is still decided by the target: degenerate
    merged = np.where(group == "c1", "c0", group)
    assert multiclass_metrics(y_true, y_pred, merged, classes, n_boot=50)["class_as_group"] is True
    # the class crossed with another attribute is not: a class's recall differs between its groups, gaps reported
    sex = np.where(np.arange(len(y_true)) % 2 == 0, "F", "M")
    crossed = multiclass_metrics(y_true, y_pred, np.char.add(group, sex), classes, n_boot=50)
    assert crossed["class_as_group"] is False and crossed["gaps"]["tpr_gap"]["value"] is not None
    paired = multiclass_paired(y_true, y_pred, np.where(np.arange(len(y_true)) % 7 == 0, 0, y_pred), group, classes,
                               n_boot=200)
    assert paired["class_as_group"] is True and paired["gaps"]["dp_gap"]["delta"] is None
    assert paired["gaps"]["accuracy_gap"]["ci_low"] is not None  # ten groups: still profiled
    # groups named apart from their classes: the per-class block is the per-group block, named by class
    variant = np.where(np.arange(len(y_true)) % 5 == 0, (y_pred + 1) % 10, y_pred)
    renamed = multiclass_paired(y_true, y_pred, variant, np.char.add("group of ", group), classes, n_boot=100)
    direct = balancing_act(y_true, y_pred, variant, group, n_boot=100)
    by_class = renamed["balancing_act_by_class"]
    assert set(by_class["groups"]) == set(classes) and by_class["max_excess_drop"]["group"] in classes
    for name in classes:
        for key in ("drop", "excess_drop"):
            assert by_class["groups"][name][key]["value"] == pytest.approx(direct["groups"][name][key]["value"])
    assert by_class["max_excess_drop"]["group"] == direct["max_excess_drop"]["group"]


@pytest.mark.parametrize("y_pred,match", [(np.array([0, 1, 3]), "y_pred must hold class indices 0..2"),
                                          (np.array([0.0, 1.0, 2.0]), "y_pred must hold class indices")])
def test_labels_outside_the_classes_are_refused(y_pred, match):
    with pytest.raises(FairquantError, match=match):
        multiclass_metrics(np.array([0, 1, 2]), y_pred, np.array(list("aab")), ["x", "y", "z"], n_boot=10)


def test_a_single_class_list_is_refused():
    with pytest.raises(FairquantError, match="at least two distinct classes"):
        multiclass_metrics(np.array([0, 0]), np.array([0, 0]), np.array(list("ab")), ["x"], n_boot=10)


def _compressed(seed: int, k: int, groups: int, lost: dict[str, float]):
    """fp32 predictions and a variant that loses a share of each group's right rows (``lost``)."""
    y_true, ref, group, classes = _data(seed, k, groups)
    rng = np.random.default_rng(seed + 100)
    share = np.array([lost.get(g, 0.0) for g in group])
    var = np.where((ref == y_true) & (rng.random(len(ref)) < share), (y_true + 1) % k, ref)
    return y_true, ref, var, group, classes


def test_paired_changes_agree_with_the_binary_comparison_per_class():
    y_true, ref, var, group, classes = _compressed(7, 3, 3, {"g0": 0.1, "g2": 0.02})
    m = multiclass_paired(y_true, ref, var, group, classes, privileged_group="g1", n_boot=200)
    for c, name in enumerate(classes):
        binary = paired_comparison((y_true == c).astype(int), (ref == c).astype(int), (var == c).astype(int), group,
                                   privileged_group="g1", n_boot=200)
        for gap in CLASS_GAPS:
            assert m["gaps"][gap]["per_class"][name] == binary["gaps"][gap]
    after = _fairlearn_class_gaps(y_true, var, group, 3, "g1")
    assert m["gaps"]["eq_odds"]["class"] == classes[int(np.argmax(after["eq_odds"]))]
    before = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=ref, sensitive_features=group)
    now = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=var, sensitive_features=group)
    assert m["gaps"]["accuracy_gap"]["delta"] == pytest.approx(now.difference() - before.difference())
    assert m["gaps"]["accuracy_gap"]["ci_low"] > 0  # g0 lost a tenth of its right rows: the gap widens
    for g in before.by_group.index:
        assert m["group_changes"]["accuracy"][g]["delta"] == pytest.approx(now.by_group[g] - before.by_group[g])
        assert m["groups"][g]["accuracy_delta"] == pytest.approx(now.by_group[g] - before.by_group[g])
    assert m["signed"]["accuracy"]["g0"]["ci_high"] < 0
    assert "positive_to_negative" not in m["groups"]["g0"]


def test_many_groups_give_points_with_a_reason_where_the_profiled_bounds_cost_too_much():
    y_true, ref, var, group, classes = _compressed(12, 3, 13, {"g12": 0.3})
    m = multiclass_paired(y_true, ref, var, group, classes, n_boot=200)
    before = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=ref, sensitive_features=group)
    now = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=var, sensitive_features=group)
    gap = m["gaps"]["accuracy_gap"]
    assert gap["delta"] == pytest.approx(now.difference() - before.difference())
    assert gap["ci_low"] is None and "more than 12 groups" in gap["reason"]
    t, p_ref, p_var = (y_true == 1).astype(int), (ref == 1).astype(int), (var == 1).astype(int)
    change = (equalized_odds_difference(t, p_var, sensitive_features=group)
              - equalized_odds_difference(t, p_ref, sensitive_features=group))
    assert m["gaps"]["eq_odds"]["per_class"]["class1"]["delta"] == pytest.approx(change)
    assert m["gaps"]["eq_odds"]["per_class"]["class1"]["ci_low"] is None and m["gaps"]["eq_odds"]["reason"]
    assert m["balancing_act"]["max_drop"]["group"] == "g12" and m["balancing_act"]["max_drop"]["ci_low"] > 0


def test_balancing_act_agrees_with_excess_drops_on_binary_targets():
    rng = np.random.default_rng(8)
    group = rng.choice(["a", "b", "c"], 1200)
    y_true = rng.integers(0, 2, 1200)
    ref = np.where(rng.random(1200) < 0.85, y_true, 1 - y_true)
    var = np.where((group == "b") & (rng.random(1200) < 0.08), 1 - ref, ref)
    block = balancing_act(y_true, ref, var, group, n_boot=300)
    expected = excess_drops(y_true, ref, var, group)
    assert block["overall_drop"]["value"] == pytest.approx(expected["overall_drop"])
    for g, entry in expected["groups"].items():
        assert block["groups"][g]["excess_drop"]["value"] == pytest.approx(entry["excess_drop"])
        assert block["groups"][g]["drop"]["value"] == pytest.approx(entry["reference"] - entry["variant"])
    assert block["max_excess_drop"]["value"] == pytest.approx(expected["max_excess_drop"])
    assert block["max_excess_drop"]["group"] == "b"
    assert block["groups"]["b"]["excess_drop"]["ci_low"] > 0 and block["max_excess_drop"]["ci_low"] > 0
    assert block["groups"]["a"]["excess_drop"]["ci_high"] < 0  # untouched while the others lost rows


def test_excess_drop_intervals_never_collapse_at_zero_flips():
    y_true, ref, _, group, _ = _compressed(9, 5, 3, {})
    block = balancing_act(y_true, ref, ref, group, n_boot=300)
    for entry in block["groups"].values():
        for key in ("drop", "excess_drop"):
            change = entry[key]
            assert change["value"] == 0 and change["ci_low"] < 0 < change["ci_high"], key
    for key in ("max_drop", "max_excess_drop"):
        assert block[key]["ci_low"] < 0 < block[key]["ci_high"]
    assert block["drop_spread"]["range"]["ci_low"] == 0 < block["drop_spread"]["range"]["ci_high"]
    assert all(q["ci_low"] < 0 < q["ci_high"] for q in block["drop_quantiles"].values())


def test_a_handful_of_flips_in_a_small_group_is_not_significant_but_many_are():
    # 30 rows, 3 lost: exact McNemar p = 0.25, so no interval may exclude 0
    strata = np.array([[3, 0, 3, 24], [100, 0, 0, 900]])
    few = _excess(strata, n_draws=2000, confidence=0.95, rng=np.random.default_rng(0))
    assert few["ci_low"] < 0 < few["ci_high"]
    many = _excess(np.array([[3, 0, 12, 15], [100, 0, 0, 900]]), n_draws=2000, confidence=0.95,
                   rng=np.random.default_rng(0))
    assert many["ci_low"] > 0
    # 5 lost, none gained, the other rows unchanged: exact McNemar p = 0.0625, so 0 stays inside (a Bayesian
    # interval without the pseudo-row leaning against each end excludes it, p 0.012); 6 lost: p = 0.031, excluded
    five, six = (_excess(np.array([[5, 0, lost, 40 - lost], [100, 0, 0, 900]]), n_draws=4000, confidence=0.95,
                         rng=np.random.default_rng(0)) for lost in (5, 6))
    assert five["ci_low"] < 0 < five["ci_high"] and five["p_value"] > 0.05
    assert six["ci_low"] > 0 and six["p_value"] < 0.05


def _excess_coverage(sizes, lost, gained: float, reps: int, seed: int) -> tuple[float, float]:
    """Coverage of the 90 % excess-drop interval of the first group, and the mean number of flipped rows."""
    rng, right = np.random.default_rng(seed), 0.85
    truth = lost * right - gained * (1 - right)
    true_excess = truth[0] - (sizes * truth).sum() / sizes.sum()
    covered, flips = 0, 0
    for _ in range(reps):
        strata = []
        for size, p_lost in zip(sizes, lost):
            ok = rng.random(size) < right
            var_ok = np.where(rng.random(size) < np.where(ok, p_lost, gained), ~ok, ok)
            strata.append(np.bincount(2 * ok + var_ok, minlength=4))
        change = _excess(np.array(strata), n_draws=400, confidence=0.9, rng=rng)
        covered += change["ci_low"] <= true_excess <= change["ci_high"]
        flips += np.array(strata)[:, 1:3].sum()
    return covered / reps, flips / reps


def test_excess_drop_interval_covers_by_simulation():
    # a handful of flips (about 4 a sample): exact bounds lean conservative, like Clopper-Pearson's
    coverage, flips = _excess_coverage(np.array([60, 400]), np.array([0.03, 0.005]), 0.004, reps=200, seed=10)
    assert flips < 6 and coverage >= 0.88
    # about 40 flips a sample: covers, and not by being uselessly wide (0.955 measured over 1000 samples)
    coverage, flips = _excess_coverage(np.array([200, 800]), np.array([0.1, 0.03]), 0.02, reps=200, seed=11)
    assert flips > 30 and 0.86 <= coverage <= 0.995


def test_the_headline_gap_change_is_the_change_of_the_worst_class_gap_even_when_the_worst_class_moves():
    """fp32's worst TPR gap is class x's (0.30); compression shrinks it and opens a smaller one in class z (0.10):
    the worst-class gap fell, and the headline must say so, naming both classes (it once reported class z's own
    change, +0.10, as a widening)."""
    from fairquant.fairness.multiclass import multiclass_metrics
    from fairquant.fairness.multiclass_paired import multiclass_paired

    rng = np.random.default_rng(5)
    n, classes = 6000, ["x", "y", "z"]
    y, groups = rng.integers(0, 3, n), rng.choice(["a", "b"], n)
    ref, var = y.copy(), y.copy()
    ref[(groups == "a") & (y == 0) & (rng.random(n) < 0.30)] = 1
    var[(groups == "a") & (y == 0) & (rng.random(n) < 0.05)] = 1
    var[(groups == "b") & (y == 2) & (rng.random(n) < 0.10)] = 1
    before = multiclass_metrics(y, ref, groups, classes, n_boot=200)["gaps"]["tpr_gap"]
    after = multiclass_metrics(y, var, groups, classes, n_boot=200)["gaps"]["tpr_gap"]
    change = multiclass_paired(y, ref, var, groups, classes, n_boot=200)["gaps"]["tpr_gap"]
    assert (change["reference_class"], change["class"]) == ("x", "z")
    assert change["delta"] == pytest.approx(after["value"] - before["value"]) and change["delta"] < -0.1
    assert change["ci_low"] <= change["delta"] <= change["ci_high"] < 0  # a detectable narrowing, never "widens"


def test_many_groups_none_large_enough_is_one_clear_error_not_a_numpy_failure():
    from fairquant.errors import FairquantError
    from fairquant.fairness.multiclass_paired import multiclass_paired

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    groups = np.array([f"g{i:02d}" for i in range(20)])[np.arange(40) % 20]  # 20 groups of 2 rows
    with pytest.raises(FairquantError, match="set evaluate.min_group_size to at most 2"):
        multiclass_paired(y, y, (y + 1) % 3, groups, ["a", "b", "c"], n_boot=50, min_group_size=5)


def test_evaluate_variant_takes_the_class_as_the_group_from_prediction_tables(tmp_path):
    """The class as the group end to end through evaluate's library, from prediction tables as predict writes them
    (the shared study no longer runs it as an experiment): the DP gap is null with its reason, and Balancing Act's
    drops are per class, the compressed model's recall falling most on the class it was made noisier on."""
    import pandas as pd

    from fairquant.fairness.evaluation import evaluate_variant
    from fairquant.params import EvaluateParams
    from fairquant.results import EvaluationResult, PredictionsInfo

    classes, n = ["frowning", "neutral", "smiling"], 600
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), n // 3)

    def frame(noise):  # per-class logit margins: lower margin = lower recall
        logits = rng.normal(size=(n, 3))
        logits[np.arange(n), y] += np.asarray(noise)[y]
        prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
        table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "y_true": y.astype("int16"),
                              "y_pred": prob.argmax(1).astype("int16"), "Expression": np.array(classes)[y]})
        table["y_score"], table["y_prob"] = prob[np.arange(n), table["y_pred"]], list(prob)
        return table

    fp32, compressed = frame([4, 4, 4]), frame([4, 0.5, 4])  # compression hurts 'neutral' only
    settings = EvaluateParams(privileged_group="smiling", bootstrap=100)
    results = {}
    for name, table in (("fp32", fp32), ("ptq", compressed)):
        info = PredictionsInfo(name=name, kind=name, kernels="fp32", details={"classes": classes}, size_bytes=1,
                               synthetic=True)
        evaluate_variant(table, fp32, info, ["Expression"], settings).write(tmp_path / f"{name}.json")
        results[name] = EvaluationResult.read(tmp_path / f"{name}.json").to_dict()
    for result in results.values():
        assert result["class_as_group"] is True and sorted(result["groups"]) == sorted(classes)
        assert result["gaps"]["dp_gap"]["value"] is None and "class as the group" in result["gaps"]["dp_gap"]["reason"]
    drops = results["ptq"]["vs_fp32"]["balancing_act"]
    assert set(drops["groups"]) == set(classes) and drops["max_excess_drop"]["group"] == "neutral"
    assert drops["max_excess_drop"]["ci_low"] > 0
