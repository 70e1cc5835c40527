"""Do the intervals do what they claim? Seeded simulations with known true rates, 400 datasets each.

Each dataset has 1000 positives and 1000 negatives per group, drawn with a true TPR per group and a true
FPR of 0.2; the coverage figures are printed (pytest -s) and written into the assertion messages.
"""

from functools import lru_cache

import numpy as np
import pytest

from fairquant.fairness.metrics import GAPS, fairness_metrics, paired_comparison

DATASETS = 400
PER_LABEL = 1000
SCENARIOS = {"equal, 2 groups": (0.8, 0.8), "0.1 apart, 2 groups": (0.8, 0.7), "equal, 4 groups": (0.8, 0.8, 0.8, 0.8)}


def _rows(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true, y_pred, groups ('g0', 'g1', ...) from (G, 4) counts (tn, fp, fn, tp)."""
    cell = np.repeat(np.tile(np.arange(4), len(cells)), cells.ravel())
    groups = np.repeat(np.repeat([f"g{g}" for g in range(len(cells))], 4), cells.ravel())
    return cell // 2, cell % 2, groups


@lru_cache(maxsize=None)
def _simulate(scenario: str) -> list[dict]:
    true_tpr = np.array(SCENARIOS[scenario])
    rng = np.random.default_rng(2024)
    tp = rng.binomial(PER_LABEL, true_tpr, size=(DATASETS, len(true_tpr)))
    fp = rng.binomial(PER_LABEL, 0.2, size=(DATASETS, len(true_tpr)))
    cells = np.stack([PER_LABEL - fp, fp, PER_LABEL - tp, tp], axis=-1)
    return [fairness_metrics(*_rows(c), privileged_group="g0", seed=k) for k, c in enumerate(cells)]


def _covers(interval: dict, value: float) -> bool:
    return interval["ci_low"] <= value <= interval["ci_high"]


def _report(name: str, share: float) -> str:
    line = f"{name}: {share:.1%} of {DATASETS} datasets"
    print(line)
    return line


def test_signed_difference_covers_zero_when_true_rates_are_equal():
    runs = _simulate("equal, 2 groups")
    share = np.mean([_covers(m["signed"]["tpr"]["g1"], 0.0) for m in runs])
    message = _report("signed TPR difference, equal true TPR (2 groups): CI covers 0", share)
    assert 0.90 <= share <= 0.99, message


def test_signed_differences_cover_zero_together_with_four_groups():
    runs = _simulate("equal, 4 groups")
    share = np.mean([all(_covers(d, 0.0) for d in m["signed"]["tpr"].values()) for m in runs])
    message = _report("signed TPR differences, equal true TPR (4 groups): all 3 CIs cover 0", share)
    assert 0.90 <= share <= 0.99, message


def test_signed_difference_excludes_zero_when_true_rates_differ_by_a_tenth():
    runs = _simulate("0.1 apart, 2 groups")
    excluded = np.mean([not _covers(m["signed"]["tpr"]["g1"], 0.0) for m in runs])
    covered = np.mean([_covers(m["signed"]["tpr"]["g1"], -0.1) for m in runs])
    power = _report("signed TPR difference, true TPR 0.8 vs 0.7: CI excludes 0", excluded)
    coverage = _report("signed TPR difference, true TPR 0.8 vs 0.7: CI covers -0.1", covered)
    assert excluded > 0.8, power
    assert 0.90 <= covered <= 0.99, coverage


@pytest.mark.parametrize("scenario, true_gap", [("equal, 2 groups", 0.0), ("0.1 apart, 2 groups", 0.1),
                                                ("equal, 4 groups", 0.0)])
def test_gap_interval_covers_the_true_gap_at_about_the_nominal_rate(scenario, true_gap):
    runs = _simulate(scenario)
    share = np.mean([_covers(m["gaps"]["tpr_gap"], true_gap) for m in runs])
    message = _report(f"TPR gap, {scenario}: CI covers the true gap {true_gap}", share)
    assert 0.90 <= share <= 0.995, message


def test_equal_accuracy_gap_interval_reaches_zero():
    runs = _simulate("equal, 4 groups")
    share = np.mean([m["gaps"]["accuracy_gap"]["ci_low"] == 0.0 for m in runs])
    message = _report("accuracy gap, equal true accuracy (4 groups): CI reaches 0", share)
    assert share >= 0.90, message


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_point_estimate_lies_inside_every_interval(scenario):
    outside = []
    for k, m in enumerate(_simulate(scenario)):
        outside += [f"dataset {k}: {gap}" for gap in GAPS if not _covers(m["gaps"][gap], m["gaps"][gap]["value"])]
        outside += [f"dataset {k}: {rate} {group}" for rate, by_group in m["signed"].items()
                    for group, d in by_group.items() if not _covers(d, d["value"])]
    assert not outside, f"point estimate outside its interval: {outside[:5]} ({len(outside)} in all)"


def test_paired_interval_excludes_zero_exactly_when_p_is_below_one_minus_confidence():
    rng = np.random.default_rng(5)
    confidence, seen = 0.9, []
    for k in range(60):
        n = 600
        groups = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
        y_true = rng.integers(0, 2, n)
        fp32 = np.where(rng.random(n) < 0.85, y_true, 1 - y_true)
        hurt = (groups == "c") & (fp32 == 1) & (rng.random(n) < 0.05 * (k % 8))  # from no change to a large one
        variant = np.where(hurt, 0, fp32)
        result = paired_comparison(y_true, fp32, variant, groups, privileged_group="a", n_boot=200,
                                   confidence=confidence, seed=k)
        changes = [*result["gaps"].values(), *(c for by_group in result["signed"].values() for c in by_group.values()),
                   *(c for by_group in result["group_changes"].values() for c in by_group.values())]
        seen += [(c["ci_low"] > 0 or c["ci_high"] < 0, c["p_value"] < 1 - confidence) for c in changes
                 if np.isfinite(c["delta"])]
    excludes, significant = np.array(seen).T
    assert (excludes == significant).all()
    assert excludes.any() and not excludes.all()  # both outcomes occur: the equivalence is not vacuous


def test_small_group_keeps_its_uncertainty():
    """10 positives at a true TPR of 0.95: unsmoothed, the bootstrap often sees a TPR of exactly 1 with no spread."""
    rng = np.random.default_rng(8)
    positives = np.array([500, 10])
    tp = rng.binomial(positives, 0.95, size=(DATASETS, 2))
    fp = rng.binomial(positives, 0.2, size=(DATASETS, 2))
    cells = np.stack([positives - fp, fp, positives - tp, tp], axis=-1)
    runs = [fairness_metrics(*_rows(c), privileged_group="g0", seed=k, n_boot=500) for k, c in enumerate(cells)]
    share = np.mean([_covers(m["signed"]["tpr"]["g1"], 0.0) for m in runs])
    message = _report("signed TPR difference, 500 vs 10 positives, equal true TPR 0.95: CI covers 0", share)
    assert share >= 0.90, message  # an unsmoothed bootstrap covered 0 in about 40% of such datasets


def test_ratio_intervals_stay_defined_when_a_resample_draws_a_zero_selection_rate():
    """Group B selects 3 of 30: some resamples select none, whose log ratio is -inf; the interval must still exist
    and contain the point (found in review: it was null)."""
    from fairquant.fairness.metrics import fairness_metrics

    groups = np.array(["A"] * 1000 + ["B"] * 30)
    y_true = np.r_[np.random.default_rng(0).integers(0, 2, 1000), np.ones(30, int)]
    y_pred = np.r_[np.ones(500, int), np.zeros(500, int), np.ones(3, int), np.zeros(27, int)]
    m = fairness_metrics(y_true, y_pred, groups, privileged_group="A")
    for key in ("dp_ratio", "disparate_impact"):
        gap = m["gaps"][key]
        assert gap["value"] == pytest.approx(0.2)
        assert gap["ci_low"] is not None and gap["ci_low"] <= gap["value"] <= gap["ci_high"], gap


# --- Paired changes at a handful of flips: exact-beta Dirichlet bounds (fairquant/fairness/paired_bounds.py) ---

ISSUE_GROUPS = np.array(["Female"] * 660 + ["Male"] * 140)
ISSUE_LABELS = np.tile([0, 1], 400)  # 330 Female and 70 Male positives


def _issue_example(lost: int) -> dict:
    """The issue's case: fp32 gets every row right; the variant loses ``lost`` of Male's 70 true positives."""
    variant = ISSUE_LABELS.copy()
    variant[np.flatnonzero((ISSUE_GROUPS == "Male") & (ISSUE_LABELS == 1))[:lost]] = 0
    return paired_comparison(ISSUE_LABELS, ISSUE_LABELS, variant, ISSUE_GROUPS, privileged_group="Female")


def _significant(change: dict) -> bool:
    return change["ci_low"] > 0 or change["ci_high"] < 0


def test_four_lost_true_positives_are_not_significant_as_exact_mcnemar_says():
    result = _issue_example(4)
    male = result["group_changes"]["tpr"]["Male"]
    assert male["delta"] == pytest.approx(-4 / 70) and male["p_value"] == pytest.approx(0.125)  # exact McNemar
    for change in (result["gaps"]["tpr_gap"], result["signed"]["tpr"]["Male"], male):
        assert not _significant(change) and change["p_value"] >= 0.05, change  # the Wald bootstrap said p = 0.041


def test_six_lost_true_positives_are_significant():
    result = _issue_example(6)
    male = result["group_changes"]["tpr"]["Male"]
    assert male["p_value"] == pytest.approx(2 / 64)
    for change in (result["gaps"]["tpr_gap"], result["signed"]["tpr"]["Male"], male):
        assert _significant(change) and change["p_value"] < 0.05, change


def test_no_flipped_row_leaves_a_real_interval_around_zero():
    rng = np.random.default_rng(6)
    groups, y_true = rng.choice(["a", "b"], 300), rng.integers(0, 2, 300)
    y_pred = np.where(rng.random(300) < 0.8, y_true, 1 - y_true)
    result = paired_comparison(y_true, y_pred, y_pred, groups, privileged_group="a", n_boot=400)
    changes = [*result["gaps"].values(), *(c for block in ("signed", "group_changes")
                                           for by_group in result[block].values() for c in by_group.values())]
    for change in changes:
        assert change["delta"] == 0.0 and change["p_value"] == 1.0
        assert change["ci_low"] < 0 < change["ci_high"], change
    # one pseudo-row's worth: about 3.7 / n either side for a group's own rate change
    accuracy = result["group_changes"]["accuracy"]["a"]
    n = int((groups == "a").sum())
    assert 2 / n < accuracy["ci_high"] < 6 / n and 2 / n < -accuracy["ci_low"] < 6 / n


@pytest.mark.parametrize("n", [30, 200])
def test_group_change_is_significant_exactly_when_exact_mcnemar_rejects(n):
    from scipy.stats import binomtest

    from fairquant.fairness.paired_bounds import rate_change

    rng = np.random.default_rng(1)
    disagreements = []
    for down in range(11):
        for up in range(11):
            change = rate_change(down, up, n, n_draws=400, confidence=0.95, rng=rng)
            exact = binomtest(down, down + up, 0.5).pvalue < 0.05 if down + up else False
            if _significant(change) != exact or not change["ci_low"] <= change["delta"] <= change["ci_high"]:
                disagreements.append((down, up, change))
    assert not disagreements, disagreements[:3]


# Coverage in the few-flip regime. Two groups, 'maj' (privileged) and 'min'; per group and label the joint
# (fp32, variant) cells are multinomial with known probabilities, so the true changes are known. Negatives:
# FPR 0.1, no flips. Positives: fp32 TPR t; the variant loses a share `lost` of fp32's true positives and
# finds a share `found` of its false negatives. Majority: 330 positives, about one flip each way. Coverage of
# the true change at 95%, 400 datasets x 400 draws each (seeded; pytest -s prints them):
#   setting                                        per-group  signed   gap
#   no change, 30 / 300 / 1000 min positives        1.000/0.995/0.960  1.000/0.998/0.998  1.000/1.000/0.998
#   5-point loss, 30 / 60 / 150 min positives       1.000/1.000/0.998  1.000/1.000/0.995  1.000/1.000/0.995
#   fp32 gap 0: no change 100; loss 100; loss 30    0.998/0.998/1.000  0.998/0.995/1.000  1.000/0.955/1.000
# (the Wald paired bootstrap: 64-67% for the signed change at 100/30 rows, 80% for the gap near a zero gap;
# the gap's 0.955 at fp32 gap 0 needs the kink profile of paired._profile: without it, 0.86).
DATASETS_PAIRED = 400


def _positives(t: float, lost: float, found: float) -> list[float]:
    """Cell probabilities (fp32 pred, variant pred) = (0,0), (0,1), (1,0), (1,1) among positives."""
    return [(1 - t) * (1 - found), (1 - t) * found, t * lost, t * (1 - lost)]


NEGATIVES = [0.9, 0.0, 0.0, 0.1]
PAIRED_SETTINGS = {  # name: (minority positives, minority (t, lost, found), majority t); majority: 330 positives
    "no change, 30 min positives, ~1 flip": (30, (0.8, 1 / 48, 1 / 12), 0.9),
    "no change, 300 min positives, ~4 flips": (300, (0.8, 1 / 120, 1 / 30), 0.9),
    "no change, 1000 min positives, ~8 flips": (1000, (0.8, 1 / 200, 1 / 50), 0.9),
    "5-point loss, 30 min positives, ~1.5 flips": (30, (0.8, 1 / 16, 0.0), 0.9),
    "5-point loss, 60 min positives, ~3 flips": (60, (0.8, 1 / 16, 0.0), 0.9),
    "5-point loss, 150 min positives, ~7.5 flips": (150, (0.8, 1 / 16, 0.0), 0.9),
    "fp32 gap 0, no change, 100 min positives, ~4 flips": (100, (0.8, 1 / 40, 1 / 10), 0.8),
    "fp32 gap 0, 5-point loss, 100 min positives, ~5 flips": (100, (0.8, 1 / 16, 0.0), 0.8),
    "fp32 gap 0, 5-point loss, 30 min positives, ~1.5 flips": (30, (0.8, 1 / 16, 0.0), 0.8),
}
MAJORITY_POSITIVES = 330


@lru_cache(maxsize=None)
def _paired_coverage(setting: str) -> dict[str, float]:
    from fairquant.fairness.counts import GAPS as GAP_NAMES, RATES as RATE_NAMES
    from fairquant.fairness.paired import _change_statistic, _discordant, _profile
    from fairquant.fairness.paired_bounds import change_bounds, rate_change

    n_min, (t, lost, found), t_maj = PAIRED_SETTINGS[setting]
    maj_flip = 1 / MAJORITY_POSITIVES  # about 1 flip each way among the majority's positives
    probs = np.array([[NEGATIVES, _positives(t_maj, maj_flip / t_maj, maj_flip / (1 - t_maj))],
                      [NEGATIVES, _positives(t, lost, found)]])
    sizes = np.array([[MAJORITY_POSITIVES, MAJORITY_POSITIVES], [n_min, n_min]])
    statistic = _change_statistic(0)
    columns = {"signed": len(GAP_NAMES) + RATE_NAMES.index("tpr"), "gap": GAP_NAMES.index("tpr_gap")}
    truth = statistic(sizes[..., None] * probs)
    true_group = probs[1, 1, 1] - probs[1, 1, 2]
    rng = np.random.default_rng(18)
    joints = rng.multinomial(sizes, probs, size=(DATASETS_PAIRED,) + sizes.shape)
    covered = {"per-group": [], "signed": [], "gap": []}
    for joint in joints:
        c = rate_change(int(joint[1, 1, 2]), int(joint[1, 1, 1]), n_min, n_draws=400, confidence=0.95, rng=rng)
        covered["per-group"].append(c["ci_low"] <= true_group <= c["ci_high"])
        for name, q in columns.items():
            one = lambda s, q=q: statistic(s)[..., [q]]  # noqa: E731
            profile = lambda s, _, side, q=q: _profile(0, 0.95)(s, q, side)  # noqa: E731
            c = change_bounds(joint, one, _discordant(2), n_draws=400, confidence=0.95, rng=rng, profile=profile)[0]
            covered[name].append(c["ci_low"] <= truth[q] <= c["ci_high"])
    shares = {name: float(np.mean(v)) for name, v in covered.items()}
    print(f"{setting}: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    return shares


@pytest.mark.parametrize("setting", list(PAIRED_SETTINGS))
def test_paired_changes_cover_the_true_change_at_a_handful_of_flips(setting):
    shares = _paired_coverage(setting)
    assert min(shares.values()) >= 0.93, f"{setting}: coverage {shares} (target >= 0.93 at 95%)"


def test_with_many_flips_the_bounds_agree_with_the_paired_bootstrap_wald_interval():
    """Large groups and hundreds of flips: the old Wald interval (delta +- z SD of an unsmoothed paired bootstrap
    of the joint cells, group x label strata) is right there, and the new bounds must land on it. The fp32 gaps
    are far from 0 here (b is right on 75% of rows, a on 92%): near a zero fp32 gap the two differ on purpose
    (the Wald interval covered 80% there)."""
    from scipy.stats import norm

    from fairquant.fairness.counts import GAPS as GAP_NAMES, RATES as RATE_NAMES
    from fairquant.fairness.paired import _change_statistic

    rng = np.random.default_rng(3)
    n = 12000
    groups = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    y_true = rng.integers(0, 2, n)
    fp32 = np.where(rng.random(n) < np.where(groups == "b", 0.75, 0.92), y_true, 1 - y_true)
    flip = rng.random(n) < np.where(groups == "b", 0.06, 0.03)
    variant = np.where(flip & (rng.random(n) < 0.7), 0, np.where(flip, 1, fp32))  # more lost positives than gained
    result = paired_comparison(y_true, fp32, variant, groups, privileged_group="a", n_boot=2000, seed=1)
    index = (groups == "b").astype(int)
    joint = np.bincount(index * 8 + 4 * y_true + 2 * fp32 + variant, minlength=16).reshape(2, 2, 4)
    boot = rng.multinomial(joint.sum(-1), joint / joint.sum(-1, keepdims=True), size=(4000, 2, 2))
    statistic = _change_statistic(0)
    delta, sd = statistic(joint.astype(float)), statistic(boot.astype(float)).std(axis=0)
    z = norm.ppf(0.975)
    checked = {"tpr_gap": result["gaps"]["tpr_gap"], "accuracy_gap": result["gaps"]["accuracy_gap"],
               "signed tpr": result["signed"]["tpr"]["b"], "signed fpr": result["signed"]["fpr"]["b"]}
    columns = {"tpr_gap": GAP_NAMES.index("tpr_gap"), "accuracy_gap": GAP_NAMES.index("accuracy_gap"),
               "signed tpr": len(GAP_NAMES) + RATE_NAMES.index("tpr"), "signed fpr": len(GAP_NAMES) + RATE_NAMES.index("fpr")}
    for name, change in checked.items():
        q = columns[name]
        wald = (delta[q] - z * sd[q], delta[q] + z * sd[q])
        assert change["delta"] == pytest.approx(delta[q])
        tolerance = 0.15 * (wald[1] - wald[0])  # measured: ends within 0.10 of a width (pseudo-rows, Monte Carlo)
        assert abs(change["ci_low"] - wald[0]) < tolerance and abs(change["ci_high"] - wald[1]) < tolerance, \
            (name, change, wald)


def test_jeffreys_bands_hold_the_rate_and_sit_inside_clopper_pearson():
    from scipy.stats import beta, binomtest

    from fairquant.fairness.metrics import jeffreys_bands

    cells = np.array([[50, 0, 0, 3], [10, 5, 7, 8], [0, 0, 0, 0], [0, 0, 2, 1]])  # tn, fp, fn, tp
    bands = jeffreys_bands(cells, 0.95)
    assert bands[1]["tpr"] == pytest.approx([beta.ppf(0.025, 8.5, 7.5), beta.ppf(0.975, 8.5, 7.5)])
    assert bands[0]["fpr"][0] == 0.0 and bands[0]["tpr"][1] == 1.0  # 0 of 50 and 3 of 3: the band reaches the rate
    assert bands[2]["accuracy"] == [None, None] and bands[3]["fpr"] == [None, None]  # no rows, no negatives
    for band, (tn, fp, fn, tp) in zip(bands, cells):
        for rate, (x, n) in {"accuracy": (tn + tp, tn + fp + fn + tp), "tpr": (tp, tp + fn)}.items():
            if n:
                exact = binomtest(int(x), int(n)).proportion_ci(0.95, method="exact")
                low, high = band[rate]
                assert exact.low - 1e-12 <= low <= x / n <= high <= exact.high + 1e-12, (rate, band[rate], exact)


def test_signed_and_two_group_gap_changes_never_beat_the_exact_sign_test():
    """The reviewer's case: the minority gains 5 true positives, loses none, the privileged group has no flips:
    exact p = 0.0625. The Monte Carlo p fell under 0.05 on some seeds (1 in 40); the exact test is now its floor."""
    from fairquant.fairness.paired import paired_comparison

    g = np.array(["maj"] * 660 + ["min"] * 140)
    y = np.tile([0, 1], 400)
    fp32 = y.copy()
    positives = np.flatnonzero((g == "min") & (y == 1))
    fp32[positives[:20]] = 0
    variant = fp32.copy()
    variant[positives[:5]] = 1
    for seed in range(40):
        result = paired_comparison(y, fp32, variant, g, privileged_group="maj", seed=seed)
        for change in (result["signed"]["tpr"]["min"], result["gaps"]["tpr_gap"]):
            assert change["p_value"] >= 0.0625 - 1e-12
            assert change["ci_low"] <= 0 <= change["ci_high"]


# Three groups (330 / 100 / 60 positives and as many negatives), all at TPR 0.8 and FPR 0.1 in fp32; the third
# loses 5 points of TPR, the second about 2.5 flips each way, the first about one. 250 datasets x 300 draws
# (seeded): with the raw draws for 3+ groups eq_odds covered 0.900 here (0.90-0.94 over seeds 1, 2, 3, 5, 7;
# the reviewer's 600 datasets: 0.902, tpr_gap 0.937); with every pair's kinks in paired._profile 0.996-1.000.
THREE_GROUP_SEED = 2
THREE_GROUPS = [(330, _positives(0.8, 1 / 330, 1 / 66)), (100, _positives(0.8, 1 / 40, 1 / 10)),
                (60, _positives(0.8, 1 / 16, 0.0))]


def _three_group_coverage() -> dict[str, float]:
    from fairquant.fairness.counts import GAPS as GAP_NAMES, RATES as RATE_NAMES
    from fairquant.fairness.paired import _change_statistic, _discordant, _profile
    from fairquant.fairness.paired_bounds import change_bounds

    probs = np.array([[NEGATIVES, positives] for _, positives in THREE_GROUPS])
    sizes = np.array([[n, n] for n, _ in THREE_GROUPS])
    statistic, full_profile = _change_statistic(0), _profile(0, 0.95)
    columns = {gap: GAP_NAMES.index(gap) for gap in ("tpr_gap", "fpr_gap", "eq_odds")}
    for k, rate in enumerate(RATE_NAMES):
        if rate in ("tpr", "fpr"):
            columns |= {f"signed {rate} g{g}": len(GAP_NAMES) + 2 * k + g - 1 for g in (1, 2)}
    picked = list(columns.values())
    subset = lambda s: statistic(s)[..., picked]  # noqa: E731
    profile = lambda s, q, side: full_profile(s, picked[q], side)  # noqa: E731
    truth = subset(sizes[..., None] * probs)
    rng = np.random.default_rng(THREE_GROUP_SEED)
    joints = rng.multinomial(sizes, probs, size=(250,) + sizes.shape)
    covered = np.zeros(len(picked))
    for joint in joints:
        out = change_bounds(joint, subset, _discordant(3), n_draws=300, confidence=0.95, rng=rng, profile=profile)
        covered += [c["ci_low"] - 1e-12 <= t <= c["ci_high"] + 1e-12 for c, t in zip(out, truth)]
    shares = dict(zip(columns, covered / len(joints)))
    print("three groups, 5-point loss in the third: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    return shares


@pytest.mark.slow
def test_paired_gap_changes_cover_with_three_groups_when_a_non_extreme_group_moves():
    shares = _three_group_coverage()
    assert min(shares.values()) >= 0.93, f"coverage {shares} (target >= 0.93 at 95%)"
