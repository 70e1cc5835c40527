"""Confusion counts per group and the rates and gaps they give, for one model or for a batch of resamples.

Every function takes counts shaped (..., G, 4) = (TN, FP, FN, TP) per group, integer or fractional (a
posterior draw of counts), and keeps any leading axes, so one call evaluates a thousand resamples.
Definitions match fairlearn's: a gap is the largest minus the smallest group value; ``eq_odds`` is the larger
of the TPR and FPR gaps; ``dp_ratio`` is the smallest over the largest selection rate. A group whose rate is
undefined (no positives for TPR, no negatives for FPR) is left out of that gap; a gap over fewer than two
groups is undefined (NaN), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairquant.errors import FairquantError

GAPS = ("accuracy_gap", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "dp_ratio", "disparate_impact")
RATES = ("accuracy", "tpr", "fpr", "selection_rate")


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


def versus(values: np.ndarray, reference: int) -> np.ndarray:
    """(..., G) -> (..., G-1) differences r_g - r_reference for every other group g."""
    return np.delete(values, reference, axis=-1) - values[..., reference, None]


def usable_groups(sizes: np.ndarray, min_group_size: int) -> np.ndarray:
    largest = int(sizes.max(initial=0))
    if largest < min_group_size:
        raise FairquantError(f"evaluate.min_group_size is {min_group_size} but the largest group has {largest} test "
                             f"samples, so no group is left for gaps; set evaluate.min_group_size to at most {largest}")
    return sizes >= min_group_size


def reference_index(names: list[str], privileged_group: str | None, min_group_size: int) -> int | None:
    if privileged_group is None:
        return None
    if privileged_group not in names:
        raise FairquantError(f"evaluate.privileged_group is {privileged_group!r}, not one of the groups in gaps "
                             f"{names} (groups under evaluate.min_group_size={min_group_size} are left out); "
                             "set it to one of them")
    return names.index(privileged_group)
