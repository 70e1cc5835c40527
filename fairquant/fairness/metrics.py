"""Group fairness metrics with bootstrap confidence intervals and paired tests, on one vocabulary.

Every metric is a function of per-group confusion counts (TN, FP, FN, TP), so the bootstrap draws counts,
not rows: 1000 resamples of 20k rows cost milliseconds. The resample is stratified so that a rate defined
on the test set stays defined in every resample, and a gap is never computed over fewer groups than its
point estimate: TPR and FPR (and equalized odds) come from a resample that keeps each group's positives
and negatives (group x label strata), accuracy and selection rates from one that keeps each group's size.

Definitions match fairlearn's: a gap is the largest minus the smallest group value; ``eq_odds`` is the
larger of the TPR and FPR gaps; ``dp_ratio`` is the smallest over the largest selection rate. A group whose
rate is undefined (no positives for TPR, no negatives for FPR) is left out of that gap; a gap over fewer
than two groups is undefined (null in JSON), never an error.

Intervals (``INTERVAL_METHODS`` names them in the output):

- differences between groups, pairwise or against the privileged group, are simultaneous max-t intervals
  d +- c se: se is each difference's bootstrap SD, c the confidence quantile over resamples of the largest
  |d* - d| / se in the family, so the whole family covers together (for two groups c is about z);
- a gap is max |d_ij|; its interval runs from the largest distance of any pairwise interval from 0 to the
  farthest end of any pairwise interval. It holds the gap by construction and reaches 0 when every pair's
  interval covers 0. ``dp_ratio`` and disparate impact are the same on log selection rates;
- the single-model resample draws from Jeffreys-smoothed cell shares, (count + 1/2) / (n + cells/2): with
  plain shares a group with 0 of 3 positives found would have a TPR of exactly 0 in every resample and an
  interval of zero width. On large groups the smoothing changes nothing visible. The paired resample is not
  smoothed: a cell where the two models disagree and no row falls is empty by construction, not by chance;
- changes against a reference model (fp32) are Wald intervals delta +- z se from a paired bootstrap of the
  same rows, with p = 2 Phi(-|delta| / se): the interval excludes 0 exactly when p < 1 - confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from fairquant.errors import FairquantError

GAPS = ("accuracy_gap", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "dp_ratio", "disparate_impact")
RATES = ("accuracy", "tpr", "fpr", "selection_rate")
BY_LABEL = ("tpr", "fpr")  # rates taken from the group x label resample; the others from the group resample
GAP_RATES = {"accuracy_gap": ("accuracy",), "tpr_gap": ("tpr",), "fpr_gap": ("fpr",), "eq_odds": ("tpr", "fpr"),
             "dp_gap": ("selection_rate",)}
JEFFREYS = 0.5
_MAXT = "simultaneous max-t over {}, bootstrap stratified by {}"
INTERVAL_METHODS = {
    "accuracy_gap": _MAXT.format("pairwise differences", "group"),
    "tpr_gap": _MAXT.format("pairwise differences", "group x label"),
    "fpr_gap": _MAXT.format("pairwise differences", "group x label"),
    "eq_odds": _MAXT.format("pairwise TPR and FPR differences", "group x label"),
    "dp_gap": _MAXT.format("pairwise differences", "group"),
    "dp_ratio": _MAXT.format("pairwise log ratios", "group"),
    "disparate_impact": _MAXT.format("log ratios to the privileged group", "group"),
    "signed_by_group": _MAXT.format("differences to the privileged group", "group"),
    "signed_by_label": _MAXT.format("differences to the privileged group", "group x label"),
    "paired": "Wald, paired bootstrap SE (stratified like the statistic), p = 2 Phi(-|delta|/se)",
}


def group_labels(frame: pd.DataFrame, protected: list[str]) -> np.ndarray:
    """One label per row; several protected attributes give intersectional groups ('Male & Black')."""
    if len(protected) == 1:
        return frame[protected[0]].astype(str).to_numpy()
    return frame[protected].astype(str).agg(" & ".join, axis=1).to_numpy()


@dataclass(frozen=True)
class GroupCounts:
    """Confusion counts per group: ``cells[g] = (tn, fp, fn, tp)``."""

    names: list[str]
    cells: np.ndarray  # (G, 4) int64

    @classmethod
    def from_predictions(cls, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> "GroupCounts":
        names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        cell = 2 * np.asarray(y_true, dtype=np.int64) + np.asarray(y_pred, dtype=np.int64)
        counts = np.bincount(index * 4 + cell, minlength=4 * len(names)).reshape(len(names), 4)
        return cls([str(name) for name in names], counts)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Rates per group from (..., G, 4) counts; NaN where undefined."""
    tn, fp, fn, tp = (cells[..., k].astype(float) for k in range(4))
    n = tn + fp + fn + tp
    return {"accuracy": _divide(tn + tp, n), "tpr": _divide(tp, tp + fn), "fpr": _divide(fp, fp + tn),
            "selection_rate": _divide(tp + fp, n), "n": n, "positives": tp + fn}


def _rate_table(by_label: np.ndarray, by_group: np.ndarray) -> dict[str, np.ndarray]:
    """Each rate from the counts whose stratification keeps it defined (pass the same counts twice for points)."""
    label_rates, group_rates = rates(by_label), rates(by_group)
    return {k: (label_rates if k in BY_LABEL else group_rates)[k] for k in RATES}


def _spread(values: np.ndarray) -> np.ndarray:
    """Largest minus smallest over the groups axis, ignoring undefined groups; NaN with < 2 defined."""
    defined = np.isfinite(values)
    enough = defined.sum(axis=-1) >= 2
    high = np.where(defined, values, -np.inf).max(axis=-1)
    low = np.where(defined, values, np.inf).min(axis=-1)
    return np.where(enough, high - low, np.nan)


def _disparate_impact(selection: np.ndarray, reference: int | None) -> np.ndarray:
    """Smallest selection rate of another group over the reference group's; NaN without a reference."""
    if reference is None:
        return np.full(selection.shape[:-1], np.nan)
    others = np.delete(selection, reference, axis=-1)
    base = selection[..., reference, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(base > 0, others / base, np.nan)
    defined = np.isfinite(ratio)
    return np.where(defined.any(-1), np.where(defined, ratio, np.inf).min(-1, initial=np.inf), np.nan)


def gaps(r: dict[str, np.ndarray], reference: int | None) -> dict[str, np.ndarray]:
    """Every gap from per-group rates (..., G); ``reference`` indexes the group disparate impact is taken against."""
    selection = r["selection_rate"]
    defined = np.isfinite(selection)
    high = np.where(defined, selection, -np.inf).max(axis=-1)
    low = np.where(defined, selection, np.inf).min(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dp_ratio = np.where((defined.sum(-1) >= 2) & (high > 0), low / np.where(high > 0, high, 1), np.nan)
    tpr_gap, fpr_gap = _spread(r["tpr"]), _spread(r["fpr"])
    return {
        "accuracy_gap": _spread(r["accuracy"]),
        "tpr_gap": tpr_gap,
        "fpr_gap": fpr_gap,
        "eq_odds": np.fmax(tpr_gap, fpr_gap),  # fmax: one undefined gap leaves the other
        "dp_gap": _spread(selection),
        "dp_ratio": dp_ratio,
        "disparate_impact": _disparate_impact(selection, reference),
    }


def _resample_within(strata: np.ndarray, n_boot: int, rng: np.random.Generator, prior: float = 0.0) -> np.ndarray:
    """(..., K) counts, each leading index a stratum of fixed size -> (n_boot, ..., K) multinomial resamples.

    With ``prior`` 0 this is exactly resampling rows with replacement within each stratum; ``prior``
    pseudo-counts per cell smooth the shares the rows are drawn with.
    """
    totals = strata.sum(axis=-1)
    shares = (strata + prior) / np.maximum(totals + prior * strata.shape[-1], 1e-12)[..., None]
    return rng.multinomial(totals, shares, size=(n_boot,) + totals.shape)


def _stratified_resamples(cells: np.ndarray, n_boot: int, rng: np.random.Generator,
                          prior: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two resamples of counts shaped (G, 2 labels, ...): group x label totals kept, and group totals kept."""
    groups, shape = cells.shape[0], (n_boot,) + cells.shape
    by_label = _resample_within(cells.reshape(groups, 2, -1), n_boot, rng, prior).reshape(shape)
    by_group = _resample_within(cells.reshape(groups, -1), n_boot, rng, prior).reshape(shape)
    return by_label, by_group


def _pairwise(values: np.ndarray) -> np.ndarray:
    """(..., G) -> (..., G(G-1)/2) differences r_i - r_j over pairs i < j."""
    i, j = np.triu_indices(values.shape[-1], 1)
    return values[..., i] - values[..., j]


def _versus(values: np.ndarray, reference: int) -> np.ndarray:
    """(..., G) -> (..., G-1) differences r_g - r_reference for every other group g."""
    return np.delete(values, reference, axis=-1) - values[..., reference, None]


def _log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(values)


def _simultaneous(point: np.ndarray, boot: np.ndarray, confidence: float,
                  bound: float | None = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Max-t intervals point +- c se for a family of differences: point (P,), boot (n_boot, P).

    NaN where a difference is undefined (a group without positives) or its bootstrap is not finite (the log
    of a zero rate); ``bound`` clips the ends to [-bound, bound] (differences of rates lie in [-1, 1]).
    """
    # A resample can give a finite point an infinite contrast (the log of a selection rate that drew 0): such
    # resamples are left out of that contrast's SD and of the max-t quantile; with most of them gone, undefined.
    boot = np.where(np.isfinite(boot), boot, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(boot, axis=0)
        usable = np.isfinite(point) & np.isfinite(se) & (np.isfinite(boot).mean(axis=0) >= 0.5)
        t = np.abs(boot[:, usable] - point[usable]) / np.where(se[usable] > 0, se[usable], np.inf)
        t_max = np.nanmax(t, axis=1) if usable.any() else np.zeros(0)
    t_max = t_max[np.isfinite(t_max)]
    c = float(np.quantile(t_max, confidence)) if t_max.size else 0.0
    half = np.where(usable, c * se, np.nan)
    low, high = point - half, point + half
    if bound is not None:
        low, high = np.clip(low, -bound, bound), np.clip(high, -bound, bound)
    return low, high


def _max_abs_interval(point: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """Interval for max |d| over a family, from the family's simultaneous intervals; NaN with nothing defined."""
    used = ~np.isnan(point)
    if not used.any() or not np.isfinite(low[used]).all() or not np.isfinite(high[used]).all():
        return float("nan"), float("nan")
    nearest = np.maximum(np.maximum(low, -high), 0.0)[used]
    farthest = np.maximum(np.abs(low), np.abs(high))[used]
    return float(nearest.max()), float(farthest.max())


def _family(point: dict, boot: dict, keys: tuple[str, ...], contrast, confidence: float,
            bound: float | None = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point contrasts of the rates ``keys`` (concatenated) with their simultaneous intervals."""
    with np.errstate(invalid="ignore"):  # log ratios of two zero rates: NaN, their interval null
        d = np.concatenate([contrast(point[k]) for k in keys], axis=-1)
        d_boot = np.concatenate([contrast(boot[k]) for k in keys], axis=-1)
    return (d, *_simultaneous(d, d_boot, confidence, bound))


def _gap_intervals(point: dict, boot: dict, reference: int | None, confidence: float) -> dict[str, tuple]:
    out = {gap: _max_abs_interval(*_family(point, boot, keys, _pairwise, confidence))
           for gap, keys in GAP_RATES.items()}
    log_pairs = _family(point, boot, ("selection_rate",), lambda v: _pairwise(_log(v)), confidence, None)
    low, high = _max_abs_interval(*log_pairs)
    out["dp_ratio"] = (float(np.exp(-high)), float(np.exp(-low)))  # min/max = exp(-max |log ratio|)
    out["disparate_impact"] = (float("nan"), float("nan"))
    if reference is not None:
        log_ratios = lambda v: _versus(_log(v), reference)  # noqa: E731
        d, low, high = _family(point, boot, ("selection_rate",), log_ratios, confidence, None)
        used = ~np.isnan(d)
        if used.any() and np.isfinite(low[used]).all() and np.isfinite(high[used]).all():
            out["disparate_impact"] = (float(np.exp(low[used]).min()), float(np.exp(high[used]).min()))
    return out


def _signed_method(rate: str) -> str:
    return INTERVAL_METHODS["signed_by_label" if rate in BY_LABEL else "signed_by_group"]


def _signed_differences(point: dict, boot: dict, names: list[str], reference: int | None, confidence: float) -> dict:
    """Per rate, each group's value minus the privileged group's, with intervals simultaneous over the groups."""
    if reference is None:
        return {}
    others = names[:reference] + names[reference + 1:]
    out = {}
    for rate in RATES:
        d, low, high = _family(point, boot, (rate,), lambda v: _versus(v, reference), confidence)
        out[rate] = {name: {"value": float(d[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
                            "interval_method": _signed_method(rate)} for k, name in enumerate(others)}
    return out


def _usable(sizes: np.ndarray, min_group_size: int) -> np.ndarray:
    largest = int(sizes.max(initial=0))
    if largest < min_group_size:
        raise FairquantError(f"evaluate.min_group_size is {min_group_size} but the largest group has {largest} test "
                             f"samples, so no group is left for gaps; set evaluate.min_group_size to at most {largest}")
    return sizes >= min_group_size


def _reference_index(names: list[str], privileged_group: str | None, min_group_size: int) -> int | None:
    if privileged_group is None:
        return None
    if privileged_group not in names:
        raise FairquantError(f"evaluate.privileged_group is {privileged_group!r}, not one of the groups in gaps "
                             f"{names} (groups under evaluate.min_group_size={min_group_size} are left out); "
                             "set it to one of them")
    return names.index(privileged_group)


def fairness_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, privileged_group: str | None = None,
                     n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """Overall and per-group rates, every gap and signed difference with a bootstrap CI, worst group, collapse.

    Signed differences and disparate impact are taken against ``privileged_group``; without one they are
    left out (an empty ``signed`` block, null disparate impact).
    """
    counts = GroupCounts.from_predictions(y_true, y_pred, groups)
    usable = _usable(counts.cells.sum(axis=1), min_group_size)
    cells = counts.cells[usable]
    names = [name for name, keep in zip(counts.names, usable) if keep]
    reference = _reference_index(names, privileged_group, min_group_size)
    point = _rate_table(cells, cells)
    boot = _rate_table(*_stratified_resamples(cells, n_boot, np.random.default_rng(seed), JEFFREYS))
    values, intervals = gaps(point, reference), _gap_intervals(point, boot, reference, confidence)
    per_group = rates(counts.cells)
    overall = rates(counts.cells.sum(axis=0, keepdims=True))
    group_accuracy = np.where(usable, per_group["accuracy"], np.nan)
    positive_rate = float(overall["selection_rate"][0])
    return {
        "n": int(counts.cells.sum()),
        "overall": {k: float(overall[k][0]) for k in RATES},
        "groups": {name: {**{k: float(per_group[k][g]) for k in RATES}, "n": int(per_group["n"][g]),
                          "positives": int(per_group["positives"][g]), "in_gaps": bool(usable[g])}
                   for g, name in enumerate(counts.names)},
        "confidence": confidence,
        "bootstrap": n_boot,
        "privileged_group": privileged_group,
        "gaps": {k: {"value": float(values[k]), "ci_low": intervals[k][0], "ci_high": intervals[k][1],
                     "interval_method": INTERVAL_METHODS[k]} for k in GAPS},
        "signed": _signed_differences(point, boot, names, reference, confidence),
        "worst_group": counts.names[int(np.nanargmin(group_accuracy))] if np.isfinite(group_accuracy).any() else None,
        "worst_group_accuracy": float(np.nanmin(group_accuracy)) if np.isfinite(group_accuracy).any() else float("nan"),
        # A model that predicts one class for nearly everything makes every gap look fair: flag it.
        "collapsed": bool(max(positive_rate, 1 - positive_rate) >= 0.98),
    }


def _wald(delta: np.ndarray, boot: np.ndarray, confidence: float) -> dict[str, np.ndarray]:
    """delta +- z se and p = 2 Phi(-|delta| / se), se the bootstrap SD.

    One rule for both: the interval excludes 0 exactly when p < 1 - confidence.
    """
    with np.errstate(invalid="ignore"):
        se = boot.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(se > 0, np.abs(delta) / se, np.where(delta == 0, 0.0, np.inf))
    defined = np.isfinite(delta) & np.isfinite(se)
    z = norm.ppf(0.5 + confidence / 2)
    return {"delta": delta, "ci_low": delta - z * se, "ci_high": delta + z * se,
            "p_value": np.where(defined, 2 * norm.sf(score), np.nan)}


def _change(delta: np.ndarray, boot: np.ndarray, confidence: float) -> list[dict]:
    """One JSON-ready dict per entry of the last axis."""
    wald = _wald(np.atleast_1d(delta), boot.reshape(boot.shape[0], -1), confidence)
    return [{**{k: float(v[i]) for k, v in wald.items()}, "interval_method": INTERVAL_METHODS["paired"]}
            for i in range(wald["delta"].size)]


def _model_cells(joint: np.ndarray, which: int) -> np.ndarray:
    """(..., G, 2 labels, 2 reference preds, 2 variant preds) -> (..., G, 4) counts of one model."""
    per_model = joint.sum(axis=-1) if which == 0 else joint.sum(axis=-2)
    return per_model.reshape(per_model.shape[:-2] + (4,))


def _flips(y_true: np.ndarray, a: np.ndarray, b: np.ndarray, index: np.ndarray, names: list[str]) -> dict:
    """Per group, how predictions moved between the two models, with an exact McNemar test on accuracy."""
    correct_ref, correct_var = (a == y_true), (b == y_true)
    flips = {}
    for g, name in enumerate(names):
        mask = index == g
        lost = int((correct_ref & ~correct_var & mask).sum())
        gained = int((~correct_ref & correct_var & mask).sum())
        flipped = int((a != b)[mask].sum())
        flips[name] = {
            "n": int(mask.sum()),
            "flipped": flipped,
            "flip_rate": flipped / max(int(mask.sum()), 1),
            "positive_to_negative": int(((a == 1) & (b == 0) & mask).sum()),
            "negative_to_positive": int(((a == 0) & (b == 1) & mask).sum()),
            "correct_to_wrong": lost,
            "wrong_to_correct": gained,
            "accuracy_delta": (gained - lost) / max(int(mask.sum()), 1),
            "mcnemar_p": float(binomtest(lost, lost + gained, 0.5).pvalue) if lost + gained else 1.0,
        }
    return flips


def paired_comparison(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray, *,
                      privileged_group: str | None = None, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                      min_group_size: int = 1) -> dict:
    """How each gap and signed difference moved from the reference (fp32) to a variant, on the same samples.

    Paired bootstrap over the joint cells (group, label, reference prediction, variant prediction), stratified
    like the single-model one: both models are resampled on the same rows, so the interval is for the
    change, not for two separate runs. Per group, an exact McNemar test says whether accuracy changed.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    a, b = np.asarray(pred_reference, dtype=np.int64), np.asarray(pred_variant, dtype=np.int64)
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    joint = np.bincount(index * 8 + 4 * y_true + 2 * a + b, minlength=8 * len(names)).reshape(len(names), 2, 2, 2)
    usable = _usable(joint.sum(axis=(1, 2, 3)), min_group_size)
    used_names = [str(name) for name, keep in zip(names, usable) if keep]
    reference = _reference_index(used_names, privileged_group, min_group_size)
    joint_used = joint[usable]
    by_label, by_group = _stratified_resamples(joint_used, n_boot, np.random.default_rng(seed))
    point = [_rate_table(_model_cells(joint_used, m), _model_cells(joint_used, m)) for m in (0, 1)]
    boot = [_rate_table(_model_cells(by_label, m), _model_cells(by_group, m)) for m in (0, 1)]
    point_gaps, boot_gaps = [gaps(p, reference) for p in point], [gaps(r, reference) for r in boot]
    gap_changes = {k: _change(point_gaps[1][k] - point_gaps[0][k], boot_gaps[1][k] - boot_gaps[0][k], confidence)[0]
                   for k in GAPS}
    signed = {}
    if reference is not None:
        others = used_names[:reference] + used_names[reference + 1:]
        for rate in RATES:
            delta = _versus(point[1][rate], reference) - _versus(point[0][rate], reference)
            delta_boot = _versus(boot[1][rate], reference) - _versus(boot[0][rate], reference)
            signed[rate] = dict(zip(others, _change(delta, delta_boot, confidence)))
    total_flipped = int((a != b).sum())
    return {"gaps": gap_changes, "signed": signed, "groups": _flips(y_true, a, b, index, [str(n) for n in names]),
            "flip_rate": total_flipped / max(len(a), 1), "flipped": total_flipped}


def rate_rows(y_true: np.ndarray, rate: str) -> np.ndarray:
    """The rows a per-group quantity is measured on: all (accuracy), positives (tpr), negatives (fpr: accuracy
    there is 1 - FPR)."""
    y_true = np.asarray(y_true).astype(bool)
    if rate == "accuracy":
        return np.ones(len(y_true), dtype=bool)
    if rate == "tpr":
        return y_true
    if rate == "fpr":
        return ~y_true
    raise ValueError(f"unknown rate {rate!r}; expected accuracy, tpr or fpr")


def excess_drops(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray,
                 rate: str = "accuracy", shares: dict[str, float] | None = None) -> dict:
    """CEAG's constraint quantity (Hashemizadeh et al. 2024): per group, (acc_ref,g - acc_var,g) - (acc_ref -
    acc_var), the part of a group's accuracy drop beyond the overall drop, on the rows ``rate`` names.

    The overall accuracies are over those rows (or, with ``shares``, the share-weighted mean of the group
    accuracies, as the training-time dual step estimates them). A group without such rows is left out."""
    rows = rate_rows(y_true, rate)
    y, ref, var, groups = (np.asarray(a)[rows] for a in (y_true, pred_reference, pred_variant, groups))
    ref_ok, var_ok = ref == y, var == y
    names = sorted(set(np.asarray(groups).tolist()))
    per_group = {g: (float(ref_ok[groups == g].mean()), float(var_ok[groups == g].mean()), int((groups == g).sum()))
                 for g in names}
    if shares is None:
        overall_ref, overall_var = float(ref_ok.mean()), float(var_ok.mean())
    else:
        overall_ref = sum(shares[g] * per_group[g][0] for g in names)
        overall_var = sum(shares[g] * per_group[g][1] for g in names)
    out = {g: {"n": n, "reference": a, "variant": b, "excess_drop": (a - b) - (overall_ref - overall_var)}
           for g, (a, b, n) in per_group.items()}
    return {"rate": rate, "overall_drop": overall_ref - overall_var, "groups": out,
            "max_excess_drop": max((v["excess_drop"] for v in out.values()), default=None)}
