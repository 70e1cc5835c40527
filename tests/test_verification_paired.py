import numpy as np
import pytest

from fairquant.fairness.verification import verification_report
from fairquant.fairness.verification_intervals import percentile_interval, resampled_accuracies
from fairquant.fairness.verification_intervals import stratified_resample_indices
from fairquant.fairness.verification_paired import joint_cells, pair_correct, spread_changes
from fairquant.fairness.verification_protocol import PairBins, batch_statistics, scored_pairs

PER_RACE = 600  # 60 pairs per fold, 30 genuine


def separated_pairs(races=("A", "B")):
    """Genuine pairs at cos 0.9, impostors at 0.1: every threshold in (0.2, 1.8] is perfect, the first is chosen."""
    genuine = np.tile(np.arange(60) < 30, 10 * len(races))
    score = np.where(genuine, 0.9, 0.1)
    fold = np.tile(np.repeat(np.arange(10), 60), len(races))
    return score, genuine, fold, np.repeat(races, PER_RACE)


def lose_genuines(score, genuine, race, name: str, n: int):
    """A variant that rejects ``n`` of race ``name``'s genuine pairs (cos -0.5: no threshold accepts them alone)."""
    variant = score.copy()
    variant[np.flatnonzero(genuine & (race == name))[:n]] = -0.5
    return variant


def change_of(score, genuine, fold, race, variant, bootstrap=200):
    report = verification_report({"fp32": score, "int4": variant}, genuine, fold, race, reference="fp32",
                                 bootstrap=bootstrap)
    return report["variants"]["int4"]["change"]


def test_no_flipped_pair_never_gives_a_zero_width_interval():
    score, genuine, fold, race = separated_pairs()
    entry = change_of(score, genuine, fold, race, lose_genuines(score, genuine, race, "A", 3))["acc_B"]
    assert entry["delta"] == 0.0
    assert entry["ci_low"] < 0 < entry["ci_high"] and entry["ci_high"] - entry["ci_low"] > 1 / PER_RACE
    assert entry["excludes_zero"] is False and entry["p_value"] == 1.0
    assert entry["bound"]["ci_low"] < 0 < entry["bound"]["ci_high"]


@pytest.mark.parametrize("lost, significant", [(4, False), (6, True)])
def test_a_race_change_is_significant_only_where_exact_mcnemar_is(lost, significant):
    score, genuine, fold, race = separated_pairs()
    entry = change_of(score, genuine, fold, race, lose_genuines(score, genuine, race, "A", lost))["acc_A"]
    exact = 2 * 0.5 ** lost  # exact McNemar, all discordant pairs on one side: 4 lost 0.125, 6 lost 0.03125
    assert entry["delta"] == pytest.approx(-lost / PER_RACE)
    assert entry["bound"]["p_value"] == pytest.approx(exact)
    assert entry["p_value"] >= exact
    assert entry["excludes_zero"] is significant and (entry["p_value"] < 0.05) is significant
    assert entry["ci_high"] < 0 if significant else entry["ci_low"] < 0 < entry["ci_high"]


def noisy_variant(rng):
    """RFW-like scores for two races and a variant that perturbs every pair a little."""
    score, genuine, fold, race = separated_pairs()
    score = np.where(genuine, rng.normal(0.4, 0.15, genuine.size), rng.normal(0.05, 0.12, genuine.size)).clip(-1, 1)
    score = np.round(score, 2)
    return score, genuine, fold, race, np.round((score + rng.normal(0, 0.05, score.size)).clip(-1, 1), 2)


def test_the_hull_contains_the_bootstrap_interval_and_the_bound(rng):
    score, genuine, fold, race, variant = noisy_variant(rng)
    change = change_of(score, genuine, fold, race, variant, bootstrap=200)
    rows = stratified_resample_indices(genuine, fold, race, n_boot=200, seed=0)
    old = resampled_accuracies(variant, genuine, fold, race, rows) - resampled_accuracies(score, genuine, fold, race,
                                                                                          rows)
    for r, name in enumerate(("A", "B")):
        entry = change[f"acc_{name}"]
        low, high, _ = percentile_interval(old[:, r], 0.95)
        assert entry["ci_low"] <= low and entry["ci_high"] >= high
        assert entry["ci_low"] <= entry["bound"]["ci_low"] and entry["ci_high"] >= entry["bound"]["ci_high"]
    for key in ("verification_accuracy", "verification_std", "ser"):
        entry = change[key]
        assert entry["ci_low"] <= entry["bound"]["ci_low"] and entry["ci_high"] >= entry["bound"]["ci_high"]
        assert entry["ci_high"] > entry["ci_low"] and "hull" in entry["interval_method"]


def test_joint_cells_reproduce_the_protocol_accuracies_and_changes(rng):
    """pair_correct applies each race and fold's protocol threshold: its cells give the protocol's own numbers."""
    score, genuine, fold, race, variant = noisy_variant(rng)
    layout, distances = scored_pairs({"fp32": score, "int4": variant}, genuine, fold, race)
    everything = np.arange(layout.n_pairs)[None]
    stats = {name: batch_statistics(PairBins.of(d, layout), everything, 2, None, 0.5) for name, d in distances.items()}
    correct = {name: pair_correct(distances[name], layout, stats[name]["best"][0]) for name in distances}
    joint = joint_cells(correct["fp32"], correct["int4"], layout)
    expected = [stats["int4"][k][0] - stats["fp32"][k][0] for k in ("verification_accuracy", "verification_std", "ser")]
    np.testing.assert_allclose(spread_changes(joint), expected, atol=1e-12)
    per_race = joint.sum(axis=(1, 2))
    np.testing.assert_allclose((per_race[:, 1] - per_race[:, 2]) / PER_RACE,
                               stats["int4"]["accuracy"][0] - stats["fp32"]["accuracy"][0], atol=1e-12)
