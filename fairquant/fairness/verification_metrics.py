"""Disparity over races of a verification model: statistics of one value per race (last axis), for any
leading batch axes (resamples).

Over races: ``verification_accuracy`` is the mean of the race accuracies and ``verification_std`` their
standard deviation with ddof 0 (numpy's default, as insightface's fold std; the RFW papers do not say which);
``ser``, the skewed error ratio, is the largest race error over the smallest (error = 1 - accuracy), +inf when
the best race makes no error and undefined (NaN) when no race does.

At one global threshold (:mod:`fairquant.fairness.verification_protocol`), from FMR (impostors accepted /
impostors) and FNMR (genuines rejected / genuines) per race, with weight ``alpha`` (a):

- ``fmr_ratio``, ``fnmr_ratio``: max / min over races (+inf when the smallest is 0, undefined when all are);
- FDR = 1 - [a max|dFMR| + (1-a) max|dFNMR|], the maxima over pairs of races;
- IR = (max/min FMR)^a (max/min FNMR)^(1-a), +inf when a race makes no error of a kind;
- GARBE = a G(FMR) + (1-a) G(FNMR), G the Gini coefficient with its small-sample factor,
  G(x) = n/(n-1) sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)), 0 when all x are equal.

All three as Howard et al. 2022, "Evaluating proposed fairness models for face recognition algorithms"
(arXiv:2203.05051), which proposes GARBE and reviews FDR (de Freitas Pereira & Marcel) and IR (NIST).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _spread(values: np.ndarray) -> np.ndarray:
    return values.max(axis=-1) - values.min(axis=-1)


def max_over_min(values) -> np.ndarray:
    """Largest over smallest along the last axis: +inf when only the smallest is 0, NaN when all are 0."""
    values = np.asarray(values, dtype=np.float64)
    high, low = values.max(axis=-1), values.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(low > 0, high / np.where(low > 0, low, 1.0), np.where(high > 0, np.inf, np.nan))


def skewed_error_ratio(accuracies) -> np.ndarray:
    """SER = max error / min error over the groups (last axis), error = 1 - accuracy; see ``max_over_min``."""
    return max_over_min(1.0 - np.asarray(accuracies, dtype=np.float64))


def gini(values) -> np.ndarray:
    """Gini coefficient along the last axis with Howard et al.'s small-sample factor n/(n-1); 0 when all are
    equal (zeros included), NaN for fewer than two groups."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        return np.full(x.shape[:-1], np.nan)
    total = np.abs(x[..., :, None] - x[..., None, :]).sum(axis=(-2, -1))
    mean = x.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, n / (n - 1) * total / (2 * n**2 * np.where(total > 0, mean, 1.0)), 0.0)


def fairness_discrepancy_rate(fmr, fnmr, alpha: float = 0.5) -> np.ndarray:
    """FDR = 1 - [alpha max|dFMR| + (1 - alpha) max|dFNMR|] over pairs of groups (last axis)."""
    fmr, fnmr = np.asarray(fmr, dtype=np.float64), np.asarray(fnmr, dtype=np.float64)
    return 1.0 - (alpha * _spread(fmr) + (1 - alpha) * _spread(fnmr))


def inequity_rate(fmr, fnmr, alpha: float = 0.5) -> np.ndarray:
    """IR = (max/min FMR)^alpha (max/min FNMR)^(1 - alpha) over groups (last axis); +inf when a group has no
    errors of a kind, NaN when no group has."""
    with np.errstate(invalid="ignore"):
        return max_over_min(fmr) ** alpha * max_over_min(fnmr) ** (1 - alpha)


def garbe(fmr, fnmr, alpha: float = 0.5) -> np.ndarray:
    """GARBE = alpha G(FMR) + (1 - alpha) G(FNMR), G the ``gini`` over groups (last axis)."""
    return alpha * gini(fmr) + (1 - alpha) * gini(fnmr)


def race_summary(accuracies: Mapping[str, float]) -> dict[str, float]:
    """Mean and std (ddof 0) of the race accuracies and their SER (+inf when the best race makes no error)."""
    values = np.array(list(accuracies.values()), dtype=np.float64)
    return {"verification_accuracy": float(values.mean()), "verification_std": float(values.std()),
            "ser": float(skewed_error_ratio(values))}

