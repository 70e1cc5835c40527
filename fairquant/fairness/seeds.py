"""Training seeds as part of the study: does a gap change survive training randomness?

Each training seed gives its own fp32 model, its own compressed variants and its own paired comparison on the
same test split. Per variant and gap this module collects the per-seed values, their mean and between-seed
standard deviation, and a verdict on the change vs fp32 that must hold across seeds: a one-sample t-test of the
per-seed changes (n - 1 degrees of freedom, at the study's confidence). The between-seed spread of the changes
carries training randomness (and, since every seed is scored on the same test images, only part of the
test-sampling noise, which each seed's paired bootstrap CI reports). With a single seed there is no across-seed
verdict, and the report says so.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from fairquant.fairness.summary import is_missing, summary


def spread(values: list[float]) -> dict:
    """Mean, between-seed standard deviation (ddof 1; null for one seed), min and max of the defined values."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return {"values": values, "mean": None, "sd": None, "min": None, "max": None}
    return {"values": values, "mean": float(finite.mean()), "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "min": float(finite.min()), "max": float(finite.max())}


def across_seeds(changes: list[float], confidence: float) -> dict:
    """t-interval of the mean per-seed change and its verdict: 'widens' / 'narrows' when the whole interval is
    above / below 0, 'no consistent change' otherwise; 'one seed' when there is nothing to test across."""
    finite = np.array([c for c in changes if c is not None and math.isfinite(c)], dtype=float)
    n = int(finite.size)
    if n < 2:
        return {"test": "one seed: no across-seed test", "n": n, "mean": float(finite.mean()) if n else None,
                "ci_low": None, "ci_high": None, "p_value": None, "verdict": "one seed"}
    mean, sd = float(finite.mean()), float(finite.std(ddof=1))
    if sd == 0.0:  # every seed gave the same change: the interval is that point
        low = high = mean
        p_value = 1.0 if mean == 0 else 0.0
    else:
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
        p_value = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    verdict = "widens" if low > 0 else "narrows" if high < 0 else "no consistent change"
    return {"test": f"one-sample t-test over {n} seeds", "n": n, "mean": mean, "ci_low": low, "ci_high": high,
            "p_value": p_value, "verdict": verdict}


def seed_table(per_seed: dict[int, dict[str, dict]], gaps: tuple[str, ...], confidence: float) -> dict[str, dict]:
    """Per variant slot: accuracy and each gap across seeds, and each gap's change vs fp32 across seeds.

    ``per_seed`` maps a training seed to that seed's metrics by slot (the evaluate stage's JSON files)."""
    seeds = sorted(per_seed)
    slots = list(per_seed[seeds[0]])
    out = {}
    for slot in slots:
        runs = [per_seed[s][slot] for s in seeds]
        entry = {"variant": runs[0]["variant"], "seeds": seeds, "baseline": runs[0].get("baseline"),
                 "accuracy": spread([r["overall"]["accuracy"] for r in runs]),
                 "worst_group_accuracy": spread([r["worst_group_accuracy"] for r in runs]),
                 "gaps": {k: spread([r["gaps"][k]["value"] for r in runs]) for k in gaps}}
        for key, field in (("vs_fp32", "changes"), ("vs_baseline", "changes_vs_baseline")):
            if all(key in r for r in runs):
                entry[field] = _changes([r[key]["gaps"] for r in runs], gaps, confidence)
        out[slot] = entry
    return out


def _changes(per_seed_gaps: list[dict], gaps: tuple[str, ...], confidence: float) -> dict:
    """Each gap's paired change per seed, how many seeds' CIs exclude 0, and the across-seed verdict."""
    out = {}
    for k in gaps:
        per_seed_change = [g[k] for g in per_seed_gaps]
        deltas = [c["delta"] for c in per_seed_change]
        excluding = sum(1 for c in per_seed_change if c["ci_low"] is not None and c["ci_high"] is not None
                        and (c["ci_low"] > 0 or c["ci_high"] < 0))
        out[k] = {**spread(deltas), "seeds_whose_paired_ci_excludes_0": excluding,
                  "across_seeds": across_seeds(deltas, confidence)}
    return out


def _mean_over_seeds(values: list):
    """Mean of numbers (int kept when every seed agrees, as sizes do); None when any seed's value is undefined."""
    if any(v is None or (isinstance(v, float) and is_missing(v)) for v in values):
        return None
    if all(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return values[0]
    if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
        return values[0]
    return sum(values) / len(values)


def _tpr_diff_over_seeds(runs: list[dict]) -> dict:
    """The signed TPR difference of one fixed group (farthest from the privileged group in the mean over seeds):
    its mean, and as bounds that seed's CI (one seed) or the t-interval of the mean across seeds."""
    per_group: dict[str, list] = {}
    for r in runs:
        for group, d in r["signed"].get("tpr", {}).items():
            per_group.setdefault(group, []).append(d)
    defined = {g: ds for g, ds in per_group.items()
               if len(ds) == len(runs) and not any(is_missing(d["value"]) for d in ds)}
    if not defined:
        return {"tpr_diff": None, "tpr_diff_ci_low": None, "tpr_diff_ci_high": None, "tpr_diff_group": None}
    group = max(defined, key=lambda g: abs(sum(d["value"] for d in defined[g])))
    values = [d["value"] for d in defined[group]]
    if len(runs) == 1:
        low, high = defined[group][0]["ci_low"], defined[group][0]["ci_high"]
    else:
        interval = across_seeds(values, runs[0]["confidence"])
        low, high = interval["ci_low"], interval["ci_high"]
    return {"tpr_diff": sum(values) / len(values), "tpr_diff_ci_low": low, "tpr_diff_ci_high": high,
            "tpr_diff_group": group}


def summary_over_seeds(per_seed: dict[int, dict[str, dict]]) -> dict:
    """The headline keys of :func:`fairquant.fairness.summary.summary`, each the mean over training seeds. The
    signed TPR difference is one group's (the same in every seed); its bounds are the CI with one seed, the
    across-seed t-interval with more."""
    seeds = sorted(per_seed)
    runs = [summary(per_seed[s]) for s in seeds]
    out = {}
    for slot, first in runs[0].items():
        if not isinstance(first, dict):
            continue
        out[slot] = {key: _mean_over_seeds([run[slot][key] for run in runs])
                     for key in first if not key.startswith("tpr_diff")}
        out[slot].update(_tpr_diff_over_seeds([per_seed[s][slot] for s in seeds]))
    out["synthetic_data"] = any(run["synthetic_data"] for run in runs)
    out["seeds"] = len(seeds)
    return out
