"""The sweep of one training seed: every point's metrics against its architecture's fp32, and each curve's trend.

A curve is the points of one architecture, method, series (W=A, weight-only, dynamic, ...) and calibration set,
ordered by their x value (bits, clusters, sparsity); its trend comes from one paired bootstrap shared by the
curve's points and their fp32 (:mod:`fairquant.fairness.trend`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.fairness.evaluation import check_same_classes, evaluate_variant
from fairquant.fairness.counts import GAPS, RATES
from fairquant.fairness.metrics import group_labels
from fairquant.fairness.trend import curve_trends, gate_by_points
from fairquant.params import EvaluateParams, SweepParams
from fairquant.params.sweep import AXIS
from fairquant.results import EvaluationResult, PredictionsInfo

TRENDS = "trends.json"  # beside points/<arch>/<folder>.json in metrics/sweep/s<seed>/


@dataclass(frozen=True)
class CurvePoint:
    slot: str  # <arch>/<folder>
    arch: str
    method: str
    name: str  # the point, e.g. w4a4
    series: str
    calibration: str | None
    x: float


def sweep_points(sweep: SweepParams) -> list[CurvePoint]:
    """Every point of the sweep with the curve it belongs to, per architecture, in the params' order."""
    return [CurvePoint(f"{arch}/{folder}", arch, point.method, point.name, point.series, calibration, point.x)
            for arch in sweep.architectures for point, calibration, folder in sweep.entries()]


def curves(points: list[CurvePoint]) -> dict[tuple, list[CurvePoint]]:
    """(arch, method, series, calibration) -> its points, deepest compression last (bits and clusters falling,
    sparsity rising)."""
    out: dict[tuple, list[CurvePoint]] = {}
    for point in points:
        out.setdefault((point.arch, point.method, point.series, point.calibration), []).append(point)
    for key, members in out.items():
        members.sort(key=lambda p: p.x if AXIS[p.method] == "sparsity" else -p.x)
    return out


def evaluate_sweep(frames: dict[str, pd.DataFrame], infos: dict[str, PredictionsInfo], sweep: SweepParams,
                   protected: list[str], params: EvaluateParams) -> tuple[dict[str, EvaluationResult], dict]:
    """Each slot's evaluation (its paired change against its architecture's fp32), then every curve's trend.

    ``frames`` and ``infos`` hold the test predictions and records of every slot of :func:`sweep_points` and of
    each architecture's ``<arch>/fp32``."""
    results = {}
    for arch in sweep.architectures:
        reference = frames[f"{arch}/fp32"]
        slots = [f"{arch}/fp32"] + [p.slot for p in sweep_points(sweep) if p.arch == arch]
        check_same_classes({slot: infos[slot] for slot in slots})
        for slot in slots:
            results[slot] = evaluate_variant(frames[slot], reference, infos[slot], protected, params)
    trends = []
    for (arch, method, series, calibration), members in curves(sweep_points(sweep)).items():
        reference = frames[f"{arch}/fp32"]
        groups = group_labels(reference, protected)
        y_true, reference_pred = reference["y_true"].to_numpy(), reference["y_pred"].to_numpy()
        point_preds = [frames[p.slot]["y_pred"].to_numpy() for p in members]
        multiclass = results[f"{arch}/fp32"].metrics.get("task") == "multiclass"
        if multiclass:  # each row right or wrong: per-group accuracy is what every class shares
            y_true, reference_pred, point_preds = (np.ones_like(y_true), (reference_pred == y_true).astype(np.int64),
                                                   [(pred == y_true).astype(np.int64) for pred in point_preds])
        trend = curve_trends(
            y_true, reference_pred, point_preds, [p.x for p in members], groups,
            axis=AXIS[method], left_out=[broken(results[p.slot].metrics, results[f"{arch}/fp32"].metrics)
                                         for p in members],
            privileged_group=params.privileged_group, n_boot=params.bootstrap, confidence=params.confidence,
            seed=params.seed)
        if multiclass:
            trend = accuracy_only(trend)
        kept = [p for p, reason in zip(members, trend_left_out(trend, members)) if reason is None]
        _gate(trend, [results[p.slot].vs_fp32 for p in kept])
        trends.append({"arch": arch, "method": method, "series": series, "calibration": calibration,
                       "points": [{"slot": p.slot, "point": p.name, "x": p.x} for p in members], "trend": trend})
    return results, {"curves": trends}


def accuracy_only(trend: dict) -> dict:
    """A multi-class curve's trend on correctness alone: the accuracy gap's change and each group's accuracy (the
    one-vs-rest rates' trends are per class, and a curve of worst-class gaps changes class from point to point)."""
    return {**trend, "framing": "multi-class: correctness per row (per-group accuracy)",
            "gap_changes": {"accuracy_gap": trend["gap_changes"]["accuracy_gap"]},
            "group_rates": {"accuracy": trend["group_rates"]["accuracy"]}}


def trend_left_out(trend: dict, members: list[CurvePoint]) -> list[str | None]:
    left = {entry["x"]: entry["reason"] for entry in trend["left_out"]}
    return [left.get(float(p.x)) for p in members]


def _gate(trend: dict, changes: list[dict]) -> None:
    """Each verdict checked against the kept points' own paired changes (:func:`gate_by_points`), in place."""
    for gap, answer in trend["gap_changes"].items():
        trend["gap_changes"][gap] = gate_by_points(answer, [c["gaps"][gap] for c in changes])
    for rate, by_group in trend["group_rates"].items():
        for group, answer in by_group.items():
            by_group[group] = gate_by_points(answer, [c["group_changes"][rate][group] for c in changes
                                                      if group in c["group_changes"][rate]])


def balanced_accuracy(metrics: dict) -> float:
    """Mean recall over classes (binary: of the two labels)."""
    if metrics.get("task") == "multiclass":
        return metrics["classes"]["balanced_accuracy"]
    overall = metrics["overall"]
    return (overall["tpr"] + 1 - overall["fpr"]) / 2


def chance(metrics: dict) -> float:
    """Balanced accuracy of a model that guesses: 1 / classes."""
    return 1 / len(metrics["classes"]["names"]) if metrics.get("task") == "multiclass" else 0.5


def broken(metrics: dict, fp32: dict) -> str | None:
    """Why a point is left out of its curve's trend, or None: it collapsed to one class, or it lost more than half
    of what fp32 learned above chance (balanced accuracy), so its gaps shrink with its accuracy."""
    if metrics["collapsed"]:
        return "collapsed to one class"
    margin = balanced_accuracy(fp32) - chance(fp32)
    if margin > 0 and balanced_accuracy(fp32) - balanced_accuracy(metrics) > margin / 2:
        return (f"at chance: balanced accuracy {balanced_accuracy(metrics):.3f} against fp32's "
                f"{balanced_accuracy(fp32):.3f}")
    return None


def check_same_rows(frames: dict[str, pd.DataFrame]) -> None:
    """Every slot was predicted on the same test rows, in the same order (the trend pairs them row by row)."""
    first_slot, first = next(iter(frames.items()))
    for slot, frame in frames.items():
        if not np.array_equal(frame["sample_id"].to_numpy(), first["sample_id"].to_numpy()):
            raise FairquantError(f"sweep predictions of {slot} and {first_slot} cover different test samples; "
                                 "re-run the sweep's predict stage")


_TREND_KEYS = ("axis", "depth", "left_out", "gap_changes", "group_rates")
_ANSWER_KEYS = ("points", "slope", "ci_low", "ci_high", "spearman", "spearman_ci_low", "spearman_ci_high", "verdict")


def _trends_damage(trends) -> str | None:
    """What makes ``trends`` (a trends.json as read) other than sweep_evaluate's output, or None."""
    if not isinstance(trends, dict) or not isinstance(trends.get("curves"), list):
        return "expected an object with a list of curves"
    for index, curve in enumerate(trends["curves"]):
        lacking = [k for k in ("arch", "method", "series", "calibration", "points", "trend")
                   if not isinstance(curve, dict) or k not in curve]
        if lacking:
            return f"curve {index} lacks {lacking}"
        points, trend = curve["points"], curve["trend"]
        if not isinstance(points, list) or not all(
                isinstance(p, dict) and isinstance(p.get("slot"), str) and isinstance(p.get("point"), str)
                and isinstance(p.get("x"), (int, float)) and not isinstance(p.get("x"), bool) for p in points):
            return f"curve {index}'s points are not objects with a slot, a point and a numeric x"
        if not isinstance(trend, dict) or any(k not in trend for k in _TREND_KEYS):
            return f"curve {index}'s trend lacks {[k for k in _TREND_KEYS if not isinstance(trend, dict) or k not in trend]}"
        gap_changes, group_rates = trend["gap_changes"], trend["group_rates"]
        gaps, rates = (("accuracy_gap",), ("accuracy",)) if "framing" in trend else (GAPS, RATES)  # multi-class
        if not isinstance(gap_changes, dict) or not (isinstance(group_rates, dict)
                                                     and all(isinstance(group_rates.get(r), dict) for r in rates)):
            return f"curve {index}'s gap_changes and group_rates are not objects"
        answers = [gap_changes.get(g) for g in gaps] + [a for r in rates for a in group_rates[r].values()]
        if not all(isinstance(a, dict) and all(k in a for k in _ANSWER_KEYS) for a in answers):
            return f"curve {index}'s trend lacks answers for every gap ({', '.join(gaps)}) and rate ({', '.join(rates)})"
    return None


def check_trends(trends, sweep: SweepParams, source: str) -> None:
    """``trends`` is sweep_evaluate's output for exactly the curves ``sweep`` (params.yaml's) asks for."""
    damage = _trends_damage(trends)
    if damage:
        raise FairquantError(f"{source}: not a sweep_evaluate trends file ({damage}); the file is damaged: re-run "
                             "the sweep_evaluate stage (dvc repro -f -s sweep_evaluate)")
    found = [((c["arch"], c["method"], c["series"], c["calibration"]), [(p["slot"], float(p["x"])) for p in c["points"]])
             for c in trends["curves"]]
    wanted = [(key, [(p.slot, p.x) for p in members]) for key, members in curves(sweep_points(sweep)).items()]
    if found != wanted:
        stale = sorted({s for _, pts in found for s, _ in pts} ^ {s for _, pts in wanted for s, _ in pts}) or \
            "the same points on other curves"
        raise FairquantError(f"{source} holds the sweep of other params (differs in {stale}); re-run the "
                             "sweep_evaluate stage with this params.yaml (dvc repro)")


def check_point(result: dict, slot: str, source: str) -> None:
    """A sweep point's metrics carry what the report reads: per-group intervals, and (but fp32) the group changes."""
    lacking = [f"groups.{g}.intervals" for g, v in result["groups"].items()
               if not isinstance(v, dict) or not isinstance(v.get("intervals"), dict)]
    if not slot.endswith("/fp32") and not isinstance((result.get("vs_fp32") or {}).get("group_changes"), dict):
        lacking.append("vs_fp32.group_changes")
    if lacking:
        raise FairquantError(f"{source} lacks {lacking[:3]} (written before the sweep's intervals); re-run the "
                             "sweep_evaluate stage (dvc repro -f -s sweep_evaluate)")
