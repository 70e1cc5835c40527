"""How each gap, signed difference and group rate moved from a reference model (fp32) to a variant, on the same rows.

Every row falls in one joint cell (group, label, reference prediction, variant prediction). Changes are
functions of those counts; their intervals are the exact-beta Dirichlet bounds of
:mod:`~fairquant.fairness.paired_bounds`, strata group x label (each group's positives and negatives are
fixed: a model changes predictions, not labels). A group's own rate change (accuracy, TPR, FPR, selection
rate) is one 2 x 2 table of its rows, with the exact McNemar p.
"""

from __future__ import annotations


import numpy as np
from scipy.stats import binomtest

from fairquant.fairness.counts import GAPS, RATES, gaps, rates, reference_index, usable_groups, versus
from fairquant.fairness.paired_bounds import METHOD, rate_change, change_bounds

__all__ = ["paired_comparison"]

def _model_cells(joint: np.ndarray, which: int) -> np.ndarray:
    """(..., G, 2 labels, 2 reference preds, 2 variant preds) -> (..., G, 4) counts of one model."""
    per_model = joint.sum(axis=-1) if which == 0 else joint.sum(axis=-2)
    return per_model.reshape(per_model.shape[:-2] + (4,))


def _change_statistic(reference: int | None):
    """joint (..., G, 2 labels, 4 cells (reference pred, variant pred)) -> (..., Q): every gap change, then per
    rate each group's signed change."""
    def statistic(strata: np.ndarray) -> np.ndarray:
        joint = strata.reshape(strata.shape[:-1] + (2, 2))
        before, after = rates(_model_cells(joint, 0)), rates(_model_cells(joint, 1))
        gap_before, gap_after = gaps(before, reference), gaps(after, reference)
        parts = [(gap_after[k] - gap_before[k])[..., None] for k in GAPS]
        if reference is not None:
            parts += [versus(after[r], reference) - versus(before[r], reference) for r in RATES]
        return np.concatenate(parts, axis=-1)
    return statistic


# Gaps that are kinked where the groups' rates are equal, and the rates each is built from.
KINKED = {"accuracy_gap": ("accuracy",), "tpr_gap": ("tpr",), "fpr_gap": ("fpr",), "eq_odds": ("tpr", "fpr"),
          "dp_gap": ("selection_rate",), "dp_ratio": ("selection_rate",)}


def _tie_levels(level: np.ndarray, step: np.ndarray, tail: float) -> list[np.ndarray]:
    """Per draw, the fp32 levels (n_draws, G) at which a gap change is kinked, to try besides the draw's own.

    For every pair of groups (i, j), group j is moved to tie with i in fp32 (d = 0) or in the variant
    (d = -delta, d = r_j - r_i), per draw where that kink lies inside d's interval over the draws (else the
    draw's own level is kept). With three groups or more, all groups tied to group 0 in fp32, or in the
    variant, where every pair's kink is inside.
    """
    groups = level.shape[-1]
    options, all_inside = [], {0: True, 1: True}
    for i in range(groups):
        for j in range(i + 1, groups):
            d = level[..., j] - level[..., i]
            low, high = np.nanquantile(d, [tail, 1 - tail]) if np.isfinite(d).any() else (np.nan, np.nan)
            for k, kink in enumerate((np.zeros_like(d), step[..., i] - step[..., j])):
                inside = (kink >= low) & (kink <= high)
                moved = level.copy()
                moved[..., j] = np.where(inside, level[..., i] + kink, level[..., j])
                options.append(moved)
                all_inside[k] = all_inside[k] & inside if i == 0 else all_inside[k]
    if groups > 2:
        for k, inside in all_inside.items():
            tied = level[..., :1] + (step[..., :1] - step if k else 0.0)
            options.append(np.where(np.asarray(inside)[..., None], tied, level))
    return options


def _profile(reference: int | None, confidence: float):
    """A gap change's draws, least favourable over the fp32 level.

    A gap change |d + delta| - |d| is kinked at d = 0: near a zero fp32 gap its true value (|delta|) is the top
    of what the draws can give, and percentile ends miss it (86% coverage measured). So, per draw, the change
    is also taken at the kinks, d = 0 and d = -delta (d the fp32 difference of two groups' rates, the
    variant kept at d + delta), where they lie inside d's interval over the draws, and the least favourable
    value kept. Between kinks the change moves smoothly with d, which the draws already carry; with no kink
    inside, nothing moves. With three groups or more a max - min gap is kinked wherever any two groups tie,
    so every pair's kinks are tried, and all groups tied (:func:`_tie_levels`): with the raw draws, coverage
    of a 5-point TPR loss in one of three equal groups was 0.90 (eq_odds).
    """
    statistic, tail = _change_statistic(reference), (1 - confidence) / 2

    def profile(counts: np.ndarray, q: int, side: str) -> np.ndarray:
        values = statistic(counts)[..., q]
        gap = GAPS[q] if q < len(GAPS) else None
        if gap not in KINKED:
            return values
        joint = counts.reshape(counts.shape[:-1] + (2, 2))
        before, after = rates(_model_cells(joint, 0)), rates(_model_cells(joint, 1))
        pick, kinked = (np.fmax if side == "high" else np.fmin), KINKED[gap]
        level, moved = dict(before), dict(after)
        with np.errstate(invalid="ignore"):
            for axis, rate in enumerate(kinked):  # one options axis per rate: every combination at once
                step = after[rate] - before[rate]
                options = np.stack([before[rate]] + _tie_levels(before[rate], step, tail))
                options = options.reshape(tuple(len(options) if a == axis else 1 for a in range(len(kinked)))
                                          + before[rate].shape)
                level[rate] = np.clip(options, 0.0, 1.0)
                moved[rate] = np.clip(level[rate] + step, 0.0, 1.0)
            change = gaps(moved, reference)[gap] - gaps(level, reference)[gap]
            values = pick(values, pick.reduce(change.reshape((-1,) + values.shape), axis=0))
        return values
    return profile


def _discordant(groups: int) -> np.ndarray:
    """(G, 2 labels, 4 cells) mask of the cells where the reference and the variant predict differently."""
    return np.broadcast_to(np.array([False, True, True, False]), (groups, 2, 4))


def _flips_down_up(joint_group: np.ndarray, rate: str) -> tuple[int, int, int]:
    """(rows that lower the rate, rows that raise it, rows the rate is measured on) for one group's (2, 2, 2)."""
    negatives, positives = joint_group[0], joint_group[1]  # [reference pred, variant pred]
    if rate == "tpr":
        return int(positives[1, 0]), int(positives[0, 1]), int(positives.sum())
    if rate == "fpr":
        return int(negatives[1, 0]), int(negatives[0, 1]), int(negatives.sum())
    if rate == "selection_rate":
        both = negatives + positives
        return int(both[1, 0]), int(both[0, 1]), int(both.sum())
    # accuracy: a positive predicted 1 -> 0 or a negative 0 -> 1 is lost, the reverse gained
    return (int(positives[1, 0] + negatives[0, 1]), int(positives[0, 1] + negatives[1, 0]),
            int(joint_group.sum()))


def _group_changes(joint: np.ndarray, names: list[str], n_draws: int, confidence: float,
                   rng: np.random.Generator) -> dict:
    out = {}
    for rate in RATES:
        out[rate] = {}
        for g, name in enumerate(names):
            down, up, n = _flips_down_up(joint[g], rate)
            out[rate][name] = rate_change(down, up, n, n_draws=n_draws, confidence=confidence, rng=rng)
    return out


RATE_GAPS = {"accuracy_gap": "accuracy", "tpr_gap": "tpr", "fpr_gap": "fpr", "dp_gap": "selection_rate"}
SIGN_TEST = " (an end moved to 0: the exact McNemar test on the same discordant rows does not reject)"


def _sign_test_p(raise_rows: int, lower_rows: int) -> float:
    """Exact McNemar-type test on discordant rows: each as likely to raise the change as to lower it."""
    flips = raise_rows + lower_rows
    return float(binomtest(raise_rows, flips, 0.5).pvalue) if flips else 1.0


def _guard(change: dict, p_exact: float, alpha: float) -> None:
    """Never significant where the exact test is not: p is at least the exact p, and then the interval holds 0."""
    change["p_value"] = max(change["p_value"], p_exact) if np.isfinite(change["p_value"]) else change["p_value"]
    if p_exact >= alpha and np.isfinite(change["ci_low"]) and (change["ci_low"] > 0 or change["ci_high"] < 0):
        change["ci_low"], change["ci_high"] = min(change["ci_low"], 0.0), max(change["ci_high"], 0.0)
        change["interval_method"] = change["interval_method"] + SIGN_TEST


def _one_sided_p(first: tuple[int, int, int], second: tuple[int, int, int]) -> float | None:
    """The exact McNemar p when only one of the two groups has discordant rows (then the change of their difference
    is that group's own change); None when both have some (then the groups' sizes weigh their rows differently and
    no sign test on the pooled rows tests the change)."""
    (down_a, up_a, _), (down_b, up_b, _) = first, second
    if down_b + up_b == 0:
        return _sign_test_p(up_a, down_a)
    if down_a + up_a == 0:
        return _sign_test_p(up_b, down_b)
    return None


def _agree_with_sign_tests(gap_changes: dict, signed: dict, joint: np.ndarray, names: list[str],
                           reference: int | None, alpha: float) -> None:
    """The Monte Carlo p of a change of two groups' difference can fall just under alpha where the exact McNemar
    test on the same discordant rows does not reject (5 of 5 rows one way: exact p 0.0625). Where only one of the
    two groups has discordant rows, that test is the floor: signed changes (a group vs the privileged group) and,
    with two groups, the rate gaps' changes."""
    flips = {(g, rate): _flips_down_up(joint[g], rate) for g in range(len(names)) for rate in RATES}
    pairs = []
    if reference is not None:
        pairs += [(change, flips[(names.index(name), rate)], flips[(reference, rate)])
                  for rate, by_group in signed.items() for name, change in by_group.items()]
    if len(names) == 2:
        pairs += [(gap_changes[gap], flips[(0, rate)], flips[(1, rate)]) for gap, rate in RATE_GAPS.items()]
    for change, first, second in pairs:
        p_exact = _one_sided_p(first, second)
        if p_exact is not None:
            _guard(change, p_exact, alpha)


def _flips(y_true: np.ndarray, a: np.ndarray, b: np.ndarray, index: np.ndarray, names: list[str]) -> dict:
    """Per group, how predictions moved between the two models, with an exact McNemar test on accuracy."""
    correct_ref, correct_var = (a == y_true), (b == y_true)
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
    return flips


def paired_comparison(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray, *,
                      privileged_group: str | None = None, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                      min_group_size: int = 1) -> dict:
    """How each gap, signed difference and group rate moved from the reference (fp32) to a variant, same rows.

    ``gaps[k]`` and ``signed[rate][group]`` (group minus the privileged group) and ``group_changes[rate][group]``
    each hold delta, ci_low, ci_high, p_value, interval_method; ``n_boot`` is the number of posterior draws.
    ``groups`` holds the flip counts per group with McNemar's p on accuracy.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    a, b = np.asarray(pred_reference, dtype=np.int64), np.asarray(pred_variant, dtype=np.int64)
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    names = [str(name) for name in names]
    joint = np.bincount(index * 8 + 4 * y_true + 2 * a + b, minlength=8 * len(names)).reshape(len(names), 2, 2, 2)
    usable = usable_groups(joint.sum(axis=(1, 2, 3)), min_group_size)
    used_names = [name for name, keep in zip(names, usable) if keep]
    reference = reference_index(used_names, privileged_group, min_group_size)
    rng = np.random.default_rng(seed)
    changes = change_bounds(joint[usable].reshape(-1, 2, 4), _change_statistic(reference), _discordant(int(usable.sum())),
                            n_draws=n_boot, confidence=confidence, rng=rng, profile=_profile(reference, confidence))
    changes = [c | {"interval_method": METHOD} for c in changes]
    gap_changes = dict(zip(GAPS, changes[:len(GAPS)]))
    signed = {}
    if reference is not None:
        others = used_names[:reference] + used_names[reference + 1:]
        per_rate = len(others)
        for k, rate in enumerate(RATES):
            start = len(GAPS) + k * per_rate
            signed[rate] = dict(zip(others, changes[start:start + per_rate]))
    _agree_with_sign_tests(gap_changes, signed, joint[usable], used_names, reference, 1 - confidence)
    total_flipped = int((a != b).sum())
    return {"gaps": gap_changes, "signed": signed,
            "group_changes": _group_changes(joint, names, n_boot, confidence, rng),
            "groups": _flips(y_true, a, b, index, names),
            "flip_rate": total_flipped / max(len(a), 1), "flipped": total_flipped}
