"""Bootstrap intervals of the verification statistics.

Intervals are percentile bootstrap intervals. A resample draws pairs with replacement within race x fold x
genuine, so every fold keeps its genuine and impostor counts and every accuracy stays defined, and recomputes
everything, thresholds included. Draws are pair indices, so a variant and the reference (fp32) are resampled on
the same pairs and a change gets a paired interval. The ends are order statistics (lower end rounded down, upper
rounded up, no interpolation), so a ratio that is infinite in some resamples stays exact. Resamples are drawn
and evaluated in batches (:func:`resamples_per_batch`), so memory stays bounded whatever the data size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from fairquant.fairness.verification_protocol import (
    N_FOLDS,
    THRESHOLDS,
    PairBins,
    PairLayout,
    batch_statistics,
    pair_layout,
    scored_pairs,
)

_CHUNK_CELLS = 4_000_000  # histogram cells per batch of resamples: about 32 MB per array, whatever the data size


def resamples_per_batch(n_races: int, n_pairs: int) -> int:
    """Resamples per batch: bounds the largest arrays, the protocol histogram and the (B, N) index arrays."""
    return max(1, _CHUNK_CELLS // max(n_races * N_FOLDS * 2 * (THRESHOLDS.size + 1), n_pairs))


def _resample_chunks(layout: PairLayout, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches of (b, N) pair indices, each row a resample with replacement within race x fold x genuine."""
    cell = layout.cell
    order = np.argsort(cell, kind="stable")
    sizes = np.bincount(cell)
    starts = np.cumsum(sizes) - sizes
    slot_start, slot_size = starts[cell[order]], sizes[cell[order]]  # slot i keeps the stratum of pair order[i]
    chunk = resamples_per_batch(len(layout.races), layout.n_pairs)
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


def bootstrap_statistics(bins: Mapping[str, PairBins], layout: PairLayout, reference: str, n_boot: int, seed: int,
                         target_fmr: float | None, alpha: float) -> dict[str, dict[str, np.ndarray]]:
    """Per model, each statistic over the same resamples; a variant's rates also at the reference's threshold."""
    n_races = len(layout.races)
    batches: dict[str, list[dict]] = {name: [] for name in bins}
    # No resamples still runs one empty batch, so every statistic has its (0, ...) shape.
    chunks = _resample_chunks(layout, n_boot, np.random.default_rng(seed)) if n_boot else [
        np.zeros((0, layout.n_pairs), dtype=np.int64)]
    for rows in chunks:
        ref = batch_statistics(bins[reference], rows, n_races, target_fmr, alpha)
        for name, model in bins.items():
            stats = ref if name == reference else batch_statistics(model, rows, n_races, target_fmr, alpha,
                                                                   ref["global_index"])
            batches[name].append({k: v for k, v in stats.items() if k in _BOOTSTRAPPED})
    return {name: {k: np.concatenate([batch[k] for batch in parts]) for k in parts[0]}
            for name, parts in batches.items()}


def resampled_accuracies(score, genuine, fold, race, rows: np.ndarray) -> np.ndarray:
    """(B, R) protocol accuracy per race, thresholds re-chosen, on each resample of pair indices ``rows`` (B, N)."""
    layout, distances = scored_pairs({"score": score}, genuine, fold, race)
    bins, rows = PairBins.of(distances["score"], layout), np.asarray(rows, dtype=np.int64)
    chunk = resamples_per_batch(len(layout.races), layout.n_pairs)
    parts = [batch_statistics(bins, rows[i:i + chunk], len(layout.races), None, 0.5)["accuracy"]
             for i in range(0, rows.shape[0], chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, len(layout.races)))


def percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    """Percentile interval over the resamples where the statistic is defined, by order statistics."""
    if boot.size == 0:
        return None, None, 0
    defined = np.sort(boot[~np.isnan(boot)])
    undefined = int(boot.size - defined.size)
    if defined.size == 0:
        return math.nan, math.nan, undefined
    tail, last = (1 - confidence) / 2, defined.size - 1
    return float(defined[math.floor(tail * last)]), float(defined[math.ceil((1 - tail) * last)]), undefined

