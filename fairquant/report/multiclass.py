"""The multi-class sections: per-class accuracy, the worst class, and Balancing Act's drops and excess drops vs fp32
per compressor; with an attribute as the group, also per-group accuracy, the worst-class gaps and their changes.

Built from the evaluate stage's results (variant -> the evaluation dict: the metrics block of
:func:`~fairquant.fairness.multiclass.multiclass_metrics`, flat or under ``metrics``, and ``vs_fp32`` from
:func:`~fairquant.fairness.multiclass_paired.multiclass_paired`). When the class is the group, the one-vs-rest
gaps are degenerate (null in the metrics, with their reason): the sections lead with per-class accuracy and drops.
"""

from __future__ import annotations

from fairquant.report.document import Cell, Prose, Section, Table, prose, strong, table
from fairquant.report.numbers import level

CLASS_GAPS = {"tpr_gap": "TPR (recall) gap", "fpr_gap": "FPR gap", "dp_gap": "DP gap", "eq_odds": "equalized odds"}


def _metrics(result: dict) -> dict:
    """The metrics block of one evaluation dict, flat (as the JSON is written) or under ``metrics``."""
    return result.get("metrics", result)


def _names(results: dict[str, dict]) -> dict[str, str]:
    """slot -> the variant's name as the report prints it (its ``variant`` key, else the slot)."""
    return {slot: r.get("variant", slot) for slot, r in results.items()}


def _band(value, bounds) -> Cell:
    """A rate in percent with its Jeffreys band."""
    return Cell(value, "pct", interval=None if bounds is None else tuple(bounds))


def _estimate(entry: dict | None, key: str = "value", kind: str = "num", note: str | None = None) -> Cell:
    if not entry:
        return Cell(None, kind)
    return Cell(entry.get(key), kind, interval=(entry.get("ci_low"), entry.get("ci_high")), note=note)


def _drop_cell(entry: dict | None) -> Cell:
    """A drop or excess drop in percentage points with its interval, emphasised when the whole interval is above 0
    (the group or class lost more than the others, detectably)."""
    if not entry:
        return Cell(None, "pct_change")
    low = entry.get("ci_low")
    return Cell(entry["value"], "pct_change", interval=(low, entry.get("ci_high")),
                emphasis=low is not None and low > 0)


def per_class_accuracy_table(results: dict[str, dict]) -> Table:
    """Rows: classes; columns: each variant's recall (class accuracy, %) with its Jeffreys band."""
    first = _metrics(next(iter(results.values())))
    classes = first["classes"]["names"]
    return table(["class", "n", *(f"{name} (%)" for name in _names(results).values())],
                 [[Cell(c), Cell(first["classes"]["per_class"][c]["n"], "int"),
                   *(_band(m["per_class"][c]["recall"], m["per_class"][c]["interval"])
                     for m in (_metrics(r)["classes"] for r in results.values()))] for c in classes])


def worst_class_table(results: dict[str, dict]) -> Table:
    """Per variant: overall and balanced accuracy, the worst class with its recall, and the class-recall spread."""
    rows, names = [], _names(results)
    for slot, r in results.items():
        m, name = _metrics(r), names[slot]
        worst = m["classes"]["worst_class"]
        bounds = None if worst is None else m["classes"]["per_class"][worst]["interval"]
        rows.append([Cell(name), Cell(m["overall"]["accuracy"], "pct"), Cell(m["classes"]["balanced_accuracy"], "pct"),
                     Cell(worst), _band(m["classes"]["worst_class_recall"], bounds)])
    return table(["variant", "accuracy (%)", "balanced accuracy (%)", "worst class", "its recall (%)"], rows)


def _compared(results: dict[str, dict]) -> dict[str, dict]:
    """The variant's name -> its paired comparison vs fp32, for every variant that has one."""
    names = _names(results)
    return {names[slot]: r["vs_fp32"] for slot, r in results.items() if r.get("vs_fp32")}


def drops_table(compared: dict[str, dict], block: str, unit: str) -> Table:
    """Rows: the groups (or classes) of ``block``; per compressor its drop vs fp32 and excess drop (points)."""
    first = next(iter(compared.values()))[block]
    units = list(first["groups"])
    columns = ([unit] + [f"{name} {what}" for name in compared for what in ("drop (pts)", "excess drop (pts)")])
    return table(columns, [[Cell(u), *(cell for paired in compared.values()
                                       for cell in (_drop_cell(paired[block]["groups"][u]["drop"]),
                                                    _drop_cell(paired[block]["groups"][u]["excess_drop"])))]
                           for u in units])


def balancing_act_table(compared: dict[str, dict], block: str, unit: str) -> Table:
    """Per compressor: overall drop, the largest excess drop (and where), largest drop, quantiles and spread."""
    rows = []
    for name, paired in compared.items():
        b = paired[block]
        worst = b["max_excess_drop"] or {}
        rows.append([Cell(name), _drop_cell(b["overall_drop"]), _drop_cell(b["max_excess_drop"]),
                     Cell(worst.get("group")), _drop_cell(b["max_drop"]),
                     *(_drop_cell(b["drop_quantiles"].get(q)) for q in ("q10", "q50", "q90")),
                     _drop_cell((b["drop_spread"] or {}).get("range")),
                     Cell((b["drop_spread"] or {}).get("std"), "pct")])
    return table(["variant", "overall drop (pts)", "max excess drop (pts)", f"worst {unit}", "max drop (pts)",
                  "drop q10", "drop q50", "drop q90", "drop range (max - min)", "drop std (pts)"], rows)


def _balancing_act_note(confidence: float) -> Prose:
    lv = level(confidence)
    return prose("Drop = fp32 accuracy minus the variant's, on the same test rows, in percentage points; excess drop "
                 "= a drop minus the overall drop (Balancing Act's quantity). ", strong("Bold"), ": the whole "
                 f"{lv} interval is above 0. Each drop's interval is exact on the rows that flipped (it excludes 0 "
                 "exactly when the exact McNemar test rejects), each excess drop's the exact-beta Dirichlet bound on "
                 "the group's and the other rows' flips; the largest, the quantiles and the range come from the "
                 f"groups' intervals made simultaneous (Bonferroni), so each holds at {lv} whatever the number of "
                 "groups.")


def class_sections(results: dict[str, dict], confidence: float) -> list[Section]:
    """Per-class accuracy, the worst class, and per-class drops and excess drops per compressor."""
    sections = [Section(f"Per-class accuracy (recall, %, {level(confidence)} Jeffreys bands)",
                        (per_class_accuracy_table(results),)),
                Section("The worst class", (worst_class_table(results),))]
    compared = _compared(results)
    if compared:
        sections.append(Section(f"Per-class accuracy drop vs fp32 and excess drop ({level(confidence)} intervals)",
                                (_balancing_act_note(confidence),
                                 balancing_act_table(compared, "balancing_act_by_class", "class"),
                                 drops_table(compared, "balancing_act_by_class", "class"))))
    return sections


def per_group_accuracy_table(results: dict[str, dict]) -> Table:
    groups, names = list(_metrics(next(iter(results.values())))["groups"]), _names(results)
    return table(["variant", *(f"{g} (%)" for g in groups)],
                 [[Cell(names[slot]), *(_band(_metrics(r)["groups"][g]["accuracy"],
                                              _metrics(r)["groups"][g]["intervals"]["accuracy"]) for g in groups)]
                  for slot, r in results.items()])


def worst_class_gaps_table(results: dict[str, dict]) -> Table:
    """Per variant: the accuracy gap and each one-vs-rest gap of its worst class (named)."""
    rows, names = [], _names(results)
    for slot, r in results.items():
        gaps = _metrics(r)["gaps"]
        rows.append([Cell(names[slot]), _estimate(gaps["accuracy_gap"]),
                     *(_estimate(gaps[k], note=f"({gaps[k]['worst_class']})" if gaps[k].get("worst_class") else None)
                       for k in CLASS_GAPS)])
    return table(["variant", "accuracy gap", *(f"worst-class {label}" for label in CLASS_GAPS.values())], rows)


def gap_changes_table(compared: dict[str, dict]) -> Table:
    """Per compressor: the change of the accuracy gap and of each one-vs-rest gap (of the class worst after it)."""
    rows = []
    for name, paired in compared.items():
        gaps = paired["gaps"]
        rows.append([Cell(name), _estimate(gaps["accuracy_gap"], "delta"),
                     *(_estimate(gaps[k], "delta", note=f"({gaps[k]['class']})" if gaps[k].get("class") else None)
                       for k in CLASS_GAPS)])
    return table(["variant", "accuracy gap change", *(f"{label} change" for label in CLASS_GAPS.values())], rows)


def group_sections(results: dict[str, dict], confidence: float) -> list[Section]:
    """With an attribute as the group: per-group accuracy, worst-class gaps, their changes and the group drops."""
    lv = level(confidence)
    sections = [Section(f"Accuracy per group (%, {lv} Jeffreys bands)", (per_group_accuracy_table(results),)),
                Section(f"Gaps between groups, worst class ({lv} simultaneous CIs)",
                        (prose("Each one-vs-rest gap is taken per class and the worst class is shown (named); the "
                               "interval is simultaneous over every class's pairwise differences."),
                         worst_class_gaps_table(results)))]
    compared = _compared(results)
    if compared:
        sections += [Section(f"Change of the gaps vs fp32 (paired, {lv} intervals)",
                             (prose("Accuracy gap: exact-beta Dirichlet bounds on the correctness flips. One-vs-rest "
                                    "gaps: the class whose gap is worst in the variant (named), its own paired "
                                    "interval."), gap_changes_table(compared))),
                     Section(f"Accuracy drop vs fp32 and excess drop per group ({lv} intervals)",
                             (_balancing_act_note(confidence), balancing_act_table(compared, "balancing_act", "group"),
                              drops_table(compared, "balancing_act", "group")))]
    return sections


def multiclass_sections(results: dict[str, dict], confidence: float) -> list[Section]:
    """Every multi-class section in reading order: class as the group leads with the classes; otherwise the
    groups first, then the classes."""
    first = _metrics(next(iter(results.values())))
    if first.get("class_as_group"):
        reason = next((g["reason"] for g in first["gaps"].values() if g.get("reason")), "")
        note = Section("Class as the group", (prose(strong("Each group is one class"), f": {reason}."),))
        return [note, *class_sections(results, confidence)]
    return [*group_sections(results, confidence), *class_sections(results, confidence)]
