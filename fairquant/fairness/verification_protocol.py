"""insightface's 10-fold verification protocol per race, and one global threshold over the races.

Input everywhere is one entry per pair: ``score`` (cosine similarity of the two L2-normalised embeddings),
``genuine`` (same identity), ``fold`` (0-9; RFW's ``line // 600``) and ``race``.

The protocol is insightface's (``recognition/arcface_torch/eval/verification.py``, ``calculate_roc`` and
``calculate_accuracy``): distance = squared L2 between the normalised embeddings = 2 - 2 cos; thresholds
``np.arange(0, 4, 0.01)``; a pair is "same" when distance < threshold; for each fold, the threshold with the
highest accuracy on the other nine folds is applied to that fold, ties going to the first (smallest) threshold
as ``np.argmax`` does; accuracy is the mean over the folds, its spread their ``np.std`` (ddof 0). insightface
splits the pair index with ``KFold(10, shuffle=False)``, which on RFW's pairs files (ordered by fold) gives the
folds passed here. As RFW is evaluated, it runs per race: one threshold per race and fold.

Per-race thresholds hide disparity that comes from a shared operating point, so one global threshold is also
chosen on folds 0-4 of all races pooled (the highest accuracy or, with ``target_fmr``, the largest threshold
whose pooled FMR is <= the target, i.e. the most accepting operating point that meets it), on insightface's
``calculate_val`` grid ``np.arange(0, 4, 0.001)``, and reported on folds 5-9 per race as FMR and FNMR and over
the races by :mod:`fairquant.fairness.verification_metrics`.

Every statistic is computed for a whole batch of resamples at once (:func:`batch_statistics`): per race, fold
and class, a histogram of the pairs over the threshold grid, whose cumulative sum counts the pairs accepted at
every threshold at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fairquant.errors import FairquantError
from fairquant.fairness.verification_metrics import (
    fairness_discrepancy_rate,
    garbe,
    inequity_rate,
    max_over_min,
    skewed_error_ratio,
)

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface's calculate_roc grid, on the squared L2 distance
GLOBAL_THRESHOLDS = np.arange(0, 4, 0.001)  # insightface's calculate_val grid
N_FOLDS = 10
SELECTION_FOLDS = tuple(range(5))  # choose the global threshold ...
REPORT_FOLDS = tuple(range(5, 10))  # ... and report at it
_SCORE_SLACK = 1e-4  # float32 cosines of unit vectors overshoot [-1, 1] by an ulp or two


# --- inputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairLayout:
    """Validated pair labels: race index (into ``races``, sorted), fold 0-9 and genuine 0/1 per pair."""

    races: tuple[str, ...]
    race: np.ndarray
    fold: np.ndarray
    genuine: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.race.size)

    @property
    def cell(self) -> np.ndarray:
        """race x fold x genuine: the protocol's histogram cells and the bootstrap strata."""
        return (self.race * N_FOLDS + self.fold) * 2 + self.genuine


def _check_lengths(arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        if array.ndim != 1:
            raise FairquantError(f"verification input {name} has shape {array.shape}, expected one value per pair "
                                 "(1-D); flatten it")
    lengths = {name: int(array.size) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise FairquantError(f"verification inputs have mismatched lengths ({found}); pass one entry per pair, "
                             "in the same order, to every array")
    if not next(iter(lengths.values())):
        raise FairquantError("verification inputs are empty; pass the scored pairs (RFW: 6000 per race)")


def _genuine_flags(genuine: np.ndarray) -> np.ndarray:
    if genuine.dtype == bool:
        return genuine.astype(np.int64)
    if np.issubdtype(genuine.dtype, np.number) and np.isin(genuine, (0, 1)).all():
        return genuine.astype(np.int64)
    raise FairquantError(f"genuine must be booleans (same identity or not), found dtype {genuine.dtype} with values "
                         f"{np.unique(genuine)[:5].tolist()}; pass a boolean array")


def _fold_numbers(fold: np.ndarray) -> np.ndarray:
    integral = np.issubdtype(fold.dtype, np.integer) or (
        np.issubdtype(fold.dtype, np.floating) and np.isfinite(fold).all() and (fold == np.round(fold)).all())
    if not integral or fold.min() < 0 or fold.max() >= N_FOLDS:
        raise FairquantError(f"fold must be integers 0-{N_FOLDS - 1} (RFW: pair line // 600 within a race), found "
                             f"{np.unique(fold)[:12].tolist()}; renumber the folds")
    return fold.astype(np.int64)


def pair_layout(genuine: np.ndarray, fold: np.ndarray, race: np.ndarray) -> PairLayout:
    """Check the pair labels: every race has all 10 folds and every fold both genuine and impostor pairs."""
    genuine, fold, race = np.asarray(genuine), np.asarray(fold), np.asarray(race)
    _check_lengths({"genuine": genuine, "fold": fold, "race": race})
    flags, folds = _genuine_flags(genuine), _fold_numbers(fold)
    names, race_index = np.unique(race.astype(str), return_inverse=True)
    layout = PairLayout(tuple(str(n) for n in names), race_index.astype(np.int64), folds, flags)
    counts = np.bincount(layout.cell, minlength=len(names) * N_FOLDS * 2).reshape(len(names), N_FOLDS, 2)
    for r, name in enumerate(layout.races):
        present = np.flatnonzero(counts[r].sum(axis=1))
        if present.size < N_FOLDS:
            raise FairquantError(f"race {name!r} has pairs in folds {present.tolist()}, expected all {N_FOLDS} folds "
                                 f"0-{N_FOLDS - 1} (the protocol is 10-fold); pass every pair of the race")
        for f in range(N_FOLDS):
            if 0 in counts[r, f]:
                missing = "genuine" if counts[r, f, 1] == 0 else "impostor"
                raise FairquantError(f"race {name!r}, fold {f} has no {missing} pairs, so its accuracy and "
                                     "threshold are undefined; pass both kinds of pair in every fold (RFW: 300 each)")
    return layout


def _distance(score: np.ndarray, name: str) -> np.ndarray:
    """Squared L2 distance between unit embeddings, 2 - 2 cos, after checking the scores are cosines."""
    score = np.asarray(score, dtype=np.float64)
    bad = ~np.isfinite(score)
    if bad.any():
        raise FairquantError(f"scores of {name!r} hold {int(bad.sum())} NaN or infinite values (first at pair "
                             f"{int(np.flatnonzero(bad)[0])}); a model with non-finite embeddings cannot be "
                             "verified: fix the model or drop those pairs from every array")
    if score.min() < -1 - _SCORE_SLACK or score.max() > 1 + _SCORE_SLACK:
        raise FairquantError(f"scores of {name!r} range over [{score.min():.4g}, {score.max():.4g}], outside [-1, 1]; "
                             "pass the cosine similarity of the two L2-normalised embeddings")
    return 2.0 - 2.0 * score


def scored_pairs(scores: Mapping[str, np.ndarray], genuine, fold,
                 race) -> tuple[PairLayout, dict[str, np.ndarray]]:
    """The checked pair labels and, per model, each pair's distance (2 - 2 cos)."""
    arrays = {f"score {name!r}": np.asarray(s) for name, s in scores.items()}
    _check_lengths({**arrays, "genuine": np.asarray(genuine), "fold": np.asarray(fold), "race": np.asarray(race)})
    layout = pair_layout(genuine, fold, race)
    return layout, {name: _distance(s, name) for name, s in scores.items()}


@dataclass(frozen=True)
class PairBins:
    """Per pair, the number of grid thresholds <= its distance, k: it is accepted (distance < threshold j) exactly
    when j >= k, so a cumulative sum of a histogram over k counts the accepted pairs at every threshold.

    ``protocol``: race x fold x genuine cell * (K + 1) + k on the protocol grid; ``selection``: genuine * (K + 1) + k
    on the global grid for pairs in the selection folds, one bin past the end for the others; ``global_k``: k on
    the global grid; ``report_cell``: race x genuine for pairs in the report folds, one past the end for the others.
    """

    protocol: np.ndarray
    selection: np.ndarray
    global_k: np.ndarray
    report_cell: np.ndarray

    @classmethod
    def of(cls, distance: np.ndarray, layout: PairLayout) -> "PairBins":
        n_races, width = len(layout.races), GLOBAL_THRESHOLDS.size + 1
        k = np.searchsorted(GLOBAL_THRESHOLDS, distance, side="right")
        selected = np.isin(layout.fold, SELECTION_FOLDS)
        return cls(
            protocol=layout.cell * (THRESHOLDS.size + 1) + np.searchsorted(THRESHOLDS, distance, side="right"),
            selection=np.where(selected, layout.genuine * width + k, 2 * width),
            global_k=k,
            report_cell=np.where(selected, 2 * n_races, layout.race * 2 + layout.genuine),
        )


# --- statistics on a batch of resamples ---------------------------------------------------------------------------


def _histogram_codes(code: np.ndarray, size: int) -> np.ndarray:
    """(B, N) codes in [0, size) -> (B, size) counts per row."""
    offsets = np.arange(code.shape[0])[:, None] * size
    return np.bincount((code + offsets).ravel(), minlength=code.shape[0] * size).reshape(code.shape[0], size)


def _histogram(code: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """(B, N) pair indices -> (B, size) counts of each pair's code within each resample."""
    return _histogram_codes(code[rows], size)


def _protocol(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, R, 10, 2, K+1) counts -> accuracy of each held-out fold (B, R, 10) and its threshold's grid index."""
    accepted = np.cumsum(hist[..., :-1], axis=-1)  # pairs with distance < THRESHOLDS[j]
    pairs = hist.sum(axis=-1)
    correct = accepted[..., 1, :] + (pairs[..., 0, None] - accepted[..., 0, :])  # genuines in + impostors out
    on_other_folds = correct.sum(axis=2, keepdims=True) - correct
    best = on_other_folds.argmax(axis=-1)  # the first maximum, as insightface's np.argmax
    held_out = np.take_along_axis(correct, best[..., None], axis=-1)[..., 0]
    return held_out / pairs.sum(axis=-1), best


def _global_index(hist: np.ndarray, target_fmr: float | None) -> np.ndarray:
    """(B, 2, K+1) counts on the selection folds -> (B,) grid index of the global threshold."""
    accepted = np.cumsum(hist[..., :-1], axis=-1)
    pairs = hist.sum(axis=-1)
    if target_fmr is None:
        return (accepted[:, 1] + pairs[:, 0, None] - accepted[:, 0]).argmax(axis=-1)
    fmr = accepted[:, 0] / pairs[:, 0, None]
    return (fmr <= target_fmr).sum(axis=-1) - 1  # FMR never falls as the threshold grows: the feasible ones lead


def _rates_at(bins: PairBins, rows: np.ndarray, index: np.ndarray,
              n_races: int) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR (B, R) on the report folds of each resample at its grid index ``index`` (B,)."""
    code = bins.report_cell[rows] * 2 + (bins.global_k[rows] <= index[:, None])  # cell x accepted
    counts = _histogram_codes(code, 2 * (2 * n_races + 1))[:, :4 * n_races].reshape(-1, n_races, 2, 2)
    pairs = counts.sum(axis=-1)
    return counts[..., 0, 1] / pairs[..., 0], counts[..., 1, 0] / pairs[..., 1]

def batch_statistics(bins: PairBins, rows: np.ndarray, n_races: int, target_fmr: float | None, alpha: float,
                     reference_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every statistic for a batch of resamples (rows: (B, N) pair indices), each with a leading (B,) axis."""
    b = rows.shape[0]
    coarse = _histogram(bins.protocol, rows, n_races * N_FOLDS * 2 * (THRESHOLDS.size + 1))
    fold_accuracy, best = _protocol(coarse.reshape(b, n_races, N_FOLDS, 2, THRESHOLDS.size + 1))
    accuracy = fold_accuracy.mean(axis=-1)
    width = GLOBAL_THRESHOLDS.size + 1
    index = _global_index(_histogram(bins.selection, rows, 2 * width + 1)[:, :-1].reshape(b, 2, width), target_fmr)
    fmr, fnmr = _rates_at(bins, rows, index, n_races)
    stats = {
        "accuracy": accuracy, "fold_accuracy": fold_accuracy, "best": best,
        "verification_accuracy": accuracy.mean(axis=-1), "verification_std": accuracy.std(axis=-1),
        "ser": skewed_error_ratio(accuracy),
        "global_index": index, "fmr": fmr, "fnmr": fnmr, "fmr_ratio": max_over_min(fmr),
        "fnmr_ratio": max_over_min(fnmr), "fdr": fairness_discrepancy_rate(fmr, fnmr, alpha),
        "ir": inequity_rate(fmr, fnmr, alpha), "garbe": garbe(fmr, fnmr, alpha),
    }
    if reference_index is not None:
        stats["fmr_at_reference"], stats["fnmr_at_reference"] = _rates_at(bins, rows, reference_index, n_races)
    return stats


# --- entry points -----------------------------------------------------------------------------------------------------


def protocol_accuracy(score, genuine, fold, race) -> dict[str, dict]:
    """insightface's 10-fold accuracy per race: accuracy, fold std, and per fold its accuracy and threshold."""
    layout, distances = scored_pairs({"score": score}, genuine, fold, race)
    stats = batch_statistics(PairBins.of(distances["score"], layout), np.arange(layout.n_pairs)[None],
                             len(layout.races), None, 0.5)
    return {name: {"accuracy": float(stats["accuracy"][0, r]),
                   "fold_std": float(stats["fold_accuracy"][0, r].std()),
                   "fold_accuracies": stats["fold_accuracy"][0, r].tolist(),
                   "fold_thresholds": THRESHOLDS[stats["best"][0, r]].tolist()}
            for r, name in enumerate(layout.races)}


def global_threshold(score, genuine, fold, race, *, target_fmr: float | None = None) -> float:
    """The one distance threshold chosen on folds 0-4 of all races pooled (see the module docstring)."""
    layout, distances = scored_pairs({"score": score}, genuine, fold, race)
    stats = batch_statistics(PairBins.of(distances["score"], layout), np.arange(layout.n_pairs)[None],
                             len(layout.races), target_fmr, 0.5)
    return float(GLOBAL_THRESHOLDS[stats["global_index"][0]])


def error_rates_at_threshold(score, genuine, fold, race, threshold: float, *,
                             folds: tuple[int, ...] = REPORT_FOLDS) -> dict[str, dict[str, float]]:
    """Per race, FMR and FNMR on ``folds`` when a pair is accepted at distance (2 - 2 cos) < ``threshold``."""
    layout, distances = scored_pairs({"score": score}, genuine, fold, race)
    accepted = distances["score"] < threshold
    out = {}
    for r, name in enumerate(layout.races):
        rows = (layout.race == r) & np.isin(layout.fold, folds)
        impostor, genuine_rows = rows & (layout.genuine == 0), rows & (layout.genuine == 1)
        out[name] = {"fmr": float(accepted[impostor].mean()), "fnmr": float(1 - accepted[genuine_rows].mean())}
    return out

