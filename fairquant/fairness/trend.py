"""Does a group's damage grow as compression deepens? One answer per curve, from one paired bootstrap.

A curve is a list of points (the bit-widths, clusters or sparsities of one method) of models predicted on the
same test rows as their reference (fp32). Each bootstrap draw resamples those rows once, stratified by group x
label, and recomputes every point's quantity on the same draw, so the draws of the curve's statistic keep the
points' shared rows (they are paired with each other and with the reference), as a curve fitted point by point
would not.

The statistic is the least-squares slope of the quantity (a gap's change vs fp32, or a group's rate) on the
compression depth: bits removed for quantization (``-bits``), clusters removed for k-means, sparsity for pruning
(:data:`DEPTH`), so a positive slope always reads "grows as compression deepens". Spearman's rank correlation is
reported next to it. The verdict comes from the slope's percentile interval: "widens" (the whole interval above 0),
"narrows" (below 0), "no clear trend" (it holds 0), "undefined" (fewer than 3 usable points). A ratio
(:data:`RATIOS`: DP ratio, disparate impact) is fairer the higher it is, so its disparity widens as it falls: its
verdict reads the slope's sign the other way round.

Points whose model is broken are left out of the fit and named (the caller says which and why: collapsed to one
class, or at chance), so a model that stopped working at 2 bits, whose gaps then shrink with its accuracy, does not
read as a narrowing gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from fairquant.fairness.metrics import GAPS, RATES, gaps, rates

# How deep a point compresses, from its x value: larger is deeper.
DEPTH = {"bits": lambda x: -np.asarray(x, float), "clusters": lambda x: -np.log2(np.asarray(x, float)),
         "sparsity": lambda x: np.asarray(x, float)}
DEPTH_UNITS = {"bits": "per bit removed", "clusters": "per halving of the clusters", "sparsity": "per unit sparsity"}
VERDICTS = ("widens", "narrows", "no clear trend", "undefined")
RATIOS = ("dp_ratio", "disparate_impact")  # 1 is parity: a falling ratio is a widening disparity
MIN_POINTS = 3


def slope(depth: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``values`` (..., P) on ``depth`` (P,); NaN where a value is undefined."""
    centred = depth - depth.mean()
    with np.errstate(invalid="ignore"):
        return (values * centred).sum(axis=-1) / (centred ** 2).sum()


def spearman(depth: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of ``values`` (..., P) with ``depth`` (P,); NaN when the values are all tied."""
    depth_ranks = rankdata(depth)
    value_ranks = rankdata(values, axis=-1)
    a = depth_ranks - depth_ranks.mean()
    b = value_ranks - value_ranks.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (b * a).sum(axis=-1) / np.sqrt((a ** 2).sum() * (b ** 2).sum(axis=-1))


def verdict(low: float, high: float, usable: int, *, ratio: bool = False) -> str:
    """From the slope's interval; ``ratio``: the quantity is fairer the higher it is (widens when it falls)."""
    if usable < MIN_POINTS or not (np.isfinite(low) and np.isfinite(high)):
        return "undefined"
    rising, falling = ("narrows", "widens") if ratio else ("widens", "narrows")
    if low > 0:
        return rising
    if high < 0:
        return falling
    return "no clear trend"


def trend_answer(depth: np.ndarray, point: np.ndarray, draws: np.ndarray, confidence: float, *,
                 ratio: bool = False) -> dict:
    """Slope and Spearman of one quantity over a curve: ``point`` (P,), ``draws`` (n_boot, P) on the same points.

    Points with an undefined value are left out; draws in which a kept point is undefined are left out of the
    interval (and counted)."""
    keep = np.isfinite(point)
    depth, point, draws = depth[keep], point[keep], draws[:, keep]
    usable = int(keep.sum())
    out = {"points": usable, "slope": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "spearman": float("nan"), "spearman_ci_low": float("nan"), "spearman_ci_high": float("nan"),
           "draws_used": 0, "verdict": "undefined"}
    if usable < MIN_POINTS or np.ptp(depth) == 0:
        return out
    whole = np.isfinite(draws).all(axis=1)
    tail = (1 - confidence) / 2
    slopes, ranks = slope(depth, draws[whole]), spearman(depth, draws[whole])
    low, high = (np.quantile(slopes, [tail, 1 - tail]) if whole.any() else (np.nan, np.nan))
    ranks = ranks[np.isfinite(ranks)]
    rank_low, rank_high = np.quantile(ranks, [tail, 1 - tail]) if ranks.size else (np.nan, np.nan)
    out.update(slope=float(slope(depth, point)), ci_low=float(low), ci_high=float(high),
               spearman=float(spearman(depth, point)), spearman_ci_low=float(rank_low),
               spearman_ci_high=float(rank_high), draws_used=int(whole.sum()),
               verdict=verdict(float(low), float(high), usable, ratio=ratio))
    return out


def stratified_row_weights(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) counts: each draw resamples the rows with replacement within each stratum (sizes kept)."""
    weights = np.zeros((n_boot, strata.size))
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        weights[:, rows] = rng.multinomial(rows.size, np.full(rows.size, 1 / rows.size), size=n_boot)
    return weights


def _cells(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray, groups: int) -> np.ndarray:
    """(n_boot, G, 4) weighted confusion counts (tn, fp, fn, tp) per group."""
    onehot = np.zeros((y_true.size, groups * 4))
    onehot[np.arange(y_true.size), index * 4 + 2 * y_true + y_pred] = 1
    return (weights @ onehot).reshape(weights.shape[0], groups, 4)


def _stack(values: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    """``values`` stacked on a last axis, or an empty (..., 0) array shaped like ``like`` when there are none."""
    return np.stack(values, axis=-1) if values else np.empty(np.shape(like) + (0,))


def curve_trends(y_true: np.ndarray, reference: np.ndarray, points: Sequence[np.ndarray], x: Sequence[float],
                 groups: np.ndarray, *, axis: str, left_out: Sequence[str | None], privileged_group: str | None,
                 n_boot: int, confidence: float, seed: int) -> dict:
    """The trend of every gap's change vs the reference and of every group's rates over one curve.

    ``points`` are the curve's test predictions in the order of ``x`` (bits, clusters or sparsity, named by
    ``axis``), each on the rows of ``reference``; ``left_out`` gives, per point, why it is left out of the fit
    (None: kept)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    names = [str(n) for n in names]
    reference_index = names.index(privileged_group) if privileged_group in names else None
    kept = [k for k, reason in enumerate(left_out) if reason is None]
    depth = DEPTH[axis](np.asarray(x, float)[kept])
    weights = stratified_row_weights(index * 2 + y_true, n_boot, np.random.default_rng(seed))
    ones = np.ones((1, y_true.size))

    def measured(w: np.ndarray) -> tuple[dict, dict]:
        base = rates(_cells(w, y_true, np.asarray(reference, np.int64), index, len(names)))
        base_gaps = gaps(base, reference_index)
        per_point = [rates(_cells(w, y_true, np.asarray(points[k], np.int64), index, len(names))) for k in kept]
        # Every point left out (all collapsed or at chance): empty (..., 0) arrays, so each answer is "undefined".
        changes = {g: _stack([gaps(r, reference_index)[g] - base_gaps[g] for r in per_point], base_gaps[g])
                   for g in GAPS}
        group_rates = {rate: _stack([r[rate] for r in per_point], base[rate]) for rate in RATES}  # (..., G, P)
        return changes, group_rates

    point_changes, point_rates = measured(ones)
    draw_changes, draw_rates = measured(weights)
    return {
        "axis": axis, "depth": DEPTH_UNITS[axis], "x": [float(v) for v in x],
        "left_out": [{"x": float(x[k]), "reason": reason} for k, reason in enumerate(left_out) if reason is not None],
        "confidence": confidence, "bootstrap": n_boot,
        "method": "least-squares slope on compression depth; percentile interval from one stratified (group x label) "
                  "row bootstrap shared by the reference and every point",
        "gap_changes": {g: trend_answer(depth, point_changes[g][0], draw_changes[g], confidence, ratio=g in RATIOS)
                        for g in GAPS},
        "group_rates": {rate: {name: trend_answer(depth, point_rates[rate][0, gi], draw_rates[rate][:, gi], confidence)
                               for gi, name in enumerate(names)} for rate in RATES},
    }


def gate_by_points(answer: dict, point_changes: Sequence[dict]) -> dict:
    """A trend verdict stands only where one of the curve's kept points shows a change of the same sign whose own
    paired interval (exact-beta bounds, exact McNemar for one group) excludes 0. The row bootstrap behind the slope
    shares the old Wald interval's weakness at a handful of flipped rows (a resample rarely drops all 4 of 4 flips),
    so a curve whose every point is indistinguishable from fp32 is never called a trend."""
    if answer["verdict"] not in ("widens", "narrows", "rises", "falls"):
        return answer
    sign = 1 if answer["slope"] > 0 else -1
    supported = any(c.get("ci_low") is not None and c.get("ci_high") is not None
                    and (c["ci_low"] > 0 if sign > 0 else c["ci_high"] < 0) for c in point_changes)
    if supported:
        return answer
    if not any(c.get("ci_low") is not None and c.get("ci_high") is not None for c in point_changes):
        # e.g. a multi-class accuracy gap over more than 12 groups: its paired changes are points only
        return {**answer, "verdict": "no clear trend",
                "gated": "no kept point's paired change vs fp32 has an interval to support the slope (points only: "
                         "see each point's reason)"}
    return {**answer, "verdict": "no clear trend",
            "gated": "no point's own paired change vs fp32 excludes 0 in the slope's direction"}
