"""Group fairness metrics with bootstrap confidence intervals and paired tests, on one vocabulary.

Every metric is a function of per-group confusion counts (TN, FP, FN, TP), so the bootstrap draws counts,
not rows: 1000 resamples of 20k rows cost milliseconds. The resample is stratified so that a rate defined
on the test set stays defined in every resample, and a gap is never computed over fewer groups than its
point estimate: TPR and FPR (and equalized odds) come from a resample that keeps each group's positives
and negatives (group x label strata), accuracy and selection rates from one that keeps each group's size.

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
- each group's own rates get Jeffreys intervals (``groups[name]["intervals"]``), the bands of the curves;
- changes against a reference model (fp32) are exact-beta Dirichlet bounds over the joint (reference,
  variant) cells, :mod:`~fairquant.fairness.paired` and :mod:`~fairquant.fairness.paired_bounds` (which says
  why): they hold at a handful of flipped rows, and the interval excludes 0 exactly when p < 1 - confidence.

The counts, rates and gaps themselves live in :mod:`~fairquant.fairness.counts`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import beta

from fairquant.fairness.counts import (  # noqa: F401  (GroupCounts, rates, gaps: re-exported, one vocabulary)
    GAPS,
    RATES,
    GroupCounts,
    gaps,
    rates,
    reference_index,
    usable_groups,
    versus,
)
from fairquant.fairness.paired import paired_comparison  # noqa: F401  (re-exported)
from fairquant.fairness.paired_bounds import METHOD as PAIRED_METHOD
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
    "paired": PAIRED_METHOD,
}


def group_labels(frame: pd.DataFrame, protected: list[str]) -> np.ndarray:
    """One label per row; several protected attributes give intersectional groups ('Male & Black')."""
    if len(protected) == 1:
        return frame[protected[0]].astype(str).to_numpy()
    return frame[protected].astype(str).agg(" & ".join, axis=1).to_numpy()


def _rate_table(by_label: np.ndarray, by_group: np.ndarray) -> dict[str, np.ndarray]:
    """Each rate from the counts whose stratification keeps it defined (pass the same counts twice for points)."""
    label_rates, group_rates = rates(by_label), rates(by_group)
    return {k: (label_rates if k in BY_LABEL else group_rates)[k] for k in RATES}


def _resample_within(strata: np.ndarray, n_boot: int, rng: np.random.Generator,
                     prior: float | np.ndarray = 0.0) -> np.ndarray:
    """(..., K) counts, each leading index a stratum of fixed size -> (n_boot, ..., K) multinomial resamples.

    With ``prior`` 0 this is exactly resampling rows with replacement within each stratum; ``prior``
    pseudo-counts per cell (a scalar or an array shaped like ``strata``) smooth the shares the rows are drawn with.
    """
    totals = strata.sum(axis=-1)
    pseudo = np.broadcast_to(prior, strata.shape).sum(axis=-1)  # a scalar, or one prior per cell (multi-class)
    shares = (strata + prior) / np.maximum(totals + pseudo, 1e-12)[..., None]
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
        log_ratios = lambda v: versus(_log(v), reference)  # noqa: E731
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
        d, low, high = _family(point, boot, (rate,), lambda v: versus(v, reference), confidence)
        out[rate] = {name: {"value": float(d[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
                            "interval_method": _signed_method(rate)} for k, name in enumerate(others)}
    return out


def _successes_and_trials(cells: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per rate, (successes, trials) per group from (G, 4) counts (tn, fp, fn, tp)."""
    tn, fp, fn, tp = cells.T
    n = tn + fp + fn + tp
    return {"accuracy": (tn + tp, n), "tpr": (tp, tp + fn), "fpr": (fp, fp + tn), "selection_rate": (tp + fp, n)}


def jeffreys_bands(cells: np.ndarray, confidence: float) -> list[dict[str, list[float | None]]]:
    """Per group, {rate: [low, high]}: the Jeffreys interval, quantiles of Beta(x + 1/2, n - x + 1/2), with
    Brown, Cai & DasGupta's ends (0 when x = 0, 1 when x = n, so the band holds the rate); None where the rate
    is undefined (no rows)."""
    tail, out = (1 - confidence) / 2, [{} for _ in range(len(cells))]
    for rate, (x, n) in _successes_and_trials(np.asarray(cells)).items():
        low = np.where(x > 0, beta.ppf(tail, x + 0.5, n - x + 0.5), 0.0)
        high = np.where(x < n, beta.ppf(1 - tail, x + 0.5, n - x + 0.5), 1.0)
        for g, band in enumerate(out):
            band[rate] = [float(low[g]), float(high[g])] if n[g] > 0 else [None, None]
    return out


def fairness_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, privileged_group: str | None = None,
                     n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """Overall and per-group rates, every gap and signed difference with a bootstrap CI, worst group, collapse.

    Signed differences and disparate impact are taken against ``privileged_group``; without one they are
    left out (an empty ``signed`` block, null disparate impact).
    """
    counts = GroupCounts.from_predictions(y_true, y_pred, groups)
    usable = usable_groups(counts.cells.sum(axis=1), min_group_size)
    cells = counts.cells[usable]
    names = [name for name, keep in zip(counts.names, usable) if keep]
    reference = reference_index(names, privileged_group, min_group_size)
    point = _rate_table(cells, cells)
    boot = _rate_table(*_stratified_resamples(cells, n_boot, np.random.default_rng(seed), JEFFREYS))
    values, intervals = gaps(point, reference), _gap_intervals(point, boot, reference, confidence)
    per_group = rates(counts.cells)
    overall = rates(counts.cells.sum(axis=0, keepdims=True))
    bands = jeffreys_bands(counts.cells, confidence)
    group_accuracy = np.where(usable, per_group["accuracy"], np.nan)
    positive_rate = float(overall["selection_rate"][0])
    return {
        "n": int(counts.cells.sum()),
        "overall": {k: float(overall[k][0]) for k in RATES},
        "groups": {name: {**{k: float(per_group[k][g]) for k in RATES}, "n": int(per_group["n"][g]),
                          "positives": int(per_group["positives"][g]), "in_gaps": bool(usable[g]),
                          "intervals": bands[g]}
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
