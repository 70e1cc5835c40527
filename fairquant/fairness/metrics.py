"""Group fairness metrics with bootstrap confidence intervals and paired tests, on one vocabulary.

Every metric is a function of per-group confusion counts (TN, FP, FN, TP). That makes the bootstrap
exact and fast: resampling n rows with replacement is a multinomial draw over the G x 4 cells, so 1000
resamples of 20k rows cost a few milliseconds instead of minutes. Definitions match fairlearn's:
a gap is the largest minus the smallest group value; ``eq_odds`` is the larger of the TPR and FPR gaps;
``dp_ratio`` is the smallest over the largest selection rate. A group whose rate is undefined (no
positives for TPR, no negatives for FPR) is left out of that gap; a gap over fewer than two groups is
undefined (null in JSON), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

GAPS = ("accuracy_gap", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "dp_ratio", "disparate_impact")
RATES = ("accuracy", "tpr", "fpr", "selection_rate")


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
        return cls(list(names), counts)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Rates per group from (..., G, 4) counts; NaN where undefined."""
    tn, fp, fn, tp = (cells[..., k].astype(float) for k in range(4))
    n = tn + fp + fn + tp
    return {"accuracy": _divide(tn + tp, n), "tpr": _divide(tp, tp + fn), "fpr": _divide(fp, fp + tn),
            "selection_rate": _divide(tp + fp, n), "n": n, "positives": tp + fn}


def _spread(values: np.ndarray) -> np.ndarray:
    """Largest minus smallest over the groups axis, ignoring undefined groups; NaN with < 2 defined."""
    defined = np.isfinite(values)
    enough = defined.sum(axis=-1) >= 2
    high = np.where(defined, values, -np.inf).max(axis=-1)
    low = np.where(defined, values, np.inf).min(axis=-1)
    return np.where(enough, high - low, np.nan)


def gaps(cells: np.ndarray, privileged: int) -> dict[str, np.ndarray]:
    """Every gap from (..., G, 4) counts. ``privileged`` indexes the reference group for disparate impact."""
    r = rates(cells)
    selection = r["selection_rate"]
    defined = np.isfinite(selection)
    high = np.where(defined, selection, -np.inf).max(axis=-1)
    low = np.where(defined, selection, np.inf).min(axis=-1)
    others = np.delete(selection, privileged, axis=-1)
    reference = selection[..., privileged][..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_to_reference = np.where(reference > 0, others / reference, np.nan)
        dp_ratio = np.where((defined.sum(-1) >= 2) & (high > 0), low / np.where(high > 0, high, 1), np.nan)
    defined_ratio = np.isfinite(ratio_to_reference)
    disparate_impact = np.where(defined_ratio.any(-1), np.where(defined_ratio, ratio_to_reference, np.inf).min(-1),
                                np.nan)
    tpr_gap, fpr_gap = _spread(r["tpr"]), _spread(r["fpr"])
    return {
        "accuracy_gap": _spread(r["accuracy"]),
        "tpr_gap": tpr_gap,
        "fpr_gap": fpr_gap,
        "eq_odds": np.fmax(tpr_gap, fpr_gap),  # fmax: one undefined gap leaves the other
        "dp_gap": _spread(selection),
        "dp_ratio": dp_ratio,
        "disparate_impact": disparate_impact,
    }


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size < 0.5 * samples.size:  # undefined in most resamples: no honest interval
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _multinomial_resamples(cells: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Row bootstrap as a multinomial draw over the flattened cells; returns (n_boot, *cells.shape)."""
    flat = cells.reshape(-1).astype(np.int64)
    total = int(flat.sum())
    draws = np.random.default_rng(seed).multinomial(total, flat / total, size=n_boot)
    return draws.reshape((n_boot,) + cells.shape)


def _usable(counts: GroupCounts, min_group_size: int) -> np.ndarray:
    return counts.cells.sum(axis=1) >= min_group_size


def fairness_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000,
                     confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """Overall and per-group rates, every gap with a bootstrap CI, worst group, and collapse."""
    counts = GroupCounts.from_predictions(y_true, y_pred, groups)
    usable = _usable(counts, min_group_size)
    cells = counts.cells[usable]
    names = [name for name, keep in zip(counts.names, usable) if keep]
    privileged = int(np.argmax(cells.sum(axis=1))) if len(names) else 0
    point = gaps(cells, privileged)
    boot = gaps(_multinomial_resamples(cells, n_boot, seed), privileged)
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
        "gaps": {k: {"value": float(point[k]), **dict(zip(("ci_low", "ci_high"), _interval(boot[k], confidence)))}
                 for k in GAPS},
        "privileged_group": names[privileged] if names else None,
        "worst_group": counts.names[int(np.nanargmin(group_accuracy))] if np.isfinite(group_accuracy).any() else None,
        "worst_group_accuracy": float(np.nanmin(group_accuracy)) if np.isfinite(group_accuracy).any() else float("nan"),
        # A model that predicts one class for nearly everything makes every gap look fair: flag it.
        "collapsed": bool(max(positive_rate, 1 - positive_rate) >= 0.98),
    }


def _p_value(deltas: np.ndarray) -> float:
    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        return float("nan")
    return float(min(1.0, 2 * min((finite <= 0).mean(), (finite >= 0).mean())))


def paired_comparison(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray, *,
                      n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """How each gap and group accuracy moved from the reference (fp32) to a variant, on the same samples.

    Paired bootstrap over the joint cells (group, label, reference prediction, variant prediction): both
    models are resampled on the same rows, so the interval is for the change, not for two separate runs.
    Per group, an exact McNemar test on the discordant pairs says whether accuracy changed.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    a, b = np.asarray(pred_reference, dtype=np.int64), np.asarray(pred_variant, dtype=np.int64)
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    joint = np.bincount(index * 8 + 4 * y_true + 2 * a + b, minlength=8 * len(names)).reshape(len(names), 2, 2, 2)
    usable = joint.sum(axis=(1, 2, 3)) >= min_group_size
    joint_used = joint[usable]
    privileged = int(np.argmax(joint_used.sum(axis=(1, 2, 3)))) if usable.any() else 0

    def cells_of(j: np.ndarray, which: int) -> np.ndarray:  # (..., G, 2, 2, 2) -> (..., G, 4)
        per_model = j.sum(axis=-1) if which == 0 else j.sum(axis=-2)
        return per_model.reshape(per_model.shape[:-2] + (4,))

    resampled = _multinomial_resamples(joint_used, n_boot, seed)
    point_ref, point_var = gaps(cells_of(joint_used, 0), privileged), gaps(cells_of(joint_used, 1), privileged)
    boot_ref, boot_var = gaps(cells_of(resampled, 0), privileged), gaps(cells_of(resampled, 1), privileged)
    gap_changes = {}
    for k in GAPS:
        delta = boot_var[k] - boot_ref[k]
        low, high = _interval(delta, confidence)
        gap_changes[k] = {"delta": float(point_var[k] - point_ref[k]), "ci_low": low, "ci_high": high,
                          "p_value": _p_value(delta)}
    correct_ref = (a == y_true)
    correct_var = (b == y_true)
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
    total_flipped = int((a != b).sum())
    return {"gaps": gap_changes, "groups": flips,
            "flip_rate": total_flipped / max(len(a), 1), "flipped": total_flipped}
