"""Metrics of one variant's test predictions, and their paired change against the fp32 reference."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.fairness.balancing_act import balancing_act
from fairquant.fairness.metrics import excess_drops, fairness_metrics, group_labels, paired_comparison
from fairquant.fairness.multiclass import multiclass_metrics
from fairquant.fairness.multiclass_paired import multiclass_paired
from fairquant.params import EvaluateParams
from fairquant.results import EvaluationResult, PredictionsInfo, check_label_values


def check_labels(predictions: pd.DataFrame, name: str, classes: list[str] | None = None) -> None:
    """``y_true`` and ``y_pred`` are present and integer labels (0/1, or class indices below ``len(classes)``):
    scores in ``y_pred`` would be cut to 0 silently."""
    for column in ("sample_id", "y_true", "y_pred"):
        if column not in predictions.columns:
            raise FairquantError(f"predictions of {name} lack the column {column!r}; re-run predict")
    check_label_values(predictions, classes, f"predictions of {name}", "re-run predict")


def classes_of(info: PredictionsInfo) -> list[str] | None:
    """The class names a predictions folder records (``details["classes"]``), None for a binary target."""
    classes = info.details.get("classes")
    if classes is not None and not (isinstance(classes, list) and len(classes) >= 2 and len(set(map(str, classes)))
                                    == len(classes) and all(isinstance(c, str) for c in classes)):
        raise FairquantError(f"predictions of {info.name}: details.classes in info.json is {str(classes)[:60]!r}, not "
                             f"a list of two or more distinct class names; re-run predict")
    return classes


def check_same_classes(infos: dict[str, PredictionsInfo]) -> None:
    """Every predictions folder compared here was made for the same target (classes, in order): folders left
    from another run (a binary one, or another target) would be compared class index by class index."""
    (first, reference), *others = infos.items()
    for name, info in others:
        if classes_of(info) != classes_of(reference):
            raise FairquantError(f"predictions of {name} are for classes {classes_of(info)} but {first}'s for "
                                 f"{classes_of(reference)}; they come from different runs: re-run predict for both "
                                 f"(dvc repro)")


def check_same_test_rows(frame: pd.DataFrame, reference: pd.DataFrame, columns: list[str], *, name: str,
                         reference_name: str, fix: str, split: str = "test") -> None:
    """``frame`` holds ``reference``'s test rows, row for row: the same ``columns`` (sample id, true label, groups)
    in the same order. Predictions renamed, relabelled, reordered or of other groups would otherwise be measured as if
    they were the test split's."""
    if len(frame) != len(reference):
        raise FairquantError(f"{name} holds {len(frame)} {split} rows but {reference_name} {len(reference)}; {fix}")
    for column in columns:
        ours, theirs = frame[column].to_numpy(), reference[column].to_numpy()
        if column != "y_true":  # ids and groups compare as text (a stored str column may read back as object)
            ours, theirs = ours.astype(str), theirs.astype(str)
        differ = np.flatnonzero(ours != theirs)
        if differ.size:
            row = int(differ[0])
            raise FairquantError(f"{name} and {reference_name} differ in {column!r} in {differ.size} rows (first row "
                                 f"{row}: {ours[row].item()!r} vs {theirs[row].item()!r}); {fix}")


def check_against_prepared(predictions: pd.DataFrame, samples: pd.DataFrame, protected: list[str], *,
                           name: str = "fp32", source: str = "samples.parquet", split: str = "test") -> None:
    """The predictions cover the prepared ``split`` (``samples``: the prepare stage's table) row for row: its sample
    ids, true labels and groups, in its order."""
    absent = [column for column in ("sample_id", "split", "y_true", *protected) if column not in samples.columns]
    if absent:
        raise FairquantError(f"{source} lacks the columns {absent}; re-run prepare (dvc repro)")
    rows = samples[samples["split"] == split].reset_index(drop=True)
    check_same_test_rows(predictions, rows, ["sample_id", "y_true", *protected], name=f"{split} predictions of {name}",
                         reference_name=f"the prepared {split} split ({source})",
                         fix="they come from another prepared dataset or were edited: re-run predict (dvc repro)",
                         split=split)


def evaluate_variant(predictions: pd.DataFrame, reference: pd.DataFrame, info: PredictionsInfo, protected: list[str],
                     params: EvaluateParams, baseline: tuple[str, pd.DataFrame] | None = None) -> EvaluationResult:
    """Metrics of one variant on the test split, its paired change vs fp32 (``reference``) and, for a remedy, vs
    the unmitigated variant it fixes (``baseline``: slot and predictions). A remedy fine-tuned under a
    constraint also gets the constraint measured on test, next to train and validation from its stage."""
    missing = [name for name in protected if name not in predictions.columns]
    if missing:
        raise FairquantError(f"predictions of {info.name} lack protected columns {missing}; re-run predict")
    classes = classes_of(info)
    check_labels(predictions, info.name, classes)
    if not np.array_equal(predictions["sample_id"].to_numpy(), reference["sample_id"].to_numpy()):
        raise FairquantError(f"predictions of {info.name} and fp32 cover different test samples; re-run predict")
    check_same_test_rows(predictions, reference, ["y_true", *protected], name=f"predictions of {info.name}",
                         reference_name="fp32's", fix="one of them was edited or is from another run: re-run predict")
    groups = group_labels(predictions, protected)
    if params.privileged_group is None:
        raise FairquantError(f"evaluate.privileged_group is null; set it to the reference group, one of "
                             f"{sorted(set(groups.tolist()))}")
    options = {"privileged_group": params.privileged_group, "n_boot": params.bootstrap,
               "confidence": params.confidence, "seed": params.seed, "min_group_size": params.min_group_size}
    y_true, y_pred = predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
    if not np.array_equal(y_true, reference["y_true"].to_numpy()):
        raise FairquantError(f"predictions of {info.name} and fp32 hold different true labels; re-run predict")
    if classes:  # a multi-class target: per class rates, worst-class gaps, Balancing Act's drops
        options["classes"] = classes
        measure, compare = multiclass_metrics, multiclass_paired
    else:
        measure, compare = fairness_metrics, paired_comparison
    result = EvaluationResult(variant=info.name, kind=info.kind, kernels=info.kernels, details=info.details,
                              synthetic=info.synthetic, protected=protected, size_bytes=info.size_bytes,
                              latency_ms=info.latency_ms, metrics=measure(y_true, y_pred, groups, **options))
    if info.name != "fp32":
        result.vs_fp32 = compare(y_true, reference["y_pred"].to_numpy(), y_pred, groups, **options)
        if not classes:  # Balancing Act's drops need only correctness: binary variants get them too
            result.vs_fp32["balancing_act"] = balancing_act(
                y_true, reference["y_pred"].to_numpy(), y_pred, groups, n_boot=params.bootstrap,
                confidence=params.confidence, seed=params.seed, min_group_size=params.min_group_size)
    if baseline is not None:
        slot, frame = baseline
        if not np.array_equal(frame["sample_id"].to_numpy(), predictions["sample_id"].to_numpy()):
            raise FairquantError(f"predictions of {info.name} and of {slot} cover different test samples; "
                                 f"re-run predict")
        result.baseline = slot
        result.vs_baseline = compare(y_true, frame["y_pred"].to_numpy(), y_pred, groups, **options)
    mitigation = info.mitigation
    if mitigation is not None and mitigation.get("constraint") is not None:
        result.constraint = _constraint_record(mitigation, y_true, reference["y_pred"].to_numpy(), y_pred, groups,
                                               None if baseline is None else baseline[1]["y_pred"].to_numpy())
    return result


def _constraint_record(mitigation: dict, y_true: np.ndarray, fp32: np.ndarray, y_pred: np.ndarray,
                       groups: np.ndarray, baseline: np.ndarray | None) -> dict:
    """The remedy's constraint (train and validation, from its stage) with its excess drops measured on test and,
    given the unconstrained variant's predictions (``baseline``), what that variant gave."""
    rate = mitigation["params"]["rate"]
    test = excess_drops(y_true, fp32, y_pred, groups, rate)
    tolerance = mitigation["params"].get("tolerance")
    test.update(tolerance=tolerance, holds=None if tolerance is None else bool(test["max_excess_drop"] <= tolerance))
    record = {**mitigation["constraint"], "test": test}
    if baseline is not None:  # what the unconstrained variant gave: did the constraint change anything?
        record["test_baseline"] = excess_drops(y_true, fp32, baseline, groups, rate)
    record["multipliers"] = mitigation.get("multipliers", {})
    return record
