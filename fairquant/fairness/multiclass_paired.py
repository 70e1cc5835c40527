"""How a multi-class model's group fairness moved from fp32 to a compressed variant, on the same rows: the shape of
:func:`~fairquant.fairness.paired.paired_comparison`, built from it.

- ``accuracy_gap`` change and each group's accuracy change (``group_changes``, ``signed``): accuracy is the rate of
  the correctness indicator (row predicted right), so these are the binary paired changes of (all rows positive,
  fp32 right?, variant right?) with the same exact-beta Dirichlet bounds, profiled at ties. The profile tries every
  pair of groups; past ``MAX_PROFILED_GROUPS`` groups (CIFAR-100's classes as groups) that costs too much, and the
  ``accuracy_gap`` change is given as a point with a ``reason`` (Balancing Act's block carries each group's drop
  with an interval);
- ``tpr_gap``, ``fpr_gap``, ``dp_gap``, ``eq_odds``, ``dp_ratio``, ``disparate_impact`` changes: per class, the
  binary paired change on that class's one-vs-rest labels (each class's interval holds at ``confidence`` on its
  own, not simultaneously over classes); the headline entry is the class whose gap is worst in the VARIANT
  (``class``), all classes under ``per_class``. Null with a ``reason`` when the class is the group; points with a
  ``reason`` past ``MAX_CLASS_PAIRS`` (pairs of groups) x classes, where K profiled comparisons cost too much;
- ``balancing_act`` (per group) and ``balancing_act_by_class`` (the classes as groups): drops vs fp32 and excess
  drops, :mod:`~fairquant.fairness.balancing_act`. With the class as the group they are one block, the second
  naming each group by its class (computed once: 100 classes cost seconds).
"""

from __future__ import annotations

import numpy as np

from fairquant.fairness.balancing_act import balancing_act
from fairquant.fairness.counts import GAPS, GroupCounts, gaps, rates, reference_index, usable_groups
from fairquant.fairness.multiclass import (
    CLASS_AS_GROUP_REASON,
    WORST_IS_SMALLEST,
    check_class_labels,
    class_counts,
    is_class_as_group,
)
from fairquant.fairness.metrics import fairness_metrics
from fairquant.fairness.paired import _flips, paired_comparison
from fairquant.fairness.paired_bounds import rate_change

MAX_PROFILED_GROUPS = 12
TOO_MANY_GROUPS = ("more than {} groups: the profiled paired bounds of a max - min gap try every pair of groups and "
                   "cost too much; see balancing_act for each group's drop with its interval")
MAX_CLASS_PAIRS = 150  # pairs of groups x classes: 6 pairs (4 groups) x 25 classes, 15 (6 groups) x 10 classes
TOO_MANY_PAIRS = ("more than {} (pairs of groups) x classes: the per-class profiled paired bounds cost too much; the "
                  "change is a point, and balancing_act carries each group's drop with its interval")
_BINARY_FLIPS = ("positive_to_negative", "negative_to_positive")  # of a binary prediction: not defined here


def _accuracy_changes(y_true, ref, var, groups, options: dict, *, profiled: bool) -> dict:
    """accuracy_gap change, signed accuracy changes (vs the privileged group) and each group's accuracy change."""
    ones = np.ones(len(y_true), dtype=np.int64)
    right_ref, right_var = (ref == y_true).astype(np.int64), (var == y_true).astype(np.int64)
    if profiled:
        paired = paired_comparison(ones, right_ref, right_var, groups, **options)
        return {"accuracy_gap": paired["gaps"]["accuracy_gap"], "signed": {"accuracy": paired["signed"]["accuracy"]}
                if paired["signed"] else {}, "group_changes": {"accuracy": paired["group_changes"]["accuracy"]}}
    rng, right_ref, right_var = np.random.default_rng(options["seed"]), right_ref.astype(bool), right_var.astype(bool)
    by_group, levels = {}, []
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        lost, gained = int((right_ref & ~right_var)[rows].sum()), int((~right_ref & right_var)[rows].sum())
        by_group[name] = rate_change(lost, gained, int(rows.sum()), n_draws=options["n_boot"],
                                     confidence=options["confidence"], rng=rng)
        if rows.sum() >= options["min_group_size"]:
            levels.append((right_ref[rows].mean(), right_var[rows].mean()))
    if not levels:  # no group reaches evaluate.min_group_size: no gap to change
        delta = None
    else:
        before, after = np.array(levels).T
        delta = float((after.max() - after.min()) - (before.max() - before.min()))
    return {"accuracy_gap": {"delta": delta, "ci_low": None, "ci_high": None, "p_value": None,
                             "interval_method": None, "reason": TOO_MANY_GROUPS.format(MAX_PROFILED_GROUPS)},
            "signed": {}, "group_changes": {"accuracy": by_group}}


def _null_change(reason: str) -> dict:
    return {"delta": None, "ci_low": None, "ci_high": None, "p_value": None, "interval_method": None,
            "class": None, "per_class": {}, "reason": reason}


def _unbounded_changes(before: dict, after: dict, reason: str) -> dict:
    """Per gap, each class's change as a point (no interval), saying why."""
    return {gap: {"delta": after[gap] - before[gap], "ci_low": None, "ci_high": None, "p_value": None,
                  "interval_method": None, "reason": reason} for gap in GAPS[1:]}


def _class_gap_changes(y_true, ref, var, groups, classes: list[str], options: dict, *, bounded: bool) -> dict:
    """Per one-vs-rest gap: each class's paired change, headed by the change of the worst class's gap (the variant's
    worst class against fp32's, which may be another class); with ``bounded`` False (too many groups x classes for
    the profiled bounds) the changes are points."""
    variant_gaps = _class_gaps(y_true, var, groups, classes, options)
    reference_gaps = _class_gaps(y_true, ref, groups, classes, options)
    joint = None
    if bounded:
        per_class = _per_class_changes(y_true, ref, var, groups, classes, options)
        # the headline's bounds hold jointly over classes: each class's change, and each model's gap levels, at
        # Bonferroni level 1 - alpha / (3 K) (K changes and 2 K levels)
        strict = {**options, "confidence": 1 - (1 - options["confidence"]) / (3 * len(classes))}
        joint = {"changes": _per_class_changes(y_true, ref, var, groups, classes, strict),
                 "reference": _per_class_levels(y_true, ref, groups, classes, strict),
                 "variant": _per_class_levels(y_true, var, groups, classes, strict)}
    else:
        reason = TOO_MANY_PAIRS.format(MAX_CLASS_PAIRS)
        per_class = {c: _unbounded_changes(reference_gaps[c], variant_gaps[c], reason) for c in classes}
    return {gap: {**_worst_class_change(gap, classes, reference_gaps, variant_gaps, joint),
                  "per_class": {c: per_class[c][gap] for c in classes}} for gap in GAPS[1:]}


def _per_class_changes(y_true, ref, var, groups, classes: list[str], options: dict) -> dict:
    return {c: paired_comparison((y_true == k).astype(np.int64), (ref == k).astype(np.int64),
                                 (var == k).astype(np.int64), groups, **options)["gaps"]
            for k, c in enumerate(classes)}


def _per_class_levels(y_true, pred, groups, classes: list[str], options: dict) -> dict:
    """Each class's one-vs-rest gaps of one model with their (bootstrap) intervals."""
    return {c: fairness_metrics((y_true == k).astype(np.int64), (pred == k).astype(np.int64), groups, **options)["gaps"]
            for k, c in enumerate(classes)}


def _worst_class_change(gap: str, classes: list[str], reference_gaps: dict, variant_gaps: dict,
                        joint: dict | None) -> dict:
    """The change of the worst class's gap, worst(variant) - worst(fp32), naming both classes (a = fp32's worst).
    For a largest-is-worst gap it is max_c (B_c - A_a); each term is at most the paired change d_c = B_c - A_c
    (A_a >= A_c) and lies within B_c's interval minus A_a's, so the bounds take, per class, the tighter of the two
    (mirrored for a smallest-is-worst ratio), every interval at Bonferroni level. Undefined (null) without classes
    whose gap is defined in both models."""
    pick = np.nanargmin if gap in WORST_IS_SMALLEST else np.nanargmax
    before = np.array([reference_gaps[c][gap] for c in classes], dtype=float)
    after = np.array([variant_gaps[c][gap] for c in classes], dtype=float)
    entry = {"delta": None, "ci_low": None, "ci_high": None, "p_value": None, "interval_method": None,
             "class": None, "reference_class": None}
    if not (np.isfinite(before).any() and np.isfinite(after).any()):
        return entry
    a, b = int(pick(before)), int(pick(after))
    entry.update(delta=float(after[b] - before[a]), **{"class": classes[b]}, reference_class=classes[a])
    if joint is None:
        entry["reason"] = TOO_MANY_PAIRS.format(MAX_CLASS_PAIRS)
        return entry
    def ends(record: dict) -> tuple[float, float]:
        low, high = record.get("ci_low"), record.get("ci_high")
        return (float("nan"), float("nan")) if low is None or high is None else (float(low), float(high))

    change = {c: ends(joint["changes"][c][gap]) for c in classes}
    level_a = ends(joint["reference"][classes[a]][gap])
    after_level = {c: ends(joint["variant"][c][gap]) for c in classes}
    # each class c bounds worst(B) - worst(A) = extreme_c (B_c - A_a) two ways: the paired change d_c = B_c - A_c
    # (A_a is the extreme of A) and the levels, B_c's interval minus A_a's
    via_levels = {c: (after_level[c][0] - level_a[1], after_level[c][1] - level_a[0]) for c in classes}
    if gap in WORST_IS_SMALLEST:  # min_c (B_c - A_a), with B_c - A_a >= d_c since A_a <= A_c
        low = min(np.nanmax([change[c][0], via_levels[c][0]]) for c in classes)
        high = np.nanmin([change[classes[a]][1], *(via_levels[c][1] for c in classes)])
    else:  # max_c (B_c - A_a), with B_c - A_a <= d_c since A_a >= A_c
        low = np.nanmax([change[classes[a]][0], *(via_levels[c][0] for c in classes)])
        high = max(np.nanmin([change[c][1], via_levels[c][1]]) for c in classes)
    if not (np.isfinite(low) and np.isfinite(high)):
        entry["reason"] = "a class's change has no interval (its rate is undefined in a group)"
        return entry
    entry.update(ci_low=float(min(low, entry["delta"])), ci_high=float(max(high, entry["delta"])))
    entry["interval_method"] = ("change of the worst class's gap (variant's worst minus fp32's worst): bounds that "
                                "combine each class's paired change (exact-beta Dirichlet bounds) with both models' "
                                "gap levels (bootstrap), all at Bonferroni level 1 - alpha / (3 classes)")
    return entry


def _class_gaps(y_true, y_pred, groups, classes: list[str], options: dict) -> dict:
    """Each class's one-vs-rest gap values of one model (points: which class is worst after compression)."""
    out = {}
    for k, c in enumerate(classes):
        counts = GroupCounts.from_predictions((y_true == k).astype(np.int64), (y_pred == k).astype(np.int64), groups)
        usable = usable_groups(counts.cells.sum(axis=1), options["min_group_size"])
        names = [n for n, keep in zip(counts.names, usable) if keep]
        reference = reference_index(names, options["privileged_group"], options["min_group_size"])
        out[c] = {g: float(v) for g, v in gaps(rates(counts.cells[usable]), reference).items()}
    return out


def _class_of_group(names: list[str], counts: np.ndarray, classes: list[str]) -> dict[str, str] | None:
    """With the class as the group, each group's class when no two groups share one (then the per-class block is
    the per-group block renamed); else None."""
    class_of = {name: classes[int(counts[g].sum(axis=-1).argmax())] for g, name in enumerate(names)}
    return class_of if len(set(class_of.values())) == len(class_of) else None


def _renamed(block: dict, class_of: dict[str, str]) -> dict:
    """A Balancing Act block with its groups named by their class."""
    out = {**block, "groups": {class_of[g]: v for g, v in block["groups"].items()}}
    for key in ("max_drop", "max_excess_drop"):
        if out[key] is not None:
            out[key] = {**out[key], "group": class_of[out[key]["group"]]}
    return out


def multiclass_paired(y_true: np.ndarray, pred_reference: np.ndarray, pred_variant: np.ndarray, groups: np.ndarray,
                      classes: list[str], *, privileged_group: str | None = None, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0, min_group_size: int = 1) -> dict:
    """The multi-class counterpart of ``paired_comparison`` (module docstring), plus Balancing Act's blocks."""
    y_true, ref = check_class_labels(y_true, pred_reference, classes)
    _, var = check_class_labels(y_true, pred_variant, classes)
    groups = np.asarray(groups).astype(str)
    options = {"privileged_group": privileged_group, "n_boot": n_boot, "confidence": confidence, "seed": seed,
               "min_group_size": min_group_size}
    names, counts = class_counts(y_true, ref, groups, len(classes))
    class_as_group = is_class_as_group(counts)
    accuracy = _accuracy_changes(y_true, ref, var, groups, options, profiled=len(names) <= MAX_PROFILED_GROUPS)
    if class_as_group:
        class_gaps = {gap: _null_change(CLASS_AS_GROUP_REASON) for gap in GAPS[1:]}
    else:
        pairs = len(names) * (len(names) - 1) // 2 * len(classes)
        class_gaps = _class_gap_changes(y_true, ref, var, groups, classes, options, bounded=pairs <= MAX_CLASS_PAIRS)
    index = np.unique(groups, return_inverse=True)[1]
    flips = {g: {k: v for k, v in f.items() if k not in _BINARY_FLIPS}
             for g, f in _flips(y_true, ref, var, index, names).items()}
    drops = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    by_group = balancing_act(y_true, ref, var, groups, min_group_size=min_group_size, **drops)
    class_of = _class_of_group(names, counts, classes) if class_as_group else None
    by_class = (_renamed(by_group, class_of) if class_of is not None and min_group_size <= 1
                else balancing_act(y_true, ref, var, np.asarray(classes)[y_true], **drops))
    total_flipped = int((ref != var).sum())
    return {
        "task": "multiclass",
        "class_as_group": class_as_group,
        "gaps": {"accuracy_gap": accuracy["accuracy_gap"], **class_gaps},
        "signed": accuracy["signed"],
        "group_changes": accuracy["group_changes"],
        "groups": flips,
        "flip_rate": total_flipped / max(len(ref), 1),
        "flipped": total_flipped,
        "balancing_act": by_group,
        "balancing_act_by_class": by_class,
    }

