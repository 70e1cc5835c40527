"""Few-flip honest intervals for the verification branch's paired changes (a variant against fp32).

The percentile pair bootstrap (:mod:`~fairquant.fairness.verification_intervals`) re-selects the thresholds in
every resample, which the changes need, but it fails where the two models disagree on few pairs: a race whose
pairs no model flips gets the interval [0, 0], and one with 4 flips can look significant. So each paired change
also gets an exact-beta Dirichlet bound (:mod:`~fairquant.fairness.paired_bounds`) from the pairs' joint
outcomes at the point thresholds, and the reported interval is the HULL of the two: the bootstrap carries the
threshold re-selection, the bound carries few-flip honesty. p is the larger of the two p's.

Joint cells: every pair is correct or not under fp32 and under the variant at its own race and fold's
protocol threshold, cell index 2 x fp32-correct + variant-correct: 0 both wrong, 1 gained, 2 lost, 3 both right;
strata race x fold x genuine, (R, 10, 2, 4) counts. A race's accuracy is the mean of its fold accuracies, so the
statistic of these counts is the protocol's accuracy itself.

- Per race accuracy change: :func:`~fairquant.fairness.paired_bounds.rate_change` on the race's lost and gained
  pairs, p the exact McNemar test. The bound is on the pooled change (gained - lost) / pairs, which equals the
  protocol's change when the race's folds are equal in size (RFW: 600 pairs each).
- verification_accuracy, verification_std and SER changes: :func:`~fairquant.fairness.paired_bounds.change_bounds`
  over all races' cells, the statistic the variant's value minus fp32's from the per-race accuracies.
"""

from __future__ import annotations

import math

import numpy as np

from fairquant.fairness.paired_bounds import METHOD, RATE_METHOD, change_bounds, rate_change
from fairquant.fairness.verification_metrics import skewed_error_ratio
from fairquant.fairness.verification_protocol import N_FOLDS, THRESHOLDS, PairLayout

GAINED, LOST = 1, 2
DISCORDANT = np.array([False, True, True, False])
SPREAD_CHANGES = ("verification_accuracy", "verification_std", "ser")
N_DRAWS = 4000
BOOTSTRAP_METHOD = ("percentile pair bootstrap (thresholds re-chosen per resample; p = 2 min(share <= 0, "
                    "share >= 0))")
HULL_RACE_METHOD = f"hull of the {BOOTSTRAP_METHOD} and the {RATE_METHOD}; p the larger of the two"
HULL_SPREAD_METHOD = (f"hull of the {BOOTSTRAP_METHOD} and the {METHOD} over (fp32, variant) correct cells per "
                      "race x fold x genuine at the point thresholds; p the larger of the two")


def pair_correct(distance: np.ndarray, layout: PairLayout, best: np.ndarray) -> np.ndarray:
    """Per pair, whether the protocol gets it right: accepted (distance < its race and fold's threshold) == genuine.

    ``best``: (R, 10) grid indices of the thresholds, as :func:`batch_statistics` returns for one resample.
    """
    threshold = THRESHOLDS[np.asarray(best)[layout.race, layout.fold]]
    return (distance < threshold) == (layout.genuine == 1)


def joint_cells(reference_correct: np.ndarray, variant_correct: np.ndarray, layout: PairLayout) -> np.ndarray:
    """(R, 10, 2, 4) counts of pairs per race x fold x genuine and joint cell (2 x fp32 right + variant right)."""
    joint = 2 * reference_correct.astype(np.int64) + variant_correct.astype(np.int64)
    code = layout.cell * 4 + joint
    n_races = len(layout.races)
    return np.bincount(code, minlength=n_races * N_FOLDS * 2 * 4).reshape(n_races, N_FOLDS, 2, 4)


def _accuracies(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., R, 10, 2, 4) -> fp32's and the variant's (..., R) protocol accuracies (means of fold accuracies)."""
    per_fold = counts.sum(axis=-2)  # (..., R, 10, 4)
    pairs = per_fold.sum(axis=-1)
    reference = (per_fold[..., 2] + per_fold[..., 3]) / pairs
    variant = (per_fold[..., GAINED] + per_fold[..., 3]) / pairs
    return reference.mean(axis=-1), variant.mean(axis=-1)


def spread_changes(counts: np.ndarray) -> np.ndarray:
    """(..., R, 10, 2, 4) -> (..., 3): the variant's minus fp32's verification_accuracy, std (ddof 0) and SER."""
    reference, variant = _accuracies(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([variant.mean(axis=-1) - reference.mean(axis=-1),
                         variant.std(axis=-1) - reference.std(axis=-1),
                         skewed_error_ratio(variant) - skewed_error_ratio(reference)], axis=-1)


def race_bounds(joint: np.ndarray, *, confidence: float, seed: int) -> list[dict]:
    """Per race, the exact-beta bound and exact McNemar p of its accuracy change (:func:`rate_change`)."""
    rng = np.random.default_rng(seed)
    per_race = joint.sum(axis=(1, 2))  # (R, 4)
    return [rate_change(int(cells[LOST]), int(cells[GAINED]), int(cells.sum()), n_draws=N_DRAWS,
                        confidence=confidence, rng=rng) for cells in per_race]


def spread_bounds(joint: np.ndarray, *, confidence: float, seed: int) -> dict[str, dict]:
    """verification_accuracy, verification_std and SER changes' exact-beta Dirichlet bounds (:func:`change_bounds`)."""
    discordant = np.broadcast_to(DISCORDANT, joint.shape)
    bounds = change_bounds(joint, spread_changes, discordant, n_draws=N_DRAWS, confidence=confidence,
                           rng=np.random.default_rng(seed))
    return dict(zip(SPREAD_CHANGES, bounds))


def error_rate_bound(reference_error: np.ndarray, variant_error: np.ndarray, rows: np.ndarray, *,
                     confidence: float, seed: int) -> dict:
    """An error rate's change on ``rows`` (FMR: impostors accepted, FNMR: genuines rejected, both models at one
    shared threshold): the exact-beta bound and exact McNemar p of the variant's rate minus fp32's."""
    error_ref, error_var = reference_error[rows], variant_error[rows]
    return rate_change(int((error_ref & ~error_var).sum()), int((~error_ref & error_var).sum()), int(rows.sum()),
                       n_draws=N_DRAWS, confidence=confidence, rng=np.random.default_rng(seed))


def bootstrap_p(boot: np.ndarray) -> float | None:
    """Percentile bootstrap p: twice the smaller share of defined resamples on either side of 0, capped at 1."""
    defined = boot[~np.isnan(boot)]
    if defined.size == 0:
        return None
    return min(1.0, 2 * min(float(np.mean(defined <= 0)), float(np.mean(defined >= 0))))


def _known(value) -> bool:
    return value is not None and not math.isnan(value)


def hull(low: float | None, high: float | None, p: float | None, bound: dict) -> tuple:
    """The union of the bootstrap interval (low, high, p) and the bound: (low, high, p); p the larger one."""
    lows = [v for v in (low, bound["ci_low"]) if _known(v)]
    highs = [v for v in (high, bound["ci_high"]) if _known(v)]
    ps = [v for v in (p, bound["p_value"]) if _known(v)]
    return (min(lows) if lows else low, max(highs) if highs else high, max(ps) if ps else None)
