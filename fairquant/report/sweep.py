"""The sweep's part of the report: each curve (every group against compression depth), the trend verdicts, the
heatmap of methods x depth and the Pareto front over every point; its plot tables and compact DVC metrics.

Input, per training seed: ``{"points": {<arch>/<folder>: evaluation dict}, "trends": trends.json}`` as the
sweep_evaluate stage writes them (fairquant/fairness/sweep.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from fairquant.fairness.pareto import non_dominated
from fairquant.fairness.seeds import across_seeds
from fairquant.report.document import Cell, Figure, Section, prose, strong, table

CURVE_GAPS = ("accuracy_gap", "tpr_gap", "fpr_gap", "eq_odds")
CURVE_RATES = ("accuracy", "tpr", "fpr")
GAP_NAMES = {"tpr_gap": "TPR gap", "accuracy_gap": "accuracy gap"}


def is_multiclass(sweep: dict) -> bool:
    return next(iter(sweep["points"].values())).get("task") == "multiclass"


def headline_gap(sweep: dict) -> str:
    """The gap each curve leads with: the TPR gap (equal opportunity); for a multi-class target, the accuracy gap,
    which every class shares (its trend is on correctness: fairquant/fairness/sweep.py)."""
    return "accuracy_gap" if is_multiclass(sweep) else "tpr_gap"


def curve_gaps(sweep: dict) -> tuple[str, ...]:
    return ("accuracy_gap",) if is_multiclass(sweep) else CURVE_GAPS


def curve_rates(sweep: dict) -> tuple[str, ...]:
    return ("accuracy",) if is_multiclass(sweep) else CURVE_RATES


def curve_label(curve: dict) -> str:
    """'face_resnet10 ptq W=A (train)': architecture, series and calibration set."""
    return f"{curve['arch']} {curve['series']}" + (f" ({curve['calibration']})" if curve["calibration"] else "")


def _fp32_slot(curve: dict) -> str:
    return f"{curve['arch']}/fp32"


def _groups(result: dict) -> list[str]:
    return [g for g, v in result["groups"].items() if v["in_gaps"]]


def _interval(record: dict) -> tuple[float | None, float | None]:
    return (record.get("ci_low"), record.get("ci_high"))


def _excludes_zero(record: dict) -> bool:
    low, high = record.get("ci_low"), record.get("ci_high")
    return low is not None and high is not None and (low > 0 or high < 0)


def worst_drop(result: dict) -> dict | None:
    """The group whose accuracy fell most vs fp32, with its paired interval (None for fp32 itself)."""
    changes = (result.get("vs_fp32") or {}).get("group_changes", {}).get("accuracy", {})
    defined = {g: c for g, c in changes.items() if c.get("delta") is not None and not math.isnan(c["delta"])}
    if not defined:
        return None
    group = min(defined, key=lambda g: defined[g]["delta"])
    return {"group": group, **defined[group]}


def group_frame(sweep: dict) -> pd.DataFrame:
    """plots/sweep/groups.csv: per curve, point and group, each rate with its interval, and fp32's level."""
    rows = []
    for curve in sweep["trends"]["curves"]:
        fp32 = sweep["points"][_fp32_slot(curve)]["groups"]
        for point in curve["points"]:
            result = sweep["points"][point["slot"]]
            for group in _groups(result):
                values = result["groups"][group]
                row = {"curve": curve_label(curve), "point": point["point"], "x": point["x"], "group": group}
                for rate in curve_rates(sweep):
                    low, high = values.get("intervals", {}).get(rate, (None, None))
                    row.update({rate: values[rate], f"{rate}_low": low, f"{rate}_high": high,
                                f"fp32_{rate}": fp32[group][rate]})
                rows.append(row)
    return pd.DataFrame(rows)


def gap_frame(sweep: dict) -> pd.DataFrame:
    """plots/sweep/gaps.csv: per curve, point and gap, its change vs fp32 with the paired interval."""
    rows = []
    for curve in sweep["trends"]["curves"]:
        for point in curve["points"]:
            changes = sweep["points"][point["slot"]]["vs_fp32"]["gaps"]
            for gap in curve_gaps(sweep):
                change = changes[gap]
                rows.append({"curve": curve_label(curve), "point": point["point"], "x": point["x"], "gap": gap,
                             "change": change["delta"], "ci_low": change["ci_low"], "ci_high": change["ci_high"],
                             "p_value": change["p_value"], "excludes_zero": _excludes_zero(change)})
    return pd.DataFrame(rows)


def heatmap_frame(sweep: dict) -> pd.DataFrame:
    """plots/sweep/heatmap.csv: per curve and point, the worst group's accuracy change and the headline gap's change
    (TPR gap; accuracy gap for a multi-class target), each flagged where its paired interval excludes 0."""
    rows = []
    gap = headline_gap(sweep)
    for curve in sweep["trends"]["curves"]:
        for point in curve["points"]:
            result = sweep["points"][point["slot"]]
            drop = worst_drop(result) or {}
            change = result["vs_fp32"]["gaps"][gap]
            rows.append({"curve": curve_label(curve), "point": point["point"], "x": point["x"],
                         "worst_group": drop.get("group"), "worst_group_change": drop.get("delta"),
                         "worst_group_significant": _excludes_zero(drop),
                         f"{gap}_change": change["delta"], f"{gap}_significant": _excludes_zero(change)})
    return pd.DataFrame(rows)


def pareto_frame(sweep: dict) -> pd.DataFrame:
    """plots/sweep/pareto.csv: every sweep model's size, worst-group accuracy and headline gap (TPR; accuracy for a
    multi-class target); the front over the three (smaller, more accurate for the worst group, fairer)."""
    rows = []
    gap = headline_gap(sweep)
    for slot, result in sweep["points"].items():
        rows.append({"slot": slot, "size_mb": result["size_bytes"] / 1e6,
                     "worst_group_accuracy": result["worst_group_accuracy"],
                     gap: result["gaps"][gap]["value"], "collapsed": result["collapsed"]})
    frame = pd.DataFrame(rows)
    values = frame[gap].astype(float).to_numpy()
    objectives = [(-r.size_mb, r.worst_group_accuracy, -(v if np.isfinite(v) else np.inf))
                  for r, v in zip(frame.itertuples(), values)]
    frame["on_front"] = non_dominated(objectives)
    return frame


def plot_frames(sweep: dict) -> dict[str, pd.DataFrame]:
    """plots/sweep/<name>.csv (the folder also holds the sweep's figures)."""
    return {"sweep/groups": group_frame(sweep), "sweep/gaps": gap_frame(sweep), "sweep/heatmap": heatmap_frame(sweep),
            "sweep/pareto": pareto_frame(sweep)}


def _curve_table(curve: dict, sweep: dict):
    fp32 = sweep["points"][_fp32_slot(curve)]
    groups = _groups(fp32)
    gap = headline_gap(sweep)
    columns = ["point", "size (MB)", *[f"{g} accuracy" for g in groups], GAP_NAMES[gap],
               f"{GAP_NAMES[gap]} change vs fp32", "worst group's accuracy change"]
    rows = [[Cell("fp32"), Cell(fp32["size_bytes"] / 1e6, "num2"),
             *[_rate_cell(fp32, g, "accuracy") for g in groups], _gap_cell(fp32, gap), Cell(None, note="(reference)"),
             Cell(None, note="(reference)")]]
    for point in curve["points"]:
        result = sweep["points"][point["slot"]]
        change = result["vs_fp32"]["gaps"][gap]
        drop = worst_drop(result)
        rows.append([Cell(point["point"], note="(collapsed)" if result["collapsed"] else None),
                     Cell(result["size_bytes"] / 1e6, "num2"), *[_rate_cell(result, g, "accuracy") for g in groups],
                     _gap_cell(result, gap),
                     Cell(change["delta"], "num", _interval(change), emphasis=_excludes_zero(change)),
                     Cell(None) if drop is None else Cell(drop["delta"], "num", _interval(drop),
                                                          emphasis=_excludes_zero(drop), note=f"({drop['group']})")])
    return table(columns, rows)


def _rate_cell(result: dict, group: str, rate: str) -> Cell:
    values = result["groups"][group]
    low, high = values.get("intervals", {}).get(rate, (None, None))
    return Cell(values[rate], "num", (low, high))


def _gap_cell(result: dict, name: str) -> Cell:
    gap = result["gaps"][name]
    return Cell(gap["value"], "num", _interval(gap))


def _trend_table(curve: dict):
    trend = curve["trend"]
    rows = []
    for gap in trend["gap_changes"]:
        answer = trend["gap_changes"][gap]
        rows.append([Cell(f"{gap} change"), Cell(answer["slope"], "num4", _interval(answer),
                                                 emphasis=answer["verdict"] in ("widens", "narrows")),
                     Cell(answer["spearman"], "num2", (answer["spearman_ci_low"], answer["spearman_ci_high"])),
                     Cell(answer["verdict"]), Cell(answer["points"], "int")])
    for group, answer in trend["group_rates"]["accuracy"].items():
        rows.append([Cell(f"{group} accuracy"), Cell(answer["slope"], "num4", _interval(answer)),
                     Cell(answer["spearman"], "num2", (answer["spearman_ci_low"], answer["spearman_ci_high"])),
                     Cell({"widens": "rises", "narrows": "falls"}.get(answer["verdict"], answer["verdict"])),
                     Cell(answer["points"], "int")])
    return table(["quantity", f"slope {trend['depth']}", "Spearman", "as compression deepens", "points"], rows)


def _seed_trend_table(per_seed: dict[int, dict], confidence: float):
    """Across training seeds: each curve's TPR and accuracy gap slopes, their mean with a t interval, and each
    seed's verdict."""
    first = per_seed[min(per_seed)]
    rows = []
    for index, curve in enumerate(first["trends"]["curves"]):
        for gap in _slope_gaps(first):
            answers = [per_seed[s]["trends"]["curves"][index]["trend"]["gap_changes"][gap] for s in sorted(per_seed)]
            test = across_seeds([a["slope"] for a in answers], confidence)
            rows.append([Cell(curve_label(curve)), Cell(f"{gap} change"),
                         Cell(test["mean"], "num4", (test["ci_low"], test["ci_high"]),
                              emphasis=test["verdict"] in ("widens", "narrows")), Cell(test["verdict"]),
                         Cell(", ".join(f"s{s}: {a['verdict']}" for s, a in zip(sorted(per_seed), answers)))])
    return table(["curve", "quantity", f"mean slope over {len(per_seed)} seeds [t interval]", "across seeds",
                  "per seed"], rows)


def sweep_section(per_seed: dict[int, dict]) -> Section:
    """Curves, trends, heatmap and Pareto front of the sweep (details of the first training seed)."""
    seed = min(per_seed)
    sweep = per_seed[seed]
    curves = sweep["trends"]["curves"]
    first = next(iter(sweep["points"].values()))
    confidence, synthetic = first["confidence"], first["synthetic"]
    intro = prose(
        "Every point of each method's curve, against its architecture's fp32 on the same test rows (training seed ",
        f"{seed}). Per point: each group's accuracy with its {confidence:.0%} interval, the {GAP_NAMES[headline_gap(sweep)]}, "
        "its change vs fp32 "
        "and the worst group's accuracy change with paired intervals (", strong("bold"), ": the interval excludes 0). "
        "The trend answers 'does the gap widen as compression deepens?' with the least-squares slope of each change on "
        "the depth (bits removed, halvings of the clusters, sparsity) and Spearman's rank correlation, from one paired "
        "bootstrap shared by every point of the curve. A point whose model broke (collapsed to one class, or lost more "
        "than half of fp32's balanced accuracy above chance) is left out of the trend and named: its gaps shrink with "
        "its accuracy.")
    subsections = []
    for curve in curves:
        left_out = curve["trend"]["left_out"]
        blocks = [_curve_table(curve, sweep), _trend_table(curve)]
        if left_out:
            blocks.insert(1, prose("Left out of the trend: ", "; ".join(f"x = {p['x']:g} ({p['reason']})"
                                                                         for p in left_out), "."))
        blocks.append(Figure(f"sweep/{_file_stem(curve)}", "sweep_curve", _curve_figure_frame(curve, sweep),
                             synthetic=synthetic, confidence=confidence))
        subsections.append(Section(f"Curve: {curve_label(curve)}", tuple(blocks)))
    if len(per_seed) > 1:
        subsections.append(Section("Trends across training seeds", (_seed_trend_table(per_seed, confidence),)))
    heat = heatmap_frame(sweep)
    pareto = pareto_frame(sweep)
    subsections.append(Section("Heatmap: methods x depth", (
        prose(f"Each cell: the worst group's accuracy change vs fp32 (left) and the {GAP_NAMES[headline_gap(sweep)]} "
              "change (right); * marks a "
              "cell whose paired interval excludes 0 (the figure of the configurations grid in \"Beyond Naive "
              "Quantization\")."),
        Figure("sweep/heatmap", "sweep_heatmap", heat, synthetic=synthetic))))
    subsections.append(Section("Pareto front over every point", (
        table(["model", "size (MB)", "worst-group accuracy", GAP_NAMES[headline_gap(sweep)], "on the front"],
              [[Cell(r.slot, note="(collapsed)" if r.collapsed else None), Cell(r.size_mb, "num2"),
                Cell(r.worst_group_accuracy, "num"), Cell(getattr(r, headline_gap(sweep)), "num"),
                Cell("yes" if r.on_front else "no", emphasis=bool(r.on_front))]
               for r in pareto.itertuples()]),
        Figure("sweep/pareto", "sweep_pareto", pareto, synthetic=synthetic))))
    return Section("Sweep: how each group's damage grows as compression deepens", (intro,), tuple(subsections))


def _file_stem(curve: dict) -> str:
    """'face_resnet10_ptq_WeqA_train': the curve's label as a file name."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", curve_label(curve).replace("=", "eq")).strip("_")


def _curve_figure_frame(curve: dict, sweep: dict) -> pd.DataFrame:
    frame = group_frame({"points": sweep["points"], "trends": {"curves": [curve]}})
    gaps = gap_frame({"points": sweep["points"], "trends": {"curves": [curve]}})
    frame.attrs["gaps"] = gaps
    frame.attrs["axis"] = curve["trend"]["axis"]
    return frame


def sweep_metrics(per_seed: dict[int, dict]) -> dict:
    """metrics/sweep.json for `dvc metrics diff` and `dvc exp show`: per curve, the trend of the TPR and accuracy
    gap changes (mean slope over seeds, the first seed's interval and verdict) and per point the accuracy, the
    worst group's accuracy and the TPR gap change (means over seeds): a few dozen keys, not a thousand."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    out = {}
    gap_name = headline_gap(first)
    for index, curve in enumerate(first["trends"]["curves"]):
        entry = {}
        for gap in _slope_gaps(first):
            answers = [per_seed[s]["trends"]["curves"][index]["trend"]["gap_changes"][gap] for s in seeds]
            entry[f"{gap}_slope"] = _mean([a["slope"] for a in answers])
            entry[f"{gap}_verdict"] = answers[0]["verdict"] if len(seeds) == 1 else \
                "/".join(a["verdict"] for a in answers)
        for point in curve["points"]:
            results = [per_seed[s]["points"][point["slot"]] for s in seeds]
            entry[point["point"]] = {
                "accuracy": _mean([r["overall"]["accuracy"] for r in results]),
                "worst_group_accuracy": _mean([r["worst_group_accuracy"] for r in results]),
                f"{gap_name}_change": _mean([r["vs_fp32"]["gaps"][gap_name]["delta"] for r in results])}
        out[curve_label(curve)] = entry
    return out


def _slope_gaps(sweep: dict) -> tuple[str, ...]:
    """The gaps whose slopes the across-seed table and metrics/sweep.json carry."""
    return ("accuracy_gap",) if is_multiclass(sweep) else ("tpr_gap", "accuracy_gap")


def _mean(values: list) -> float | None:
    """The mean of the defined values (metrics files hold null for an undefined one); None when none is."""
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(defined)) if defined else None
