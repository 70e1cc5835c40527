"""Metrics of one variant's test predictions, and their paired change against the fp32 reference."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import fairness_metrics, group_labels, paired_comparison
from fairquant.params import EvaluateParams


def evaluate_variant(predictions: pd.DataFrame, reference: pd.DataFrame, info: dict, protected: list[str],
                     params: EvaluateParams) -> dict:
    missing = [name for name in protected if name not in predictions.columns]
    if missing:
        raise FairquantError(f"predictions of {info['name']} lack protected columns {missing}; re-run predict")
    if not np.array_equal(predictions["sample_id"].to_numpy(), reference["sample_id"].to_numpy()):
        raise FairquantError(f"predictions of {info['name']} and fp32 cover different test samples; re-run predict")
    groups = group_labels(predictions, protected)
    if params.privileged_group is None:
        raise FairquantError(f"evaluate.privileged_group is null; set it to the reference group, one of "
                             f"{sorted(set(groups.tolist()))}")
    options = {"privileged_group": params.privileged_group, "n_boot": params.bootstrap,
               "confidence": params.confidence, "seed": params.seed, "min_group_size": params.min_group_size}
    y_true, y_pred = predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
    result = {
        "variant": info["name"], "kind": info["kind"], "kernels": info["kernels"],
        "details": info.get("details", {}), "split": "test", "synthetic": info["synthetic"],
        "protected": protected, "size_bytes": info["size_bytes"],
        "latency_ms": {mode: v["median_ms"] for mode, v in info.get("latency", {}).items()},
        **fairness_metrics(y_true, y_pred, groups, **options),
    }
    if info["kind"] != "fp32":
        result["vs_fp32"] = paired_comparison(y_true, reference["y_pred"].to_numpy(), y_pred, groups, **options)
    return result
