"""Balancing Act's quantities (Hashemizadeh et al. 2024) for one compressed variant against fp32, on the same rows:
per group the accuracy DROP (fp32 accuracy minus the variant's), the overall drop, each group's EXCESS drop (its
drop minus the overall drop), the largest excess drop, and the quantiles and spread of the drops across groups.

Only correctness matters (was each row right under fp32, under the variant), so any target works, binary or
multi-class, and any grouping: the classes themselves give the per-class block ("Balancing Act" on CIFAR-100).

Intervals, each exact at a handful of flipped rows (never zero width at 0 flips):

- a group's drop and the overall drop: :func:`~fairquant.fairness.paired_bounds.rate_change` on the rows that
  went right -> wrong and wrong -> right (exact McNemar p; the interval excludes 0 exactly when it rejects);
- a group's excess drop is (1 - w) (drop_g - drop_rest), w the group's share of rows: a function of two
  independent strata, the group's and the other rows' joint (fp32 right?, variant right?) cells, so it gets the
  exact-beta Dirichlet bounds of :func:`~fairquant.fairness.paired_bounds.change_bounds` on those 2 x 4 cells (it
  is linear in them: no kink to profile);
- the largest drop and excess drop, the quantiles and the range (max - min) of the drops: from per-group intervals
  made simultaneous by Bonferroni (each at 1 - alpha / G). Each of these is monotone in every group's value, so
  when all G intervals hold, the statistic lies between its values at the intervals' ends; the range's ends are
  max(0, max low - min high) and max high - min low. The standard deviation is given as a point.
"""

from __future__ import annotations

import math

import numpy as np

from fairquant.fairness.counts import usable_groups
from fairquant.fairness.paired_bounds import METHOD, change_bounds, rate_change

QUANTILES = (0.1, 0.5, 0.9)
EXCESS_METHOD = (METHOD + "; strata: the group's rows and all other rows, cells (fp32 right?, variant right?); "
                 "excess = (1 - w)(drop_group - drop_rest)")
SIMULTANEOUS = ("from the groups' intervals made simultaneous by Bonferroni (each at 1 - alpha/G); the statistic is "
                "monotone in every group's value, so it lies between its values at the ends")
_DISCORDANT = np.array([[False, True, True, False]] * 2)  # cells 2 * fp32_right + variant_right: 01, 10 disagree
_MIN_TAIL_DRAWS = 5  # posterior draws beyond each end of a Bonferroni excess interval, at least


def _correctness_cells(ref_ok: np.ndarray, var_ok: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(4,) counts of (fp32 wrong & variant wrong, wrong -> right, right -> wrong, both right) among ``mask``."""
    return np.bincount(2 * ref_ok[mask] + var_ok[mask], minlength=4)


def _excess_statistic(strata: np.ndarray) -> np.ndarray:
    """(..., 2 strata (group, rest), 4 cells) -> (..., 1): the group's drop minus the drop over all rows."""
    n = strata.sum(axis=-1)
    drop = strata[..., 2] - strata[..., 1]  # right -> wrong minus wrong -> right
    with np.errstate(invalid="ignore", divide="ignore"):
        group = drop[..., 0] / n[..., 0]
        overall = drop.sum(axis=-1) / n.sum(axis=-1)
    return (group - overall)[..., None]


def _as_drop(change: dict) -> dict:
    """A rate change (variant minus fp32) turned into a drop (fp32 minus variant)."""
    return {"value": 0.0 - change["delta"], "ci_low": 0.0 - change["ci_high"], "ci_high": 0.0 - change["ci_low"],
            "p_value": change["p_value"], "interval_method": change["interval_method"]}


def _drop(cells: np.ndarray, *, n_draws: int, confidence: float, rng: np.random.Generator) -> dict:
    return _as_drop(rate_change(int(cells[2]), int(cells[1]), int(cells.sum()), n_draws=n_draws,
                                confidence=confidence, rng=rng))


def _excess(strata: np.ndarray, *, n_draws: int, confidence: float, rng: np.random.Generator) -> dict:
    change = change_bounds(strata, _excess_statistic, _DISCORDANT, n_draws=n_draws, confidence=confidence, rng=rng)[0]
    return {"value": change["delta"], "ci_low": change["ci_low"], "ci_high": change["ci_high"],
            "p_value": change["p_value"], "interval_method": EXCESS_METHOD}


def _bounded(value: float, low: float, high: float, method: str, **extra) -> dict:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high), "interval_method": method, **extra}


def _aggregates(names: list[str], drops: np.ndarray, excess: np.ndarray, drop_ends: np.ndarray,
                excess_ends: np.ndarray) -> dict:
    """Largest drop and excess drop (and which group), quantiles and spread of the drops, from the points and the
    simultaneous intervals (G, 2)."""
    if not names:
        return {"max_drop": None, "max_excess_drop": None, "drop_quantiles": {}, "drop_spread": None}
    worst, worst_excess = int(np.argmax(drops)), int(np.argmax(excess))
    low, high = drop_ends[:, 0], drop_ends[:, 1]
    return {
        "max_drop": _bounded(drops[worst], low.max(), high.max(), SIMULTANEOUS, group=names[worst]),
        "max_excess_drop": _bounded(excess[worst_excess], excess_ends[:, 0].max(), excess_ends[:, 1].max(),
                                    SIMULTANEOUS, group=names[worst_excess]),
        "drop_quantiles": {f"q{round(100 * q)}": _bounded(np.quantile(drops, q), np.quantile(low, q),
                                                          np.quantile(high, q), SIMULTANEOUS) for q in QUANTILES},
        "drop_spread": {"std": float(np.std(drops)),
                        "range": _bounded(drops.max() - drops.min(), max(0.0, low.max() - high.min()),
                                          high.max() - low.min(), SIMULTANEOUS)},
    }


def balancing_act(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray, *,
                  n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """Per group (any labels; binary or multi-class predictions) the accuracy drop from ``pred_reference`` (fp32) to
    ``pred_variant`` and its excess over the overall drop, with intervals; the largest, quantiles and spread over the
    groups of at least ``min_group_size`` rows (module docstring). ``n_boot`` is the number of posterior draws."""
    y_true = np.asarray(y_true)
    ref_ok = (np.asarray(pred_reference) == y_true).astype(np.int64)
    var_ok = (np.asarray(pred_variant) == y_true).astype(np.int64)
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    names = [str(name) for name in names]
    rng = np.random.default_rng(seed)
    everyone = _correctness_cells(ref_ok, var_ok, np.ones(len(y_true), dtype=bool))
    cells = np.stack([_correctness_cells(ref_ok, var_ok, index == g) for g in range(len(names))])
    usable = usable_groups(cells.sum(axis=1), min_group_size)
    alpha, used = 1 - confidence, int(usable.sum())
    joint_confidence = 1 - alpha / max(used, 1)
    joint_draws = max(n_boot, math.ceil(_MIN_TAIL_DRAWS / ((1 - joint_confidence) / 2)))
    options = {"n_draws": n_boot, "confidence": confidence, "rng": rng}
    joint = {"n_draws": n_boot, "confidence": joint_confidence, "rng": rng}  # rate_change integrates the tails
    out, drop_ends, excess_ends = {}, [], []
    for g, name in enumerate(names):
        strata = np.stack([cells[g], everyone - cells[g]])
        n = int(cells[g].sum())
        out[name] = {"n": n, "in_aggregates": bool(usable[g]),
                     "reference_accuracy": float((cells[g][2] + cells[g][3]) / n),
                     "variant_accuracy": float((cells[g][1] + cells[g][3]) / n),
                     "right_to_wrong": int(cells[g][2]), "wrong_to_right": int(cells[g][1]),
                     "drop": _drop(cells[g], **options), "excess_drop": _excess(strata, **options)}
        if usable[g]:
            both = _drop(cells[g], **joint), _excess(strata, **(joint | {"n_draws": joint_draws}))
            drop_ends.append((both[0]["ci_low"], both[0]["ci_high"]))
            excess_ends.append((both[1]["ci_low"], both[1]["ci_high"]))
    kept = [name for name, keep in zip(names, usable) if keep]
    total = int(everyone.sum())
    return {
        "confidence": confidence,
        "n": total,
        "reference_accuracy": float((everyone[2] + everyone[3]) / max(total, 1)),
        "variant_accuracy": float((everyone[1] + everyone[3]) / max(total, 1)),
        "overall_drop": _drop(everyone, **options),
        "groups": out,
        **_aggregates(kept, np.array([out[k]["drop"]["value"] for k in kept]),
                      np.array([out[k]["excess_drop"]["value"] for k in kept]),
                      np.array(drop_ends).reshape(-1, 2), np.array(excess_ends).reshape(-1, 2)),
    }
