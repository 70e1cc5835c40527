"""Face verification metrics: insightface's 10-fold accuracy per race, one global threshold, bootstrap intervals.

Input everywhere is one entry per pair: ``score`` (cosine similarity of the two L2-normalised embeddings),
``genuine`` (same identity), ``fold`` (0-9; RFW's ``line // 600``) and ``race``.

The protocol is insightface's (``recognition/arcface_torch/eval/verification.py``, ``calculate_roc`` and
``calculate_accuracy``): distance = squared L2 between the normalised embeddings = 2 - 2 cos; thresholds
``np.arange(0, 4, 0.01)``; a pair is "same" when distance < threshold; for each fold, the threshold with the
highest accuracy on the other nine folds is applied to that fold, ties going to the first (smallest) threshold
as ``np.argmax`` does; accuracy is the mean over the folds, its spread their ``np.std`` (ddof 0). insightface
splits the pair index with ``KFold(10, shuffle=False)``, which on RFW's pairs files (ordered by fold) gives the
folds passed here. As RFW is evaluated, it runs per race: one threshold per race and fold.

Over races: ``verification_accuracy`` is the mean of the race accuracies and ``verification_std`` their
standard deviation with ddof 0 (numpy's default, as insightface's fold std; the RFW papers do not say which);
``ser``, the skewed error ratio, is the largest race error over the smallest (error = 1 - accuracy), +inf when
the best race makes no error and undefined (NaN) when no race does.

Per-race thresholds hide disparity that comes from a shared operating point, so one global threshold is also
chosen on folds 0-4 of all races pooled (the highest accuracy or, with ``target_fmr``, the largest threshold
whose pooled FMR is <= the target, i.e. the most accepting operating point that meets it), on insightface's
``calculate_val`` grid ``np.arange(0, 4, 0.001)``, and reported on folds 5-9 per race: FMR (impostors
accepted / impostors), FNMR (genuines rejected / genuines), and over the races, with weight ``alpha`` (a):

- ``fmr_ratio``, ``fnmr_ratio``: max / min over races (+inf when the smallest is 0, undefined when all are);
- FDR = 1 - [a max|dFMR| + (1-a) max|dFNMR|], the maxima over pairs of races;
- IR = (max/min FMR)^a (max/min FNMR)^(1-a), +inf when a race makes no error of a kind;
- GARBE = a G(FMR) + (1-a) G(FNMR), G the Gini coefficient with its small-sample factor,
  G(x) = n/(n-1) sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)), 0 when all x are equal.

All three as Howard et al. 2022, "Evaluating proposed fairness models for face recognition algorithms"
(arXiv:2203.05051), which proposes GARBE and reviews FDR (de Freitas Pereira & Marcel) and IR (NIST).

Intervals are percentile bootstrap intervals. A resample draws pairs with replacement within race x fold x
genuine, so every fold keeps its genuine and impostor counts and every accuracy stays defined, and recomputes
everything, thresholds included. Draws are pair indices, so a variant and the reference (fp32) are resampled on
the same pairs and a change gets a paired interval. The ends are order statistics (lower end rounded down, upper
rounded up, no interpolation), so a ratio that is infinite in some resamples stays exact. It is vectorised: per
race, fold and class, a histogram of the pairs over the threshold grid, whose cumulative sum counts the pairs
accepted at every threshold at once, for a whole batch of resamples.

The report is JSON-ready: plain floats, and None for a value that is not finite, named in ``nonfinite``
("inf", "-inf" or "undefined").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from fairquant.errors import FairquantError

__all__ = [
    "GLOBAL_THRESHOLDS", "N_FOLDS", "REPORT_FOLDS", "SELECTION_FOLDS", "THRESHOLDS", "PairLayout",
    "error_rates_at_threshold", "fairness_discrepancy_rate", "garbe", "gini", "global_threshold", "inequity_rate",
    "max_over_min", "pair_layout", "protocol_accuracy", "race_summary", "resampled_accuracies",
    "skewed_error_ratio", "stratified_resample_indices", "verification_report",
]

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface's calculate_roc grid, on the squared L2 distance
GLOBAL_THRESHOLDS = np.arange(0, 4, 0.001)  # insightface's calculate_val grid
N_FOLDS = 10
SELECTION_FOLDS = tuple(range(5))  # choose the global threshold ...
REPORT_FOLDS = tuple(range(5, 10))  # ... and report at it
_CHUNK_CELLS = 4_000_000  # histogram cells per batch of resamples: about 32 MB per array, whatever the data size
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


def _inputs(scores: Mapping[str, np.ndarray], genuine, fold, race) -> tuple[PairLayout, dict[str, np.ndarray]]:
    arrays = {f"score {name!r}": np.asarray(s) for name, s in scores.items()}
    _check_lengths({**arrays, "genuine": np.asarray(genuine), "fold": np.asarray(fold), "race": np.asarray(race)})
    layout = pair_layout(genuine, fold, race)
    return layout, {name: _distance(s, name) for name, s in scores.items()}


@dataclass(frozen=True)
class _Bins:
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
    def of(cls, distance: np.ndarray, layout: PairLayout) -> "_Bins":
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


def _rates_at(bins: _Bins, rows: np.ndarray, index: np.ndarray, n_races: int) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR (B, R) on the report folds of each resample at its grid index ``index`` (B,)."""
    code = bins.report_cell[rows] * 2 + (bins.global_k[rows] <= index[:, None])  # cell x accepted
    counts = _histogram_codes(code, 2 * (2 * n_races + 1))[:, :4 * n_races].reshape(-1, n_races, 2, 2)
    pairs = counts.sum(axis=-1)
    return counts[..., 0, 1] / pairs[..., 0], counts[..., 1, 0] / pairs[..., 1]


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


def _statistics(bins: _Bins, rows: np.ndarray, n_races: int, target_fmr: float | None, alpha: float,
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


# --- resampling ----------------------------------------------------------------------------------------------------


def _chunk_size(n_races: int, n_pairs: int) -> int:
    """Resamples per batch: bounds the largest arrays, the protocol histogram and the (B, N) index arrays."""
    return max(1, _CHUNK_CELLS // max(n_races * N_FOLDS * 2 * (THRESHOLDS.size + 1), n_pairs))


def _resample_chunks(layout: PairLayout, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches of (b, N) pair indices, each row a resample with replacement within race x fold x genuine."""
    cell = layout.cell
    order = np.argsort(cell, kind="stable")
    sizes = np.bincount(cell)
    starts = np.cumsum(sizes) - sizes
    slot_start, slot_size = starts[cell[order]], sizes[cell[order]]  # slot i keeps the stratum of pair order[i]
    chunk = _chunk_size(len(layout.races), layout.n_pairs)
    for first in range(0, n_boot, chunk):
        draws = rng.integers(0, slot_size, size=(min(chunk, n_boot - first), layout.n_pairs))
        yield order[slot_start + draws]


def stratified_resample_indices(genuine, fold, race, *, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) pair indices, the resamples ``verification_report`` draws with the same seed."""
    layout = pair_layout(genuine, fold, race)
    chunks = list(_resample_chunks(layout, n_boot, np.random.default_rng(seed)))
    return np.concatenate(chunks) if chunks else np.zeros((0, layout.n_pairs), dtype=np.int64)


_BOOTSTRAPPED = ("accuracy", "verification_accuracy", "verification_std", "ser", "fmr", "fnmr", "fmr_ratio",
                 "fnmr_ratio", "fdr", "ir", "garbe", "fmr_at_reference", "fnmr_at_reference")


def _bootstrap(bins: Mapping[str, _Bins], layout: PairLayout, reference: str, n_boot: int, seed: int,
               target_fmr: float | None, alpha: float) -> dict[str, dict[str, np.ndarray]]:
    """Per model, each statistic over the same resamples; a variant's rates also at the reference's threshold."""
    n_races = len(layout.races)
    batches: dict[str, list[dict]] = {name: [] for name in bins}
    # No resamples still runs one empty batch, so every statistic has its (0, ...) shape.
    chunks = _resample_chunks(layout, n_boot, np.random.default_rng(seed)) if n_boot else [
        np.zeros((0, layout.n_pairs), dtype=np.int64)]
    for rows in chunks:
        ref = _statistics(bins[reference], rows, n_races, target_fmr, alpha)
        for name, model in bins.items():
            stats = ref if name == reference else _statistics(model, rows, n_races, target_fmr, alpha,
                                                              ref["global_index"])
            batches[name].append({k: v for k, v in stats.items() if k in _BOOTSTRAPPED})
    return {name: {k: np.concatenate([batch[k] for batch in parts]) for k in parts[0]}
            for name, parts in batches.items()}


# --- lower-level entry points --------------------------------------------------------------------------------------


def protocol_accuracy(score, genuine, fold, race) -> dict[str, dict]:
    """insightface's 10-fold accuracy per race: accuracy, fold std, and per fold its accuracy and threshold."""
    layout, distances = _inputs({"score": score}, genuine, fold, race)
    stats = _statistics(_Bins.of(distances["score"], layout), np.arange(layout.n_pairs)[None], len(layout.races),
                        None, 0.5)
    return {name: {"accuracy": float(stats["accuracy"][0, r]),
                   "fold_std": float(stats["fold_accuracy"][0, r].std()),
                   "fold_accuracies": stats["fold_accuracy"][0, r].tolist(),
                   "fold_thresholds": THRESHOLDS[stats["best"][0, r]].tolist()}
            for r, name in enumerate(layout.races)}


def race_summary(accuracies: Mapping[str, float]) -> dict[str, float]:
    """Mean and std (ddof 0) of the race accuracies and their SER (+inf when the best race makes no error)."""
    values = np.array(list(accuracies.values()), dtype=np.float64)
    return {"verification_accuracy": float(values.mean()), "verification_std": float(values.std()),
            "ser": float(skewed_error_ratio(values))}


def resampled_accuracies(score, genuine, fold, race, rows: np.ndarray) -> np.ndarray:
    """(B, R) protocol accuracy per race, thresholds re-chosen, on each resample of pair indices ``rows`` (B, N)."""
    layout, distances = _inputs({"score": score}, genuine, fold, race)
    bins, rows = _Bins.of(distances["score"], layout), np.asarray(rows, dtype=np.int64)
    chunk = _chunk_size(len(layout.races), layout.n_pairs)
    parts = [_statistics(bins, rows[i:i + chunk], len(layout.races), None, 0.5)["accuracy"]
             for i in range(0, rows.shape[0], chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, len(layout.races)))


def global_threshold(score, genuine, fold, race, *, target_fmr: float | None = None) -> float:
    """The one distance threshold chosen on folds 0-4 of all races pooled (see the module docstring)."""
    layout, distances = _inputs({"score": score}, genuine, fold, race)
    stats = _statistics(_Bins.of(distances["score"], layout), np.arange(layout.n_pairs)[None], len(layout.races),
                        target_fmr, 0.5)
    return float(GLOBAL_THRESHOLDS[stats["global_index"][0]])


def error_rates_at_threshold(score, genuine, fold, race, threshold: float, *,
                             folds: tuple[int, ...] = REPORT_FOLDS) -> dict[str, dict[str, float]]:
    """Per race, FMR and FNMR on ``folds`` when a pair is accepted at distance (2 - 2 cos) < ``threshold``."""
    layout, distances = _inputs({"score": score}, genuine, fold, race)
    accepted = distances["score"] < threshold
    out = {}
    for r, name in enumerate(layout.races):
        rows = (layout.race == r) & np.isin(layout.fold, folds)
        impostor, genuine_rows = rows & (layout.genuine == 0), rows & (layout.genuine == 1)
        out[name] = {"fmr": float(accepted[impostor].mean()), "fnmr": float(1 - accepted[genuine_rows].mean())}
    return out


# --- the report ----------------------------------------------------------------------------------------------------


def _interval(boot: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    """Percentile interval over the resamples where the statistic is defined, by order statistics."""
    if boot.size == 0:
        return None, None, 0
    defined = np.sort(boot[~np.isnan(boot)])
    undefined = int(boot.size - defined.size)
    if defined.size == 0:
        return math.nan, math.nan, undefined
    tail, last = (1 - confidence) / 2, defined.size - 1
    return float(defined[math.floor(tail * last)]), float(defined[math.ceil((1 - tail) * last)]), undefined


def _json_fields(fields: Mapping[str, float | None]) -> dict:
    """Floats as they are, non-finite ones as None, named in ``nonfinite``."""
    out: dict = {}
    nonfinite = {}
    for key, value in fields.items():
        if value is not None and not math.isfinite(value):
            nonfinite[key] = "undefined" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            value = None
        out[key] = value
    return out | {"nonfinite": nonfinite}


def _estimate(value, boot: np.ndarray, confidence: float) -> dict:
    low, high, undefined = _interval(np.asarray(boot, dtype=np.float64), confidence)
    return _json_fields({"value": float(value), "ci_low": low, "ci_high": high}) | {"undefined_resamples": undefined}


def _change(delta, boot: np.ndarray, confidence: float) -> dict:
    low, high, undefined = _interval(np.asarray(boot, dtype=np.float64), confidence)
    known = low is not None and not (math.isnan(low) or math.isnan(high))
    out = _json_fields({"delta": float(delta), "ci_low": low, "ci_high": high})
    return out | {"excludes_zero": bool(low > 0 or high < 0) if known else None, "undefined_resamples": undefined}


def _threshold_fields(index: int) -> dict:
    distance = round(float(GLOBAL_THRESHOLDS[index]), 3)  # the grid's value, without its float noise
    return {"distance": distance, "cosine": round(1 - distance / 2, 4)}  # accepted when cos > 1 - distance / 2


def _race_details(point: dict, layout: PairLayout) -> dict:
    out = {}
    for r, name in enumerate(layout.races):
        rows = layout.race == r
        out[name] = {"accuracy": float(point["accuracy"][0, r]), "fold_std": float(point["fold_accuracy"][0, r].std()),
                     "fold_accuracies": point["fold_accuracy"][0, r].tolist(),
                     # rounded: 1.64, not the grid's 1.6400000000000001
                     "fold_thresholds": np.round(THRESHOLDS[point["best"][0, r]], 2).tolist(),
                     "pairs": int(rows.sum()), "genuine": int(layout.genuine[rows].sum())}
    return out


def _global_block(point: dict, boot: dict, layout: PairLayout, distance: np.ndarray, confidence: float) -> dict:
    index = int(point["global_index"][0])
    selection = np.isin(layout.fold, SELECTION_FOLDS)
    accepted = distance < GLOBAL_THRESHOLDS[index]
    return {
        **_threshold_fields(index),
        "selection_fmr": float(accepted[selection & (layout.genuine == 0)].mean()),
        "selection_fnmr": float(1 - accepted[selection & (layout.genuine == 1)].mean()),
        "races": {name: {k: _estimate(point[k][0, r], boot[k][:, r], confidence) for k in ("fmr", "fnmr")}
                  for r, name in enumerate(layout.races)},
        **{k: _estimate(point[k][0], boot[k], confidence) for k in ("fmr_ratio", "fnmr_ratio", "fdr", "ir", "garbe")},
    }


def _summary(point: dict, boot: dict, races: tuple[str, ...], confidence: float) -> dict:
    out = {f"acc_{name}": _estimate(point["accuracy"][0, r], boot["accuracy"][:, r], confidence)
           for r, name in enumerate(races)}
    return out | {k: _estimate(point[k][0], boot[k], confidence)
                  for k in ("verification_accuracy", "verification_std", "ser")}


def _changes(point: dict, ref: dict, boot: dict, ref_boot: dict, races: tuple[str, ...], confidence: float) -> dict:
    with np.errstate(invalid="ignore"):  # inf - inf (SER infinite in both): undefined
        out = {f"acc_{name}": _change(point["accuracy"][0, r] - ref["accuracy"][0, r],
                                      boot["accuracy"][:, r] - ref_boot["accuracy"][:, r], confidence)
               for r, name in enumerate(races)}
        return out | {k: _change(point[k][0] - ref[k][0], boot[k] - ref_boot[k], confidence)
                      for k in ("verification_accuracy", "verification_std", "ser")}


def _at_reference(point: dict, ref: dict, boot: dict, ref_boot: dict, races: tuple[str, ...],
                  confidence: float) -> dict:
    races_out = {}
    for r, name in enumerate(races):
        entry = {}
        for rate in ("fmr", "fnmr"):
            mine, theirs = f"{rate}_at_reference", rate
            entry[rate] = _estimate(point[mine][0, r], boot[mine][:, r], confidence)
            entry[f"{rate}_change"] = _change(point[mine][0, r] - ref[theirs][0, r],
                                              boot[mine][:, r] - ref_boot[theirs][:, r], confidence)
        races_out[name] = entry
    return {**_threshold_fields(int(ref["global_index"][0])), "races": races_out}


def _check_options(scores: Mapping, reference: str, bootstrap: int, confidence: float, target_fmr: float | None,
                   alpha: float) -> None:
    if reference not in scores:
        raise FairquantError(f"reference model {reference!r} is not among the scored models {sorted(scores)}; "
                             "score it too, or set the reference to one of them")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise FairquantError(f"bootstrap must be a whole number of resamples >= 0, found {bootstrap!r}; use e.g. 1000")
    if not 0 < confidence < 1:
        raise FairquantError(f"confidence must lie strictly between 0 and 1, found {confidence!r}; use e.g. 0.95")
    if target_fmr is not None and not 0 <= target_fmr <= 1:
        raise FairquantError(f"target_fmr must lie in [0, 1] or be null, found {target_fmr!r}; use e.g. 0.001")
    if not 0 <= alpha <= 1:
        raise FairquantError(f"alpha (the FMR weight of FDR, IR and GARBE) must lie in [0, 1], found {alpha!r}")


def verification_report(scores: Mapping[str, np.ndarray], genuine, fold, race, *, reference: str,
                        bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                        target_fmr: float | None = None, alpha: float = 0.5) -> dict:
    """Everything above for each model in ``scores`` (name -> per-pair cosine), as JSON-ready nested dicts.

    Per variant: ``summary`` (acc_<race>, verification_accuracy, verification_std, ser with intervals),
    ``races`` (fold details), ``global_threshold`` (its own threshold, FMR/FNMR per race and FDR, IR, GARBE);
    and for every variant but the reference, ``change`` (paired change of the summary against the reference)
    and ``at_reference_threshold`` (FMR/FNMR at the reference's global threshold and their change).
    """
    _check_options(scores, reference, bootstrap, confidence, target_fmr, alpha)
    layout, distances = _inputs(scores, genuine, fold, race)
    bins = {name: _Bins.of(distance, layout) for name, distance in distances.items()}
    n_races, everything = len(layout.races), np.arange(layout.n_pairs)[None]
    point = {reference: _statistics(bins[reference], everything, n_races, target_fmr, alpha)}
    for name in bins:
        if name != reference:
            point[name] = _statistics(bins[name], everything, n_races, target_fmr, alpha,
                                      point[reference]["global_index"])
    boot = _bootstrap(bins, layout, reference, bootstrap, seed, target_fmr, alpha)
    variants = {}
    for name in scores:
        p, b, ref, ref_boot = point[name], boot[name], point[reference], boot[reference]
        variants[name] = {
            "summary": _summary(p, b, layout.races, confidence),
            "races": _race_details(p, layout),
            "global_threshold": _global_block(p, b, layout, distances[name], confidence),
            "change": None if name == reference else _changes(p, ref, b, ref_boot, layout.races, confidence),
            "at_reference_threshold": None if name == reference else _at_reference(p, ref, b, ref_boot,
                                                                                   layout.races, confidence),
        }
    return {
        "reference": reference, "races": list(layout.races), "pairs": layout.n_pairs, "bootstrap": int(bootstrap),
        "confidence": float(confidence), "seed": int(seed), "alpha": float(alpha),
        "target_fmr": None if target_fmr is None else float(target_fmr),
        "conventions": {
            "distance": "2 - 2 cos (squared L2 of unit embeddings); a pair is 'same' when distance < threshold",
            "protocol": "insightface calculate_roc per race: 10 folds, np.arange(0, 4, 0.01), threshold with the "
                        "best accuracy on the other 9 folds (ties: first), mean over folds",
            "std_ddof": 0,
            "global_threshold": ("max pooled accuracy" if target_fmr is None else "largest with pooled FMR <= target")
                                + f" on folds {list(SELECTION_FOLDS)}, np.arange(0, 4, 0.001); reported on folds "
                                  f"{list(REPORT_FOLDS)}",
            "interval": "percentile bootstrap (order statistics), pairs resampled within race x fold x genuine, "
                        "thresholds re-chosen per resample; changes paired on the same resamples",
            "biased_statistics": "verification_std, ser and the global threshold's ratios, fdr, ir and garbe are "
                                 "max/min or spread statistics, biased away from their no-difference values: their "
                                 "resamples can lie mostly on one side of the estimate, so the interval need not "
                                 "contain it; read race differences from race_differences and compression's effect "
                                 "from the paired changes",
        },
        "variants": variants,
    }


def race_differences(score, genuine, fold, race, *, bootstrap: int, confidence: float, seed: int) -> dict:
    """Whether the races differ at all: every pairwise difference of protocol accuracies (row race minus column
    race) with a percentile bootstrap interval, Bonferroni-adjusted over the pairs so that the family holds at
    ``confidence``. (SER and STD cannot answer this: both exceed their no-difference value on any finite sample,
    so their intervals exclude it even when the races are alike.)"""
    point = protocol_accuracy(score, genuine, fold, race)
    races = list(point)
    rows = stratified_resample_indices(genuine, fold, race, n_boot=bootstrap, seed=seed)
    boot = resampled_accuracies(score, genuine, fold, race, rows)
    pairs = list(combinations(range(len(races)), 2))
    level = 1 - (1 - confidence) / max(len(pairs), 1)
    out = {}
    for a, b in pairs:
        low, high, _ = _interval(boot[:, a] - boot[:, b], level)
        delta = point[races[a]]["accuracy"] - point[races[b]]["accuracy"]
        out[f"{races[a]} - {races[b]}"] = {"delta": delta, "ci_low": low, "ci_high": high,
                                           "excludes_zero": None if low is None else bool(low > 0 or high < 0)}
    return {"pairs": out, "confidence": confidence, "adjustment": f"Bonferroni over {len(pairs)} pairs",
            "any_excludes_zero": any(bool(v["excludes_zero"]) for v in out.values())}
