"""Group fairness metrics for a multi-class target (K classes), on the binary vocabulary of
:mod:`~fairquant.fairness.metrics`.

Every rate of class c is the binary rate of the one-vs-rest problem (label == c, prediction == c): recall (TPR),
false positive rate and selection rate, per group; accuracy is the share of rows predicted right. Gaps are
largest minus smallest group value as in the binary case; for a per-class rate the gap is taken per class and the
headline gap is the WORST class (largest gap; smallest ratio for ``dp_ratio`` and disparate impact), named in
``worst_class``, with every class's gap under ``per_class``. ``eq_odds`` per class is fairlearn's
``equalized_odds_difference`` on that class's one-vs-rest labels (the larger of its TPR and FPR gaps).

Intervals are the binary machinery (metrics.py's helpers, reused): counts resampled within strata from
Jeffreys-smoothed shares, simultaneous max-t intervals over a family of pairwise differences, a gap's interval from
the largest distance of any pairwise interval from 0 to the farthest end of any. For the worst-class gap the family
is every class's pairwise differences together, so the worst gap's interval holds the worst gap, and each class's
interval (the same family, sliced) is simultaneous over classes. Strata: per group and true class for recall and
FPR (each group's rows of each class kept), per group for accuracy and selection rates; the smoothing gives each
(group, true class) stratum one pseudo-row, half on the right prediction and half spread over the K - 1 wrong
ones (for K = 2 exactly the binary Jeffreys prior of 1/2 per cell). Accuracy is resampled from each group's
(wrong, right) counts, Jeffreys-smoothed.

**Class as the group** (protected == target, e.g. CIFAR-100's classes as groups in "Balancing Act", per-class
accuracy in "unfairness-in-model-quantization"): every group holds exactly one true class. Then a group's accuracy
is its class's recall, per-class recall has one group only, and one-vs-rest FPR and selection rates compare a
class's own group with groups that never hold it: those gaps are null with a ``reason``, ``class_as_group`` is
true, and ``accuracy_gap`` (largest minus smallest class recall) carries the comparison.
"""

from __future__ import annotations

import numpy as np

from fairquant.errors import FairquantError
from fairquant.fairness.counts import GAPS, rates, reference_index, usable_groups, versus
from fairquant.fairness.counts import gaps as gap_values
from fairquant.fairness.metrics import (
    INTERVAL_METHODS,
    JEFFREYS,
    _family,
    _max_abs_interval,
    _pairwise,
    _resample_within,
    jeffreys_bands,
)

CLASS_RATES = ("tpr", "fpr", "selection_rate")
WORST_IS_SMALLEST = ("dp_ratio", "disparate_impact")
CLASS_AS_GROUP_REASON = ("class as the group (every class sits in one group only): per-class recall has one "
                         "group, and one-vs-rest FPR and selection rates compare a class's own group with groups that "
                         "never hold it, so this gap is degenerate; accuracy_gap (class recall spread) carries it")
_WORST = "; the worst class over one-vs-rest problems, simultaneous over every class's pairwise differences"
_CELLS_PER_CHUNK = 20_000_000  # resampled cells held at once (memory), for many classes and groups


def check_class_labels(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels in 0..K-1 for K = len(classes) >= 2, else a one-line error naming what was found."""
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise FairquantError(f"classes must name at least two distinct classes, got {classes}; fix the class list")
    out = []
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        values = np.asarray(values)
        if values.dtype.kind not in "iu" or (values.size and (values.min() < 0 or values.max() >= len(classes))):
            found = sorted(set(values.tolist()))[:5]
            raise FairquantError(f"{name} must hold class indices 0..{len(classes) - 1} as integers, found "
                                 f"{values.dtype} {found}; re-run predict")
        out.append(values.astype(np.int64))
    return out[0], out[1]


def class_counts(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """Group names and counts (G, K true, K predicted)."""
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    flat = (index * k + y_true) * k + y_pred
    return [str(n) for n in names], np.bincount(flat, minlength=len(names) * k * k).reshape(len(names), k, k)


def one_vs_rest_cells(counts: np.ndarray) -> np.ndarray:
    """(..., G, K, K) counts -> (..., K, G, 4) one-vs-rest confusion cells (tn, fp, fn, tp) of each class."""
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    rows, cols = counts.sum(axis=-1), counts.sum(axis=-2)
    n = rows.sum(axis=-1, keepdims=True)
    fn, fp = rows - tp, cols - tp
    cells = np.stack([n - tp - fn - fp, fp, fn, tp], axis=-1)
    return np.swapaxes(cells, -3, -2)


def is_class_as_group(counts: np.ndarray) -> bool:
    """The target decides the group: every class with rows sits in one group only (protected == target, or a
    coarser grouping of the classes such as CIFAR-100's superclasses). Then each class's one-vs-rest TPR exists in
    one group and its FPR and selection rate compare groups by their class mix. A grouping that crosses the class
    with another attribute (class x sex) is not this: a class's recall differs between its groups."""
    present = counts.sum(axis=-1) > 0  # (G, K)
    classes_present = present.any(axis=0)
    return bool(classes_present.any() and (present[:, classes_present].sum(axis=0) == 1).all())


def _class_prior(counts: np.ndarray) -> np.ndarray:
    """(G, K, K) pseudo-rows: per (group, true class) stratum 1/2 on the right prediction, 1/2 over the wrong ones."""
    k = counts.shape[-1]
    prior = np.full(counts.shape, 0.5 / (k - 1))
    prior[..., np.arange(k), np.arange(k)] = 0.5
    return prior


def _accuracy_of(correct: np.ndarray) -> np.ndarray:
    """(..., G, 2) (wrong, right) counts -> (..., G) accuracy, NaN without rows."""
    zero = np.zeros_like(correct[..., 0])
    return rates(np.stack([zero, correct[..., 0], zero, correct[..., 1]], axis=-1))["accuracy"]


def _resampled_class_rates(counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per rate, (n_boot, K, G) bootstrap values: TPR and FPR from the group x true-class resample, selection rates
    from the group resample (absent true classes get no pseudo-rows), in chunks of resamples to bound memory."""
    prior = _class_prior(counts)
    present = (counts.sum(axis=-1) > 0)[..., None]
    group_prior = np.where(present, prior, 0.0).reshape(counts.shape[0], -1)
    chunk = max(1, _CELLS_PER_CHUNK // max(counts.size, 1))
    sizes = [min(chunk, n_boot - start) for start in range(0, n_boot, chunk)]
    by_label = [rates(one_vs_rest_cells(_resample_within(counts, size, rng, prior))) for size in sizes]
    by_group = [rates(one_vs_rest_cells(_resample_within(counts.reshape(counts.shape[0], -1), size, rng, group_prior)
                                        .reshape((size,) + counts.shape))) for size in sizes]
    return {"tpr": np.concatenate([r["tpr"] for r in by_label]), "fpr": np.concatenate([r["fpr"] for r in by_label]),
            "selection_rate": np.concatenate([r["selection_rate"] for r in by_group])}


def _estimate(value, low, high, method: str | None) -> dict:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high), "interval_method": method}


def _null_gap(reason: str) -> dict:
    return {"value": None, "ci_low": None, "ci_high": None, "interval_method": None, "worst_class": None,
            "per_class": {}, "reason": reason}


def _ends(d: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A max |d| interval per class (rows of a (K, P) family) and over every class (the worst class's)."""
    per_class = np.array([_max_abs_interval(d[c], low[c], high[c]) for c in range(d.shape[0])])
    return per_class, _max_abs_interval(d, low, high)


def _smallest_ratio(d: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """Interval of the smallest ratio to the reference group from log-ratio intervals (binary _gap_intervals' rule)."""
    used = ~np.isnan(d)
    if used.any() and np.isfinite(low[used]).all() and np.isfinite(high[used]).all():
        return float(np.exp(low[used]).min()), float(np.exp(high[used]).min())
    return float("nan"), float("nan")


def _class_gap_intervals(gap: str, point: dict, boot: dict, reference: int | None,
                         confidence: float) -> tuple[np.ndarray, tuple[float, float]]:
    """(K, 2) interval of each class's gap and the worst class's, from ONE family of every class's contrasts (so
    each class's interval is simultaneous over the classes and the worst's holds the worst gap); the binary
    :func:`~fairquant.fairness.metrics._gap_intervals` rules, per class."""
    if gap in ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap"):
        keys = {"tpr_gap": ("tpr",), "fpr_gap": ("fpr",), "eq_odds": ("tpr", "fpr"), "dp_gap": ("selection_rate",)}
        return _ends(*_family(point, boot, keys[gap], _pairwise, confidence))
    with np.errstate(divide="ignore"):
        logged = {"selection_rate": np.log(point["selection_rate"])}, {"selection_rate": np.log(boot["selection_rate"])}
    if gap == "dp_ratio":  # min/max = exp(-max |log ratio|)
        per_class, (low, high) = _ends(*_family(*logged, ("selection_rate",), _pairwise, confidence, None))
        return np.exp(-per_class[:, ::-1]), (float(np.exp(-high)), float(np.exp(-low)))
    classes = point["selection_rate"].shape[0]
    if reference is None:
        return np.full((classes, 2), np.nan), (float("nan"), float("nan"))
    d, low, high = _family(*logged, ("selection_rate",), lambda v: versus(v, reference), confidence, None)
    return np.array([_smallest_ratio(d[c], low[c], high[c]) for c in range(classes)]), _smallest_ratio(d, low, high)


def _class_gap(gap: str, per_class: np.ndarray, ends: np.ndarray, whole: tuple[float, float],
               classes: list[str]) -> dict:
    """The worst class's gap with its interval (``whole``), which class, and every class's gap."""
    defined = np.isfinite(per_class)
    entry = {"value": float("nan"), "ci_low": float(whole[0]), "ci_high": float(whole[1]),
             "interval_method": INTERVAL_METHODS[gap] + _WORST, "worst_class": None}
    if defined.any():
        pick = np.nanargmin if gap in WORST_IS_SMALLEST else np.nanargmax
        worst = int(pick(per_class))
        entry.update(value=float(per_class[worst]), worst_class=classes[worst])
    entry["per_class"] = {c: {"value": float(per_class[k]), "ci_low": float(ends[k, 0]), "ci_high": float(ends[k, 1])}
                          for k, c in enumerate(classes)}
    return entry


def _group_block(counts: np.ndarray, usable: np.ndarray, names: list[str], classes: list[str],
                 confidence: float) -> dict:
    """Per group: n, accuracy with its Jeffreys band, and per class its rows, recall, FPR, selection rate, bands."""
    cells = one_vs_rest_cells(counts)  # (K, G, 4)
    per_class = rates(cells)
    bands = [jeffreys_bands(cells[c], confidence) for c in range(len(classes))]
    correct = np.stack([counts.sum(axis=(1, 2)) - np.trace(counts, axis1=1, axis2=2),
                        np.trace(counts, axis1=1, axis2=2)], axis=-1)
    accuracy = _accuracy_of(correct)
    accuracy_bands = jeffreys_bands(np.stack([np.zeros_like(correct[:, 0]), correct[:, 0], np.zeros_like(correct[:, 0]),
                                              correct[:, 1]], axis=-1), confidence)
    out = {}
    for g, name in enumerate(names):
        out[name] = {
            "n": int(correct[g].sum()), "accuracy": float(accuracy[g]), "in_gaps": bool(usable[g]),
            # one-vs-rest rates are per class (below); the binary keys stay, undefined, for readers of both
            "tpr": float("nan"), "fpr": float("nan"), "selection_rate": float("nan"),
            "intervals": {"accuracy": accuracy_bands[g]["accuracy"]},
            "per_class": {c: {"n": int(counts[g, k].sum()), "tpr": float(per_class["tpr"][k, g]),
                              "fpr": float(per_class["fpr"][k, g]),
                              "selection_rate": float(per_class["selection_rate"][k, g]),
                              "intervals": {r: bands[k][g][r] for r in CLASS_RATES}}
                          for k, c in enumerate(classes)},
        }
    return out


def class_block(counts: np.ndarray, classes: list[str], confidence: float) -> dict:
    """Overall per-class recall (class accuracy) with Jeffreys bands, balanced accuracy and the worst class."""
    total = counts.sum(axis=0)
    right, n = np.diagonal(total), total.sum(axis=1)
    bands = jeffreys_bands(np.stack([np.zeros_like(n), n - right, np.zeros_like(n), right], axis=-1), confidence)
    recall = np.where(n > 0, right / np.maximum(n, 1), np.nan)
    per_class = {c: {"n": int(n[k]), "recall": float(recall[k]), "predicted": int(total[:, k].sum()),
                     "interval": bands[k]["accuracy"]} for k, c in enumerate(classes)}
    defined = np.isfinite(recall)
    worst = int(np.nanargmin(recall)) if defined.any() else None
    return {"names": list(classes), "per_class": per_class,
            "balanced_accuracy": float(np.nanmean(recall)) if defined.any() else float("nan"),
            "worst_class": None if worst is None else classes[worst],
            "worst_class_recall": float("nan") if worst is None else float(recall[worst])}


def _gaps_and_signed(used: np.ndarray, names: list[str], classes: list[str], reference: int | None,
                     class_as_group: bool, *, n_boot: int, confidence: float,
                     rng: np.random.Generator) -> tuple[dict, dict]:
    """Every gap (accuracy; per class and the worst class for the one-vs-rest rates, null with the class as the
    group) and each group's accuracy minus the privileged group's, with their intervals, from (G, K, K) counts."""
    right = np.trace(used, axis1=1, axis2=2)
    correct = np.stack([used.sum(axis=(1, 2)) - right, right], axis=-1)
    point = {"accuracy": _accuracy_of(correct), **{r: rates(one_vs_rest_cells(used))[r] for r in CLASS_RATES}}
    boot = {"accuracy": _accuracy_of(_resample_within(correct, n_boot, rng, JEFFREYS))}
    per_class_gaps = gap_values({**point, "accuracy": np.broadcast_to(point["accuracy"], point["tpr"].shape)},
                                reference)
    accuracy_ends = _max_abs_interval(*_family(point, boot, ("accuracy",), _pairwise, confidence))
    out_gaps = {"accuracy_gap": _estimate(per_class_gaps["accuracy_gap"][0], *accuracy_ends,
                                          INTERVAL_METHODS["accuracy_gap"])}
    if not class_as_group:  # (else the one-vs-rest gaps are null: nothing more to resample, 100 classes stay cheap)
        boot.update(_resampled_class_rates(used, n_boot, rng))
    for gap in GAPS[1:]:
        out_gaps[gap] = (_null_gap(CLASS_AS_GROUP_REASON) if class_as_group else
                         _class_gap(gap, per_class_gaps[gap], *_class_gap_intervals(gap, point, boot, reference,
                                                                                    confidence), classes))
    signed = {}
    if reference is not None:
        d, low, high = _family(point, boot, ("accuracy",), lambda v: versus(v, reference), confidence)
        others = names[:reference] + names[reference + 1:]
        signed["accuracy"] = {name: _estimate(d[k], low[k], high[k], INTERVAL_METHODS["signed_by_group"])
                              for k, name in enumerate(others)}
    return out_gaps, signed


def multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, classes: list[str], *,
                       privileged_group: str | None = None, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                       min_group_size: int = 1) -> dict:
    """:func:`~fairquant.fairness.metrics.fairness_metrics` for K classes (module docstring): same top-level keys,
    per-class rates under ``groups[g]["per_class"]``, worst-class gaps, a ``classes`` block, ``class_as_group``."""
    y_true, y_pred = check_class_labels(y_true, y_pred, classes)
    names, counts = class_counts(y_true, y_pred, groups, len(classes))
    usable = usable_groups(counts.sum(axis=(1, 2)), min_group_size)
    used_names = [n for n, keep in zip(names, usable) if keep]
    reference = reference_index(used_names, privileged_group, min_group_size)
    class_as_group = is_class_as_group(counts)
    out_gaps, signed = _gaps_and_signed(counts[usable], used_names, classes, reference, class_as_group,
                                        n_boot=n_boot, confidence=confidence, rng=np.random.default_rng(seed))
    group_block = _group_block(counts, usable, names, classes, confidence)
    accuracy = np.array([group_block[n]["accuracy"] if usable[g] else np.nan for g, n in enumerate(names)])
    total = counts.sum(axis=0)
    overall_rates = rates(one_vs_rest_cells(total[None])[:, 0])
    return {
        "task": "multiclass",
        "n": int(counts.sum()),
        "overall": {"accuracy": float(np.trace(total) / max(total.sum(), 1)),
                    "per_class": {c: {r: float(overall_rates[r][k]) for r in CLASS_RATES} for k, c in enumerate(classes)}},
        "groups": group_block,
        "classes": class_block(counts, classes, confidence),
        "class_as_group": class_as_group,
        "confidence": confidence,
        "bootstrap": n_boot,
        "privileged_group": privileged_group,
        "gaps": out_gaps,
        "signed": signed,
        "worst_group": names[int(np.nanargmin(accuracy))] if np.isfinite(accuracy).any() else None,
        "worst_group_accuracy": float(np.nanmin(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
        # a model that predicts one class for nearly every row makes every gap look fair: flag it
        "collapsed": bool(total.sum(axis=0).max(initial=0) >= 0.98 * max(total.sum(), 1)),
    }
