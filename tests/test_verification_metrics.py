import json

import numpy as np
import pytest
from sklearn.model_selection import KFold

from fairquant.errors import FairquantError
from fairquant.fairness.verification import (
    GLOBAL_THRESHOLDS,
    SELECTION_FOLDS,
    error_rates_at_threshold,
    fairness_discrepancy_rate,
    garbe,
    gini,
    global_threshold,
    inequity_rate,
    max_over_min,
    protocol_accuracy,
    race_summary,
    resampled_accuracies,
    skewed_error_ratio,
    stratified_resample_indices,
    verification_report,
)


def hand_pairs(race: str, genuine_distance: list[float], impostor_distance: list[float]):
    """One genuine and one impostor pair per fold with the given distances (2 - 2 cos; all exact in binary)."""
    distance = np.ravel(np.column_stack([genuine_distance, impostor_distance]))
    return (1 - distance / 2, np.tile([True, False], 10), np.repeat(np.arange(10), 2), np.full(20, race))


def joined(*parts):
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def random_pairs(rng, per_race: int = 600, races=("African", "Asian", "Caucasian", "Indian"), decimals: int = 2):
    """RFW-like pairs, ordered by race then fold (half genuine per fold), scores rounded so that many tie."""
    parts = []
    for r, name in enumerate(races):
        per_fold = per_race // 10
        genuine = np.tile(np.arange(per_fold) < per_fold // 2, 10)
        score = np.where(genuine, rng.normal(0.45 - 0.05 * r, 0.15, per_race), rng.normal(0.05, 0.12, per_race))
        parts.append((np.round(score.clip(-1, 1), decimals), genuine, np.repeat(np.arange(10), per_fold),
                      np.full(per_race, name)))
    return joined(*parts)


# --- insightface, transcribed ----------------------------------------------------------------------------------------


def insightface_calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    acc = float(tp + tn) / dist.size
    return tpr, fpr, acc


def insightface_accuracy(dist, actual_issame, nrof_folds=10):
    """calculate_roc's accuracy loop (pca=0), as in recognition/arcface_torch/eval/verification.py; the tpr/fpr
    curves it also fills are left out, they do not touch the accuracy."""
    thresholds = np.arange(0, 4, 0.01)
    k_fold = KFold(n_splits=nrof_folds, shuffle=False)
    accuracy = np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(np.arange(len(actual_issame)))):
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, _, acc_train[threshold_idx] = insightface_calculate_accuracy(
                threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        _, _, accuracy[fold_idx] = insightface_calculate_accuracy(
            thresholds[best_threshold_index], dist[test_set], actual_issame[test_set])
    return accuracy


def insightface_by_race(score, genuine, fold, race):
    out = {}
    for name in np.unique(race):
        rows = np.flatnonzero(race == name)
        rows = rows[np.argsort(fold[rows], kind="stable")]  # the pairs file's order: fold = line // 600
        out[str(name)] = insightface_accuracy(2 - 2 * score[rows], genuine[rows])
    return out


# --- the protocol by hand --------------------------------------------------------------------------------------------

# Race "A": genuine pairs at distance 0.5 in every fold but fold 0 (1.5, a hard genuine); impostors at 1.0 in every
# fold but fold 9 (0.25, an impostor that looks the same). Correct pairs of the 18 training pairs, by threshold t:
#   held-out fold 0 (train: 9 genuine 0.5; impostors 8 x 1.0, 1 x 0.25):
#     t <= .25: 0 + 9 = 9;  .25 < t <= .5: 0 + 8;  .5 < t <= 1: 9 + 8 = 17 (best);  t > 1: 9 + 0
#     -> first best grid threshold 0.51; fold 0: genuine 1.5 rejected (wrong), impostor 1.0 rejected (right): 0.5
#   held-out fold 9 (train: genuines 8 x 0.5, 1 x 1.5; 9 impostors 1.0):
#     t <= .5: 9;  .5 < t <= 1: 8 + 9 = 17 (best);  1 < t <= 1.5: 8;  t > 1.5: 9
#     -> 0.51; fold 9: genuine 0.5 accepted (right), impostor 0.25 accepted (wrong): 0.5
#   held-out folds 1-8 (train: genuines 7 x 0.5, 1 x 1.5; impostors 7 x 1.0, 1 x 0.25):
#     t <= .25: 8;  .25 < t <= .5: 7;  .5 < t <= 1: 14 (best);  1 < t <= 1.5: 7;  t > 1.5: 8  -> 0.51, both right: 1
#   fold accuracies [.5, 1 x 8, .5]: mean 0.9; std sqrt((2 x .4^2 + 8 x .1^2) / 10) = sqrt(.04) = 0.2
RACE_A = hand_pairs("A", [1.5] + [0.5] * 9, [1.0] * 9 + [0.25])

# Race "B", a tie: fold 0 genuine 1.0, impostor 0.5; folds 1-9 genuine 0.5, impostor 1.5.
#   held-out fold 0 (train: 9 genuine 0.5, 9 impostors 1.5): t <= .5: 9;  .5 < t <= 1.5: 18;  t > 1.5: 9.
#     Every threshold in (.5, 1.5] ties; np.argmax takes the first, 0.51: genuine 1.0 rejected, impostor 0.5
#     accepted -> 0 (the last of the tie, 1.50, would give 0.5)
#   held-out folds 1-9 (train: genuines 1.0, 8 x 0.5; impostors 0.5, 8 x 1.5):
#     t <= .5: 0 + 9;  .5 < t <= 1: 8 + 8 = 16;  1 < t <= 1.5: 9 + 8 = 17 (best);  t > 1.5: 9  -> 1.01, both right: 1
#   fold accuracies [0, 1 x 9]: mean 0.9 (0.95 with the last of a tie); std sqrt((.9^2 + 9 x .1^2) / 10) = 0.3
RACE_B = hand_pairs("B", [1.0] + [0.5] * 9, [0.5] + [1.5] * 9)


def test_protocol_by_hand():
    result = protocol_accuracy(*joined(RACE_A, RACE_B))
    a, b = result["A"], result["B"]
    assert a["fold_thresholds"] == pytest.approx([0.51] * 10)
    assert a["fold_accuracies"] == [0.5] + [1.0] * 8 + [0.5]
    assert a["accuracy"] == pytest.approx(0.9) and a["fold_std"] == pytest.approx(0.2)
    assert b["fold_thresholds"] == pytest.approx([0.51] + [1.01] * 9)
    assert b["fold_accuracies"] == [0.0] + [1.0] * 9
    assert b["accuracy"] == pytest.approx(0.9) and b["fold_std"] == pytest.approx(0.3)


def test_protocol_matches_insightface_on_the_hand_example():
    data = joined(RACE_A, RACE_B)
    ours, theirs = protocol_accuracy(*data), insightface_by_race(*data)
    for name in ("A", "B"):
        assert ours[name]["fold_accuracies"] == theirs[name].tolist()


def test_race_summary_and_ser_by_hand():
    # errors .1, .05, .2, .15 -> SER .2 / .05 = 4; mean .875; std (ddof 0) sqrt((2 x .025^2 + 2 x .075^2) / 4)
    summary = race_summary({"a": 0.9, "b": 0.95, "c": 0.8, "d": 0.85})
    assert summary["ser"] == pytest.approx(4.0)
    assert summary["verification_accuracy"] == pytest.approx(0.875)
    assert summary["verification_std"] == pytest.approx(np.sqrt(0.003125))
    assert skewed_error_ratio([1.0, 0.9]) == np.inf  # the best race makes no error
    assert np.isnan(skewed_error_ratio([1.0, 1.0]))  # no race does: undefined


def test_distance_is_squared_l2_of_unit_embeddings(rng):
    e1, e2 = rng.normal(size=(2, 50, 16))
    e1, e2 = e1 / np.linalg.norm(e1, axis=1, keepdims=True), e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    np.testing.assert_allclose(np.sum((e1 - e2) ** 2, axis=1), 2 - 2 * np.sum(e1 * e2, axis=1), atol=1e-12)


def test_protocol_matches_insightface_on_random_data(rng):
    score, genuine, fold, race = random_pairs(rng)
    shuffled = rng.permutation(score.size)  # the folds come from the fold labels, not from the pair order
    ours = protocol_accuracy(score[shuffled], genuine[shuffled], fold[shuffled], race[shuffled])
    for name, accuracy in insightface_by_race(score, genuine, fold, race).items():
        assert ours[name]["fold_accuracies"] == accuracy.tolist()
        assert ours[name]["accuracy"] == np.mean(accuracy)
        assert ours[name]["fold_std"] == np.std(accuracy)


# --- bootstrap -------------------------------------------------------------------------------------------------------


def test_resamples_keep_every_stratum(rng):
    score, genuine, fold, race = random_pairs(rng, per_race=200)
    rows = stratified_resample_indices(genuine, fold, race, n_boot=20, seed=3)
    assert rows.shape == (20, score.size)
    for b in range(20):
        for name in np.unique(race):
            for f in range(10):
                for g in (True, False):
                    stratum = (race == name) & (fold == f) & (genuine == g)
                    assert stratum[rows[b]].sum() == stratum.sum()


def test_vectorised_bootstrap_matches_a_loop(rng):
    data = random_pairs(rng, per_race=300)
    rows = stratified_resample_indices(*data[1:], n_boot=3, seed=7)
    vectorised = resampled_accuracies(*data, rows)
    for b in range(3):
        resample = tuple(array[rows[b]] for array in data)
        expected = [np.mean(acc) for acc in insightface_by_race(*resample).values()]
        assert vectorised[b].tolist() == expected


def test_report_intervals_are_percentiles_of_those_resamples(rng):
    data = random_pairs(rng, per_race=300)
    report = verification_report({"fp32": data[0]}, *data[1:], reference="fp32", bootstrap=200, seed=11)
    boot = np.sort(resampled_accuracies(*data, stratified_resample_indices(*data[1:], n_boot=200, seed=11)), axis=0)
    # 95%: order statistics floor(.025 x 199) = 4 and ceil(.975 x 199) = 195
    for r, name in enumerate(report["races"]):
        entry = report["variants"]["fp32"]["summary"][f"acc_{name}"]
        assert (entry["ci_low"], entry["ci_high"]) == (boot[4, r], boot[195, r])
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]


# --- paired change ---------------------------------------------------------------------------------------------------


def test_a_model_against_itself_changes_nothing(rng):
    score, genuine, fold, race = random_pairs(rng, per_race=300)
    report = verification_report({"fp32": score, "copy": score.copy()}, genuine, fold, race, reference="fp32",
                                 bootstrap=100)
    copy = report["variants"]["copy"]
    # No pair flips, so the bootstrap says [0, 0]; the exact-beta bound keeps the interval open around 0.
    changes = list(copy["change"].values()) + [rates[key] for rates in copy["at_reference_threshold"]["races"].values()
                                                 for key in ("fmr_change", "fnmr_change")]
    for entry in changes:
        assert entry["delta"] == 0.0 and entry["ci_low"] < 0 < entry["ci_high"] and entry["excludes_zero"] is False
        assert entry["p_value"] == 1.0
    assert report["variants"]["fp32"]["change"] is None


def test_a_variant_worse_on_one_race_is_detected(rng):
    score, genuine, fold, race = random_pairs(rng, per_race=600)
    worse = score.copy()
    hit = race == "Asian"
    worse[hit] = (score[hit] + rng.normal(0, 0.3, hit.sum())).clip(-1, 1)
    report = verification_report({"fp32": score, "int4": worse}, genuine, fold, race, reference="fp32",
                                 bootstrap=200)
    change = report["variants"]["int4"]["change"]
    assert change["acc_Asian"]["delta"] < 0 and change["acc_Asian"]["ci_high"] < 0
    assert change["acc_Asian"]["excludes_zero"] is True
    assert change["acc_Caucasian"]["delta"] == 0.0 and change["acc_Caucasian"]["excludes_zero"] is False
    assert change["verification_std"]["excludes_zero"] is True


# --- one global threshold --------------------------------------------------------------------------------------------

# Race "A": genuines at 0.5, impostors at 1.0 except in fold 7 (0.25). Race "B": impostors at 1.0, genuines at 0.5
# except in folds 6 and 8 (1.5). Folds 0-4 pooled: 10 genuines at 0.5, 10 impostors at 1.0, all right for any
# threshold in (0.5, 1.0]: the first on the 0.001 grid is 0.501. Folds 5-9 at 0.501:
#   A: FMR 1/5 (fold 7's impostor accepted), FNMR 0;  B: FMR 0, FNMR 2/5 (folds 6 and 8's genuines rejected)
#   FDR = 1 - (.5 x .2 + .5 x .4) = 0.7; max/min FMR and FNMR, and so IR, infinite;
#   Gini of (x, 0) = 2/1 x 2x / (2 x 4 x x/2) = 1 for both, so GARBE 1.
GLOBAL_A = hand_pairs("A", [0.5] * 10, [1.0] * 7 + [0.25] + [1.0] * 2)
GLOBAL_B = hand_pairs("B", [0.5] * 6 + [1.5, 0.5, 1.5, 0.5], [1.0] * 10)


def test_global_threshold_by_hand():
    data = joined(GLOBAL_A, GLOBAL_B)
    threshold = global_threshold(*data)
    assert threshold == pytest.approx(0.501)
    rates = error_rates_at_threshold(*data, threshold)
    assert rates == {"A": {"fmr": 0.2, "fnmr": 0.0}, "B": {"fmr": 0.0, "fnmr": pytest.approx(0.4)}}
    # No impostor of folds 0-4 accepted: the largest such threshold, 1.0 (the impostors sit at 1.0)
    assert global_threshold(*data, target_fmr=0.0) == pytest.approx(1.0)

    report = verification_report({"fp32": data[0]}, *data[1:], reference="fp32", bootstrap=50)
    block = report["variants"]["fp32"]["global_threshold"]
    assert block["distance"] == pytest.approx(0.501) and block["cosine"] == pytest.approx(1 - 0.501 / 2)
    assert block["selection_fmr"] == 0.0 and block["selection_fnmr"] == 0.0
    assert block["races"]["A"]["fmr"]["value"] == 0.2 and block["races"]["B"]["fnmr"]["value"] == pytest.approx(0.4)
    assert block["fdr"]["value"] == pytest.approx(0.7) and block["garbe"]["value"] == pytest.approx(1.0)
    for key in ("fmr_ratio", "fnmr_ratio", "ir"):
        assert block[key]["value"] is None and block[key]["nonfinite"]["value"] == "inf"
    json.dumps(report, allow_nan=False)  # no NaN or Infinity anywhere


def test_target_fmr_is_met_on_the_selection_folds(rng):
    score, genuine, fold, race = random_pairs(rng, decimals=6)
    distance = 2 - 2 * score
    impostors = np.isin(fold, SELECTION_FOLDS) & ~genuine
    for target in (0.001, 0.01, 0.1):
        threshold = global_threshold(score, genuine, fold, race, target_fmr=target)
        assert np.mean(distance[impostors] < threshold) <= target
        step = GLOBAL_THRESHOLDS[np.searchsorted(GLOBAL_THRESHOLDS, threshold) + 1]
        assert np.mean(distance[impostors] < step) > target  # and it is the largest grid threshold that does
    report = verification_report({"fp32": score}, genuine, fold, race, reference="fp32", bootstrap=20,
                                 target_fmr=0.01)
    block = report["variants"]["fp32"]["global_threshold"]
    assert block["selection_fmr"] <= 0.01
    assert block["distance"] == pytest.approx(global_threshold(score, genuine, fold, race, target_fmr=0.01))


def test_fdr_ir_garbe_by_hand():
    fmr, fnmr = [0.01, 0.02, 0.04], [0.1, 0.1, 0.2]
    # FDR: 1 - (.5 x (.04 - .01) + .5 x (.2 - .1)) = .935; IR: sqrt(.04 / .01) x sqrt(.2 / .1) = 2 sqrt 2
    assert fairness_discrepancy_rate(fmr, fnmr) == pytest.approx(0.935)
    assert inequity_rate(fmr, fnmr) == pytest.approx(2 * np.sqrt(2))
    # Gini FMR: sum |xi - xj| over ordered pairs = 2 x (.01 + .03 + .02) = .12, mean .07/3:
    #   3/2 x .12 / (2 x 9 x .07/3) = 3/7; Gini FNMR: 2 x (0 + .1 + .1) = .4, mean .4/3: 3/2 x .4 / (18 x .4/3) = 1/4
    assert gini(fmr) == pytest.approx(3 / 7) and gini(fnmr) == pytest.approx(1 / 4)
    assert garbe(fmr, fnmr) == pytest.approx((3 / 7 + 1 / 4) / 2)
    assert garbe(fmr, fnmr, alpha=1.0) == pytest.approx(3 / 7)


def test_ratio_edge_cases():
    assert max_over_min([0.0, 0.1]) == np.inf and np.isnan(max_over_min([0.0, 0.0]))
    assert gini([0.3, 0.3, 0.3]) == 0.0 and gini([0.0, 0.0]) == 0.0 and gini([0.0, 1.0]) == 1.0
    assert np.isnan(gini([0.2]))
    assert inequity_rate([0.0, 0.1], [0.1, 0.2]) == np.inf
    assert fairness_discrepancy_rate([0.0, 0.0], [0.1, 0.1]) == 1.0


# --- bad input -------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_named(rng):
    score, genuine, fold, race = random_pairs(rng, per_race=100)
    scores = {"fp32": score}

    def report(scores=scores, genuine=genuine, fold=fold, race=race, **options):
        return verification_report(scores, genuine, fold, race, reference="fp32", bootstrap=5, **options)

    keep = ~((race == "Asian") & (fold == 9))
    with pytest.raises(FairquantError, match=r"race 'Asian' has pairs in folds \[0, 1, 2, 3, 4, 5, 6, 7, 8\]"):
        report({"fp32": score[keep]}, genuine[keep], fold[keep], race[keep])
    keep = ~((race == "Indian") & (fold == 3) & genuine)
    with pytest.raises(FairquantError, match="race 'Indian', fold 3 has no genuine pairs"):
        report({"fp32": score[keep]}, genuine[keep], fold[keep], race[keep])
    with pytest.raises(FairquantError, match="mismatched lengths"):
        report(genuine=genuine[:-1])
    with pytest.raises(FairquantError, match="mismatched lengths"):
        report({"fp32": score, "int8": score[:-1]})
    nan = score.copy()
    nan[17] = np.nan
    with pytest.raises(FairquantError, match=r"scores of 'int8' hold 1 NaN or infinite values \(first at pair 17\)"):
        report({"fp32": score, "int8": nan})
    with pytest.raises(FairquantError, match=r"outside \[-1, 1\]"):
        report({"fp32": score * 3})
    with pytest.raises(FairquantError, match="fold must be integers 0-9"):
        report(fold=fold + 1)
    with pytest.raises(FairquantError, match="genuine must be booleans"):
        report(genuine=np.where(genuine, "same", "diff"))
    with pytest.raises(FairquantError, match="reference model 'fp32' is not among"):
        verification_report({"int8": score}, genuine, fold, race, reference="fp32")
    with pytest.raises(FairquantError, match="confidence"):
        report(confidence=95)
    with pytest.raises(FairquantError, match="target_fmr"):
        report(target_fmr=2.0)


def test_report_is_json_ready_without_bootstrap(rng):
    score, genuine, fold, race = random_pairs(rng, per_race=100)
    report = verification_report({"fp32": score, "int8": score}, genuine, fold, race, reference="fp32", bootstrap=0)
    text = json.dumps(report, allow_nan=False)
    entry = report["variants"]["int8"]["summary"]["verification_accuracy"]
    assert entry["ci_low"] is None and entry["nonfinite"] == {} and isinstance(entry["value"], float)
    assert report["variants"]["int8"]["change"]["ser"]["excludes_zero"] is None
    assert "numpy" not in text


def test_race_differences_find_a_worse_race_and_only_it(rng):
    from fairquant.fairness.verification import race_differences

    score, genuine, fold, race = random_pairs(rng, per_race=1000, races=("A", "B", "C"))
    same_genuine = score.copy()
    for name in ("A", "B", "C"):  # make the three races statistically identical: A's scores everywhere
        same_genuine[race == name] = score[race == "A"]
    flat = race_differences(same_genuine, genuine, fold, race, bootstrap=300, confidence=0.95, seed=0)
    assert flat["any_excludes_zero"] is False
    assert all(d["delta"] == 0 and d["ci_low"] <= 0 <= d["ci_high"] for d in flat["pairs"].values())
    hurt = same_genuine.copy()
    hit = race == "C"
    hurt[hit] = (hurt[hit] + rng.normal(0, 0.3, hit.sum())).clip(-1, 1)
    found = race_differences(hurt, genuine, fold, race, bootstrap=300, confidence=0.95, seed=0)
    assert found["pairs"]["A - C"]["excludes_zero"] and found["pairs"]["B - C"]["excludes_zero"]
    assert found["pairs"]["A - C"]["delta"] > 0 and found["pairs"]["A - B"]["excludes_zero"] is False
    assert found["adjustment"] == "Bonferroni over 3 pairs"
