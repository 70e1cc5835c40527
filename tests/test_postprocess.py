"""Post-processing remedies: AIF360 / fairlearn agreement, the multi-group rule, collapse detection, errors."""

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import equalized_odds_difference

from fairquant.errors import FairquantError
from fairquant.mitigate.postprocess import (
    POSTPROCESSORS,
    apply_caleqodds,
    calibrated_equalized_odds,
    fit_caleqodds,
    postprocess,
    threshold_optimizer,
)
from fairquant.params import CalEqOddsParams, ThresholdParams


def predictions(groups: np.ndarray, y_true: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """A frame in the predictions layout (one protected column, ``Group``)."""
    scores = np.asarray(scores, dtype=np.float32)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(groups))], "y_true": y_true.astype(np.int8),
                         "Group": groups, "y_score": scores, "y_pred": (scores >= 0.5).astype(np.int8)})


def toy(n: int, seed: int, spec: dict[str, tuple[float, float, float, float]]) -> pd.DataFrame:
    """Seeded scores correlated with labels. ``spec``: group -> (share, base rate, score shift, noise)."""
    rng = np.random.default_rng(seed)
    names = list(spec)
    groups = np.array(names)[rng.choice(len(names), n, p=[spec[k][0] for k in names])]
    base, shift, noise = (np.array([spec[g][i] for g in groups]) for i in (1, 2, 3))
    y = (rng.random(n) < base).astype(int)
    logit = np.where(y == 1, 1.5, -1.5) + shift + rng.normal(0, 1, n) * noise
    return predictions(groups, y, 1 / (1 + np.exp(-logit)))


def local_cost(scores: np.ndarray, y: np.ndarray, cost_constraint: str) -> float:
    """Pleiss / AIF360 cost written out again, independently of the module."""
    gfpr, gfnr, b = scores[y == 0].mean(), (1 - scores[y == 1]).mean(), y.mean()
    return {"fpr": gfpr, "fnr": gfnr, "weighted": (gfpr * (1 - b) + gfnr * b) / 2}[cost_constraint]


# ---------------------------------------------------------------------------------------------------------------
# (a) calibrated equalized odds against AIF360 0.6.1, two groups

TWO_GROUPS = {"priv": (0.45, 0.55, 0.5, 1.0), "unpriv": (0.55, 0.35, -0.5, 1.5)}


def aif360_caleqodds(scores: np.ndarray, y: np.ndarray, privileged: np.ndarray, cost_constraint: str,
                     seed: int = 7):
    """AIF360 0.6.1's fit and predict on one score set: (the fitted object, its labels, the uniforms it drew)."""
    from aif360.algorithms.postprocessing.calibrated_eq_odds_postprocessing import CalibratedEqOddsPostprocessing
    from aif360.datasets import BinaryLabelDataset

    truth = BinaryLabelDataset(df=pd.DataFrame({"g": privileged.astype(int), "y": y}), label_names=["y"],
                               protected_attribute_names=["g"])
    scored = truth.copy(deepcopy=True)
    scored.scores = scores.reshape(-1, 1)
    scored.labels = (scores >= 0.5).astype(float).reshape(-1, 1)
    theirs = CalibratedEqOddsPostprocessing(unprivileged_groups=[{"g": 0}], privileged_groups=[{"g": 1}],
                                            cost_constraint=cost_constraint, seed=seed)
    state = np.random.get_state()
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            theirs.fit(truth, scored)
            transformed = theirs.predict(scored)
        # AIF360's predict: np.random.seed(seed), then the unprivileged rows' uniforms, then the privileged rows'
        np.random.seed(seed)
        uniforms = np.empty(len(y))
        uniforms[~privileged] = np.random.random((~privileged).sum())
        uniforms[privileged] = np.random.random(privileged.sum())
    finally:
        np.random.set_state(state)
    return theirs, transformed.labels.ravel().astype(np.int8), transformed.scores.ravel(), uniforms


@pytest.mark.parametrize("cost_constraint, mixed", [("fnr", "priv"), ("fpr", "unpriv"), ("weighted", "priv")])
def test_caleqodds_matches_aif360(cost_constraint, mixed):
    frame = toy(4000, 0, TWO_GROUPS)
    scores, y = frame["y_score"].to_numpy(np.float64), frame["y_true"].to_numpy(int)
    groups = frame["Group"].to_numpy()
    theirs, their_labels, their_scores, uniforms = aif360_caleqodds(scores, y, groups == "priv", cost_constraint)

    fit = fit_caleqodds(scores, y, groups, cost_constraint)
    ours = dict(zip(fit.groups, fit.mix_rates))
    assert ours["priv"] == pytest.approx(theirs.priv_mix_rate, abs=1e-9)
    assert ours["unpriv"] == pytest.approx(theirs.unpriv_mix_rate, abs=1e-9)
    assert 0.02 < ours[mixed] < 0.98 and fit.collapsed == [] == fit.untouched  # a real mix, where AIF360 mixes
    assert dict(zip(fit.groups, fit.base_rates)) == pytest.approx(
        {"priv": theirs.base_rate_priv, "unpriv": theirs.base_rate_unpriv}, abs=1e-12)

    new_scores, labels = apply_caleqodds(fit, scores, groups, uniforms)
    np.testing.assert_array_equal(labels, their_labels)
    np.testing.assert_allclose(new_scores, their_scores, rtol=0, atol=1e-12)
    assert (labels != (scores >= 0.5)).sum() > 20  # the mix changed labels: the comparison is not vacuous


def random_score_set(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two groups of 30-300 rows, base rates 0.15-0.85; each group's scores either track its labels (a logit
    shift and noise of random size) or, one time in three, are miscalibrated: Beta draws unrelated to the label
    and centred away from its base rate, so that the trivial classifier can cost less than the scores."""
    rng = np.random.default_rng(seed)
    scores, labels, privileged = [], [], []
    for is_privileged in (True, False):
        n, base = int(rng.integers(30, 301)), rng.uniform(0.15, 0.85)
        y = (rng.random(n) < base).astype(int)
        y[:2] = [0, 1]  # every cost needs both labels
        if rng.random() < 1 / 3:
            centre = 1 - y.mean() + rng.uniform(-0.15, 0.15)
            s = rng.beta(4 * max(centre, 0.05), 4 * max(1 - centre, 0.05), n)
        else:
            logit = np.where(y == 1, 1.0, -1.0) * rng.uniform(0.3, 2.5) + rng.normal(0, rng.uniform(0.5, 2.0), n)
            s = 1 / (1 + np.exp(-(logit + rng.uniform(-1, 1))))
        scores.append(s), labels.append(y), privileged.append(np.full(n, is_privileged))
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(privileged)


def test_caleqodds_gives_aif360s_labels_on_60_random_score_sets():
    """60 random two-group score sets x 3 cost constraints, fed AIF360's own draws: the same labels in all 180,
    including the groups whose trivial classifier costs less than their scores (AIF360 leaves them untouched)."""
    agree, untouched, collapsed, changed = 0, 0, 0, 0
    for seed in range(60):
        scores, y, privileged = random_score_set(seed)
        groups = np.where(privileged, "priv", "unpriv")
        for cost_constraint in ("fpr", "fnr", "weighted"):
            _, their_labels, _, uniforms = aif360_caleqodds(scores, y, privileged, cost_constraint, seed=seed)
            fit = fit_caleqodds(scores, y, groups, cost_constraint)
            _, labels = apply_caleqodds(fit, scores, groups, uniforms)
            agree += bool(np.array_equal(labels, their_labels))
            untouched += len(fit.untouched)
            collapsed += len(fit.collapsed)
            changed += bool((labels != (scores >= 0.5)).any())
    assert agree == 180
    # the draw holds every case the rule distinguishes, so agreement is not vacuous
    assert untouched >= 3 and collapsed >= 1 and changed >= 100, (untouched, collapsed, changed)


def test_public_caleqodds_uses_the_fit_and_is_seeded():
    val, test = toy(4000, 0, TWO_GROUPS), toy(3000, 1, TWO_GROUPS)
    params = CalEqOddsParams(cost_constraint="fnr", seed=3)
    new_val, new_test, details = calibrated_equalized_odds(val, test, ["Group"], params)
    fit = fit_caleqodds(val["y_score"].to_numpy(np.float64), val["y_true"].to_numpy(int), val["Group"].to_numpy(),
                        "fnr")
    assert details["groups"]["priv"]["mix_rate"] == pytest.approx(fit.mix_rates[0], abs=1e-15)
    assert details["target_cost"] == pytest.approx(fit.costs.max())
    json.dumps(details, allow_nan=False)  # JSON-ready as it stands
    # test uniforms: numpy.random.default_rng(seed), one per row
    expected_scores, expected_labels = apply_caleqodds(fit, test["y_score"].to_numpy(np.float64),
                                                       test["Group"].to_numpy(), np.random.default_rng(3).random(3000))
    np.testing.assert_array_equal(new_test["y_pred"].to_numpy(), expected_labels)
    np.testing.assert_array_equal(new_test["y_score"].to_numpy(), expected_scores.astype(np.float32))
    assert list(new_test.columns) == list(test.columns) and (new_test.dtypes == test.dtypes).all()
    outputs = ["y_score", "y_pred"]
    pd.testing.assert_frame_equal(new_test.drop(columns=outputs), test.drop(columns=outputs))
    again = calibrated_equalized_odds(val, test, ["Group"], params)
    pd.testing.assert_frame_equal(again[1], new_test)
    other_seed = calibrated_equalized_odds(val, test, ["Group"], CalEqOddsParams(cost_constraint="fnr", seed=4))
    assert (other_seed[1]["y_pred"] != new_test["y_pred"]).any()


# ---------------------------------------------------------------------------------------------------------------
# (b) several groups: every group raised to the largest cost

THREE_GROUPS = {"a": (0.4, 0.5, 0.0, 0.8), "b": (0.35, 0.4, 0.3, 1.4), "c": (0.25, 0.3, -0.3, 2.0)}


@pytest.mark.parametrize("cost_constraint", ["fnr", "fpr", "weighted"])
def test_caleqodds_equalises_costs_of_three_groups(cost_constraint):
    val = toy(60000, 5, THREE_GROUPS)
    params = CalEqOddsParams(cost_constraint=cost_constraint)
    new_val, _, details = calibrated_equalized_odds(val, val, ["Group"], params)
    groups = val["Group"].to_numpy()
    y = val["y_true"].to_numpy(int)
    before = {g: local_cost(val["y_score"].to_numpy(np.float64)[groups == g], y[groups == g], cost_constraint)
              for g in THREE_GROUPS}
    after = {g: local_cost(new_val["y_score"].to_numpy(np.float64)[groups == g], y[groups == g], cost_constraint)
             for g in THREE_GROUPS}
    costliest = max(before, key=before.get)
    assert max(before.values()) - min(before.values()) > 0.03  # a real spread to close
    assert details["collapsed"] == []
    assert details["target_cost"] == pytest.approx(before[costliest], abs=1e-6)
    assert details["groups"][costliest]["mix_rate"] == 0.0
    for g in THREE_GROUPS:
        assert details["groups"][g]["cost"] == pytest.approx(before[g], abs=1e-6)
        if g != costliest:
            assert 0 < details["groups"][g]["mix_rate"] < 1
        # in expectation exactly the target; on 60k rows the realised cost is within a few thousandths
        assert details["groups"][g]["expected_cost_after"] == pytest.approx(details["target_cost"], abs=1e-12)
        assert after[g] == pytest.approx(details["target_cost"], abs=0.005)
    assert max(after.values()) - min(after.values()) < 0.01


# ---------------------------------------------------------------------------------------------------------------
# (c) a group that cannot reach the target cost becomes a constant classifier, and is reported


def collapse_case(a_positive_score: float) -> pd.DataFrame:
    """fnr costs: A (base rate .8, trivial .2), B = the costliest (0.5), C mixes normally ((0.5 - 0.2) / 0.4)."""
    rows = ([("A", 1, a_positive_score)] * 8 + [("A", 0, 0.1)] * 2
            + [("B", 1, 0.5)] * 3 + [("B", 0, 0.2)] * 7
            + [("C", 1, 0.8)] * 4 + [("C", 0, 0.3)] * 6)
    groups, y, s = zip(*rows)
    return predictions(np.array(groups), np.array(y), np.array(s))


def test_unreachable_target_collapses_to_a_constant_and_is_reported():
    frame = collapse_case(0.9)  # A's mix (0.5 - 0.1) / (0.2 - 0.1) = 4 >= 1: every row takes the base rate
    _, new_test, details = calibrated_equalized_odds(frame, frame, ["Group"], CalEqOddsParams(cost_constraint="fnr"))
    assert details["collapsed"] == ["A"] and details["untouched"] == []
    assert details["groups"]["A"]["mix_rate"] == 1.0
    assert details["groups"]["B"]["mix_rate"] == 0.0
    assert details["groups"]["C"]["mix_rate"] == pytest.approx(0.75)
    rows_a = new_test["Group"] == "A"
    assert (new_test.loc[rows_a, "y_score"] == np.float32(0.8)).all()
    assert (new_test.loc[rows_a, "y_pred"] == 1).all()


def test_miscalibrated_group_is_left_untouched_as_aif360_does():
    """A's trivial classifier (cost 0.2) costs less than its own scores (0.3): AIF360's mix rate
    (0.5 - 0.3) / (0.2 - 0.3) = -2 draws no row, so A keeps its scores; it is listed, and not as collapsed."""
    frame = collapse_case(0.7)
    _, new_test, details = calibrated_equalized_odds(frame, frame, ["Group"], CalEqOddsParams(cost_constraint="fnr"))
    assert details["untouched"] == ["A"] and details["collapsed"] == []
    assert details["groups"]["A"]["cost"] == pytest.approx(0.3) and details["groups"]["A"]["trivial_cost"] == \
        pytest.approx(0.2)
    assert details["groups"]["A"]["mix_rate"] == 0.0
    assert details["groups"]["A"]["expected_cost_after"] == pytest.approx(0.3)
    assert details["groups"]["C"]["mix_rate"] == pytest.approx(0.75)  # the others are still raised
    rows_a = (new_test["Group"] == "A").to_numpy()
    np.testing.assert_array_equal(new_test["y_score"].to_numpy()[rows_a], frame["y_score"].to_numpy()[rows_a])
    np.testing.assert_array_equal(new_test["y_pred"].to_numpy()[rows_a], frame["y_pred"].to_numpy()[rows_a])
    # even a draw of exactly 0 (AIF360: u <= -2 is false) leaves A's rows alone
    fit = fit_caleqodds(frame["y_score"].to_numpy(np.float64), frame["y_true"].to_numpy(int),
                        frame["Group"].to_numpy(), "fnr")
    new_scores, _ = apply_caleqodds(fit, frame["y_score"].to_numpy(np.float64), frame["Group"].to_numpy(),
                                    np.zeros(len(frame)))
    np.testing.assert_array_equal(new_scores[rows_a], frame["y_score"].to_numpy(np.float64)[rows_a])


def test_mix_rate_of_exactly_one_is_a_collapse():
    # fnr, dyadic values: A costs 1/8, its trivial classifier 1/4 = B's cost, so A's mix rate is exactly 1
    rows = [("A", 1, 0.875)] * 3 + [("A", 0, 0.25)] + [("B", 1, 0.75)] * 2 + [("B", 0, 0.25)] * 2
    groups, y, s = zip(*rows)
    frame = predictions(np.array(groups), np.array(y), np.array(s))
    _, _, details = calibrated_equalized_odds(frame, frame, ["Group"], CalEqOddsParams(cost_constraint="fnr"))
    assert details["groups"]["A"]["mix_rate"] == 1.0 and details["collapsed"] == ["A"]


# ---------------------------------------------------------------------------------------------------------------
# (d) fairlearn ThresholdOptimizer on precomputed scores

GAP_GROUPS = {"A": (0.5, 0.5, 0.0, 1.0), "B": (0.5, 0.3, 1.5, 1.0)}  # B's scores sit higher: a large FPR gap


def expected_rates(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per group: TPR, FPR and selection rate expected from the new scores (P(label 1) per row)."""
    out = {}
    for g, part in frame.groupby("Group"):
        p, y = part["y_score"].to_numpy(np.float64), part["y_true"].to_numpy()
        out[g] = {"tpr": p[y == 1].mean(), "fpr": p[y == 0].mean(), "selection_rate": p.mean()}
    return out


def test_threshold_optimizer_closes_the_equalized_odds_gap_reproducibly():
    val, test = toy(20000, 1, GAP_GROUPS), toy(20000, 2, GAP_GROUPS)
    params = ThresholdParams(seed=11)
    new_val, new_test, details = threshold_optimizer(val, test, ["Group"], params)

    def gap(frame):
        return equalized_odds_difference(frame["y_true"], frame["y_pred"], sensitive_features=frame["Group"])

    assert gap(val) > 0.3
    assert gap(new_val) < 0.03 and gap(new_test) < 0.03
    rates = expected_rates(new_val)
    assert abs(rates["A"]["tpr"] - rates["B"]["tpr"]) < 1e-6 and abs(rates["A"]["fpr"] - rates["B"]["fpr"]) < 1e-6
    assert details["fitted"]["x_best"] == pytest.approx(rates["A"]["fpr"], abs=1e-9)
    assert details["groups"]["B"]["validation_before"]["fpr"] > 0.3
    json.dumps(details, allow_nan=False)
    assert list(new_test.columns) == list(test.columns) and (new_test.dtypes == test.dtypes).all()

    again_val, again_test, _ = threshold_optimizer(val, test, ["Group"], params)
    pd.testing.assert_frame_equal(again_val, new_val)
    pd.testing.assert_frame_equal(again_test, new_test)
    # the labels are drawn with the seed: another seed keeps the probabilities and moves some labels
    _, other_test, _ = threshold_optimizer(val, test, ["Group"], ThresholdParams(seed=12))
    np.testing.assert_array_equal(other_test["y_score"].to_numpy(), new_test["y_score"].to_numpy())
    assert (other_test["y_pred"] != new_test["y_pred"]).any()


@pytest.mark.parametrize("constraint, equal", [("true_positive_rate_parity", ["tpr"]),
                                               ("false_positive_rate_parity", ["fpr"]),
                                               ("demographic_parity", ["selection_rate"])])
def test_threshold_optimizer_simple_constraints(constraint, equal):
    val = toy(6000, 3, GAP_GROUPS)
    before = expected_rates(val.assign(y_score=val["y_pred"].astype(np.float32)))
    new_val, _, details = threshold_optimizer(val, val, ["Group"], ThresholdParams(constraint=constraint,
                                                                                   grid_size=200))
    after = expected_rates(new_val)
    for rate in equal:
        assert abs(before["A"][rate] - before["B"][rate]) > 0.05
        assert abs(after["A"][rate] - after["B"][rate]) < 1e-6
    assert details["params"]["constraint"] == constraint


# ---------------------------------------------------------------------------------------------------------------
# (e) errors a user can meet


@pytest.mark.parametrize("method", sorted(POSTPROCESSORS))
def test_single_group_is_refused(method):
    frame = toy(500, 0, {"only": (1.0, 0.5, 0.0, 1.0)})
    with pytest.raises(FairquantError, match=r"1 group\(s\) \['only'\]; post-processing needs at least two groups"):
        postprocess(method, frame, frame, ["Group"], {})


@pytest.mark.parametrize("method, section, kind", [
    ("caleqodds", {"cost_constraint": "fnr"}, "positive"),
    ("caleqodds", {"cost_constraint": "weighted"}, "positive"),
    ("caleqodds", {"cost_constraint": "fpr"}, "negative"),
    ("threshold", {"constraint": "false_positive_rate_parity"}, "positive"),  # fairlearn needs both labels always
    ("threshold", {"constraint": "equalized_odds"}, "negative"),
])
def test_group_missing_a_label_is_refused(method, section, kind):
    frame = toy(1000, 0, TWO_GROUPS)
    drop = (frame["Group"] == "unpriv") & (frame["y_true"] == (1 if kind == "positive" else 0))
    frame = frame[~drop].reset_index(drop=True)
    with pytest.raises(FairquantError, match=rf"group 'unpriv' has no {kind} examples in the validation split"):
        postprocess(method, frame, frame, ["Group"], section)


def test_fpr_cost_does_not_need_positives():
    frame = toy(1000, 0, TWO_GROUPS)
    frame = frame[~((frame["Group"] == "unpriv") & (frame["y_true"] == 1))].reset_index(drop=True)
    _, _, details = postprocess("caleqodds", frame, frame, ["Group"], {"cost_constraint": "fpr"})
    assert details["groups"]["unpriv"]["base_rate"] == 0.0


@pytest.mark.parametrize("method", sorted(POSTPROCESSORS))
def test_test_group_unseen_in_validation_is_refused(method):
    val = toy(1000, 0, TWO_GROUPS)
    test = toy(1000, 1, TWO_GROUPS)
    test = test.assign(Group=test["Group"].where(test.index % 10 != 0, "new"))
    with pytest.raises(FairquantError, match=r"\['new'\] never occur in the validation split"):
        postprocess(method, val, test, ["Group"], {})


def test_unknown_method_lists_the_known_ones():
    frame = toy(100, 0, TWO_GROUPS)
    with pytest.raises(FairquantError, match=r"unknown post-processing method 'platt'; known methods: caleqodds, "
                                             r"threshold"):
        postprocess("platt", frame, frame, ["Group"], {})


def test_bad_section_names_the_key():
    frame = toy(100, 0, TWO_GROUPS)
    with pytest.raises(FairquantError, match=r"mitigate\.caleqodds\.cost_constraint"):
        postprocess("caleqodds", frame, frame, ["Group"], {"cost_constraint": "tpr"})


def test_intersectional_groups_come_from_group_labels():
    frame = toy(4000, 0, TWO_GROUPS)
    frame["Age"] = np.where(np.arange(len(frame)) % 2 == 0, "young", "old")
    _, _, details = postprocess("caleqodds", frame, frame, ["Group", "Age"], CalEqOddsParams())
    assert sorted(details["groups"]) == ["priv & old", "priv & young", "unpriv & old", "unpriv & young"]


def test_threshold_optimizer_flags_a_group_it_makes_constant():
    """Found in review: with TPR parity fairlearn gave one group P(label 1) = 1 on every row, reported as no collapse."""
    from fairquant.mitigate.postprocess import constant_groups

    probability = np.array([1.0, 1.0, 1.0, 0.2, 0.7, 0.7])
    groups = np.array(["B", "B", "B", "A", "A", "A"])
    assert constant_groups(probability, groups) == ["B"]
    assert constant_groups(np.array([0.1, 0.9]), np.array(["A", "A"])) == []
