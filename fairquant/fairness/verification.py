"""Face verification metrics of several models on the same scored pairs: the report, and whether the races
differ at all.

The rooms: :mod:`~fairquant.fairness.verification_protocol` (insightface's 10-fold accuracy per race, one
global threshold), :mod:`~fairquant.fairness.verification_metrics` (SER, FMR/FNMR ratios, FDR, IR, GARBE) and
:mod:`~fairquant.fairness.verification_intervals` (stratified, paired bootstrap intervals). Their public names
are importable from here too.

The report is JSON-ready: plain floats, and None for a value that is not finite, named in ``nonfinite``
("inf", "-inf" or "undefined").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations

import numpy as np

from fairquant.errors import FairquantError
from fairquant.fairness.verification_intervals import (
    bootstrap_statistics,
    percentile_interval,
    resampled_accuracies,
    stratified_resample_indices,
)
from fairquant.fairness.verification_paired import (
    HULL_RACE_METHOD,
    HULL_SPREAD_METHOD,
    bootstrap_p,
    error_rate_bound,
    hull,
    joint_cells,
    pair_correct,
    race_bounds,
    spread_bounds,
)
from fairquant.fairness.verification_metrics import (
    fairness_discrepancy_rate,
    garbe,
    gini,
    inequity_rate,
    max_over_min,
    race_summary,
    skewed_error_ratio,
)
from fairquant.fairness.verification_protocol import (
    GLOBAL_THRESHOLDS,
    N_FOLDS,
    REPORT_FOLDS,
    SELECTION_FOLDS,
    THRESHOLDS,
    PairBins,
    PairLayout,
    batch_statistics,
    error_rates_at_threshold,
    global_threshold,
    pair_layout,
    protocol_accuracy,
    scored_pairs,
)
from fairquant.fairness.verification_trend import METHOD as TREND_METHOD
from fairquant.fairness.verification_trend import BitCurve, bit_curves, bits_trends, check_curves


__all__ = [
    "BitCurve", "GLOBAL_THRESHOLDS", "N_FOLDS", "REPORT_FOLDS", "SELECTION_FOLDS", "THRESHOLDS", "PairLayout",
    "bit_curves", "error_rates_at_threshold", "fairness_discrepancy_rate", "garbe", "gini", "global_threshold",
    "inequity_rate", "max_over_min", "pair_layout", "protocol_accuracy", "race_summary", "resampled_accuracies",
    "race_differences", "skewed_error_ratio", "stratified_resample_indices", "verification_report",
]


def _json_fields(fields: Mapping[str, float | None]) -> dict:
    """Floats as they are, non-finite ones as None, named in ``nonfinite``."""
    out: dict = {}
    nonfinite = {}
    for key, value in fields.items():
        if value is not None and not math.isfinite(value):
            nonfinite[key] = "undefined" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            value = None
        out[key] = value
    return out | {"nonfinite": nonfinite}


def _estimate(value, boot: np.ndarray, confidence: float) -> dict:
    low, high, undefined = percentile_interval(np.asarray(boot, dtype=np.float64), confidence)
    return _json_fields({"value": float(value), "ci_low": low, "ci_high": high}) | {"undefined_resamples": undefined}


def _change(delta, boot: np.ndarray, confidence: float, bound: dict | None = None, method: str | None = None) -> dict:
    """A paired change: the percentile bootstrap interval or, with ``bound``, its hull with the bound (p the larger)."""
    boot = np.asarray(boot, dtype=np.float64)
    low, high, undefined = percentile_interval(boot, confidence)
    if bound is not None and low is not None:
        low, high, p = hull(low, high, bootstrap_p(boot), bound)
    else:
        p = None
    known = low is not None and not (math.isnan(low) or math.isnan(high))
    out = _json_fields({"delta": float(delta), "ci_low": low, "ci_high": high})
    out |= {"excludes_zero": bool(low > 0 or high < 0) if known else None, "undefined_resamples": undefined}
    if bound is not None:
        out |= {"p_value": p, "interval_method": method,
                "bound": _json_fields({k: bound[k] for k in ("ci_low", "ci_high", "p_value")})}
    return out


def _threshold_fields(index: int) -> dict:
    distance = round(float(GLOBAL_THRESHOLDS[index]), 3)  # the grid's value, without its float noise
    return {"distance": distance, "cosine": round(1 - distance / 2, 4)}  # accepted when cos > 1 - distance / 2


def _race_details(point: dict, layout: PairLayout) -> dict:
    out = {}
    for r, name in enumerate(layout.races):
        rows = layout.race == r
        out[name] = {"accuracy": float(point["accuracy"][0, r]), "fold_std": float(point["fold_accuracy"][0, r].std()),
                     "fold_accuracies": point["fold_accuracy"][0, r].tolist(),
                     # rounded: 1.64, not the grid's 1.6400000000000001
                     "fold_thresholds": np.round(THRESHOLDS[point["best"][0, r]], 2).tolist(),
                     "pairs": int(rows.sum()), "genuine": int(layout.genuine[rows].sum())}
    return out


def _global_block(point: dict, boot: dict, layout: PairLayout, distance: np.ndarray, confidence: float) -> dict:
    index = int(point["global_index"][0])
    selection = np.isin(layout.fold, SELECTION_FOLDS)
    accepted = distance < GLOBAL_THRESHOLDS[index]
    return {
        **_threshold_fields(index),
        "selection_fmr": float(accepted[selection & (layout.genuine == 0)].mean()),
        "selection_fnmr": float(1 - accepted[selection & (layout.genuine == 1)].mean()),
        "races": {name: {k: _estimate(point[k][0, r], boot[k][:, r], confidence) for k in ("fmr", "fnmr")}
                  for r, name in enumerate(layout.races)},
        **{k: _estimate(point[k][0], boot[k], confidence) for k in ("fmr_ratio", "fnmr_ratio", "fdr", "ir", "garbe")},
    }


def _summary(point: dict, boot: dict, races: tuple[str, ...], confidence: float) -> dict:
    out = {f"acc_{name}": _estimate(point["accuracy"][0, r], boot["accuracy"][:, r], confidence)
           for r, name in enumerate(races)}
    return out | {k: _estimate(point[k][0], boot[k], confidence)
                  for k in ("verification_accuracy", "verification_std", "ser")}


def _changes(point: dict, ref: dict, boot: dict, ref_boot: dict, layout: PairLayout, joint: np.ndarray,
             confidence: float, seed: int) -> dict:
    race_bound = race_bounds(joint, confidence=confidence, seed=seed)
    spread = spread_bounds(joint, confidence=confidence, seed=seed)
    with np.errstate(invalid="ignore"):  # inf - inf (SER infinite in both): undefined
        out = {f"acc_{name}": _change(point["accuracy"][0, r] - ref["accuracy"][0, r],
                                      boot["accuracy"][:, r] - ref_boot["accuracy"][:, r], confidence,
                                      race_bound[r], HULL_RACE_METHOD)
               for r, name in enumerate(layout.races)}
        return out | {k: _change(point[k][0] - ref[k][0], boot[k] - ref_boot[k], confidence, spread[k],
                                 HULL_SPREAD_METHOD)
                      for k in ("verification_accuracy", "verification_std", "ser")}


def _at_reference(point: dict, ref: dict, boot: dict, ref_boot: dict, layout: PairLayout,
                  distances: tuple[np.ndarray, np.ndarray], confidence: float, seed: int) -> dict:
    threshold = GLOBAL_THRESHOLDS[int(ref["global_index"][0])]
    accepted = [distance < threshold for distance in distances]  # fp32's, the variant's
    reported = np.isin(layout.fold, REPORT_FOLDS)
    races_out = {}
    for r, name in enumerate(layout.races):
        entry = {}
        for rate, kind, errors in (("fmr", 0, accepted), ("fnmr", 1, [~a for a in accepted])):
            mine, theirs = f"{rate}_at_reference", rate
            rows = reported & (layout.race == r) & (layout.genuine == kind)
            bound = error_rate_bound(errors[0], errors[1], rows, confidence=confidence, seed=seed)
            entry[rate] = _estimate(point[mine][0, r], boot[mine][:, r], confidence)
            entry[f"{rate}_change"] = _change(point[mine][0, r] - ref[theirs][0, r],
                                              boot[mine][:, r] - ref_boot[theirs][:, r], confidence, bound,
                                              HULL_RACE_METHOD)
        races_out[name] = entry
    return {**_threshold_fields(int(ref["global_index"][0])), "races": races_out}


def _check_options(scores: Mapping, reference: str, bootstrap: int, confidence: float, target_fmr: float | None,
                   alpha: float) -> None:
    if reference not in scores:
        raise FairquantError(f"reference model {reference!r} is not among the scored models {sorted(scores)}; "
                             "score it too, or set the reference to one of them")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise FairquantError(f"bootstrap must be a whole number of resamples >= 0, found {bootstrap!r}; use e.g. 1000")
    if not 0 < confidence < 1:
        raise FairquantError(f"confidence must lie strictly between 0 and 1, found {confidence!r}; use e.g. 0.95")
    if target_fmr is not None and not 0 <= target_fmr <= 1:
        raise FairquantError(f"target_fmr must lie in [0, 1] or be null, found {target_fmr!r}; use e.g. 0.001")
    if not 0 <= alpha <= 1:
        raise FairquantError(f"alpha (the FMR weight of FDR, IR and GARBE) must lie in [0, 1], found {alpha!r}")


def verification_report(scores: Mapping[str, np.ndarray], genuine, fold, race, *, reference: str,
                        bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                        target_fmr: float | None = None, alpha: float = 0.5,
                        curves: Mapping[str, BitCurve] | None = None) -> dict:
    """Everything above for each model in ``scores`` (name -> per-pair cosine), as JSON-ready nested dicts.

    Per variant: ``summary`` (acc_<race>, verification_accuracy, verification_std, ser with intervals),
    ``races`` (fold details), ``global_threshold`` (its own threshold, FMR/FNMR per race and FDR, IR, GARBE);
    and for every variant but the reference, ``change`` (paired change of the summary against the reference)
    and ``at_reference_threshold`` (FMR/FNMR at the reference's global threshold and their change). With
    ``curves`` (:func:`bit_curves`), also ``trends``: each curve's trend answers over bits
    (:mod:`~fairquant.fairness.verification_trend`), from the same resamples.
    """
    _check_options(scores, reference, bootstrap, confidence, target_fmr, alpha)
    check_curves(curves or {}, scores)
    layout, distances = scored_pairs(scores, genuine, fold, race)
    bins = {name: PairBins.of(distance, layout) for name, distance in distances.items()}
    n_races, everything = len(layout.races), np.arange(layout.n_pairs)[None]
    point = {reference: batch_statistics(bins[reference], everything, n_races, target_fmr, alpha)}
    for name in bins:
        if name != reference:
            point[name] = batch_statistics(bins[name], everything, n_races, target_fmr, alpha,
                                           point[reference]["global_index"])
    boot = bootstrap_statistics(bins, layout, reference, bootstrap, seed, target_fmr, alpha)
    ref_correct = pair_correct(distances[reference], layout, point[reference]["best"][0])
    variants = {}
    for name in scores:
        p, b, ref, ref_boot = point[name], boot[name], point[reference], boot[reference]
        joint = joint_cells(ref_correct, pair_correct(distances[name], layout, p["best"][0]), layout)
        pair = (distances[reference], distances[name])
        variants[name] = {
            "summary": _summary(p, b, layout.races, confidence),
            "races": _race_details(p, layout),
            "global_threshold": _global_block(p, b, layout, distances[name], confidence),
            "change": None if name == reference else _changes(p, ref, b, ref_boot, layout, joint, confidence, seed),
            "at_reference_threshold": None if name == reference else _at_reference(p, ref, b, ref_boot, layout,
                                                                                   pair, confidence, seed),
        }
    report = {
        "reference": reference, "races": list(layout.races), "pairs": layout.n_pairs, "bootstrap": int(bootstrap),
        "confidence": float(confidence), "seed": int(seed), "alpha": float(alpha),
        "target_fmr": None if target_fmr is None else float(target_fmr),
        "conventions": {
            "distance": "2 - 2 cos (squared L2 of unit embeddings); a pair is 'same' when distance < threshold",
            "protocol": "insightface calculate_roc per race: 10 folds, np.arange(0, 4, 0.01), threshold with the "
                        "best accuracy on the other 9 folds (ties: first), mean over folds",
            "std_ddof": 0,
            "global_threshold": ("max pooled accuracy" if target_fmr is None else "largest with pooled FMR <= target")
                                + f" on folds {list(SELECTION_FOLDS)}, np.arange(0, 4, 0.001); reported on folds "
                                  f"{list(REPORT_FOLDS)}",
            "interval": "percentile bootstrap (order statistics), pairs resampled within race x fold x genuine, "
                        "thresholds re-chosen per resample; changes paired on the same resamples, each change's "
                        "interval the hull of that and an exact-beta Dirichlet bound from the pairs' joint (fp32, "
                        "variant) outcomes at the point thresholds (its interval_method says which)",
            "biased_statistics": "verification_std, ser and the global threshold's ratios, fdr, ir and garbe are "
                                 "max/min or spread statistics, biased away from their no-difference values: their "
                                 "resamples can lie mostly on one side of the estimate, so the interval need not "
                                 "contain it; read race differences from race_differences and compression's effect "
                                 "from the paired changes",
        },
        "variants": variants,
    }
    if curves is not None:
        report["conventions"]["trend"] = TREND_METHOD
        report["trends"] = bits_trends(curves, point, boot, reference=reference, races=layout.races,
                                       confidence=confidence)
    return report


def race_differences(score, genuine, fold, race, *, bootstrap: int, confidence: float, seed: int) -> dict:
    """Whether the races differ at all: every pairwise difference of protocol accuracies (row race minus column
    race) with a percentile bootstrap interval, Bonferroni-adjusted over the pairs so that the family holds at
    ``confidence``. (SER and STD cannot answer this: both exceed their no-difference value on any finite sample,
    so their intervals exclude it even when the races are alike.)"""
    point = protocol_accuracy(score, genuine, fold, race)
    races = list(point)
    rows = stratified_resample_indices(genuine, fold, race, n_boot=bootstrap, seed=seed)
    boot = resampled_accuracies(score, genuine, fold, race, rows)
    pairs = list(combinations(range(len(races)), 2))
    level = 1 - (1 - confidence) / max(len(pairs), 1)
    out = {}
    for a, b in pairs:
        low, high, _ = percentile_interval(boot[:, a] - boot[:, b], level)
        delta = point[races[a]]["accuracy"] - point[races[b]]["accuracy"]
        out[f"{races[a]} - {races[b]}"] = {"delta": delta, "ci_low": low, "ci_high": high,
                                           "excludes_zero": None if low is None else bool(low > 0 or high < 0)}
    return {"pairs": out, "confidence": confidence, "adjustment": f"Bonferroni over {len(pairs)} pairs",
            "any_excludes_zero": any(bool(v["excludes_zero"]) for v in out.values())}
