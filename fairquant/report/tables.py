"""The plot tables DVC reads (plots/*.csv) and the report's figures draw: one frame per chart."""

from __future__ import annotations

import pandas as pd

from fairquant.fairness.pareto import non_dominated


def per_group_table(results: dict[str, dict]) -> pd.DataFrame:
    """Accuracy, TPR, FPR, selection rate and size of every group, per variant."""
    rows = [{"variant": r["variant"], "group": g, **{k: v[k] for k in ("accuracy", "tpr", "fpr", "selection_rate", "n")}}
            for r in results.values() for g, v in r["groups"].items()]
    return pd.DataFrame(rows)


def gaps_table(results: dict[str, dict]) -> pd.DataFrame:
    """Every gap with its CI, and its paired change vs fp32, per variant."""
    rows = []
    for r in results.values():
        for gap, v in r["gaps"].items():
            change = r.get("vs_fp32", {}).get("gaps", {}).get(gap, {})
            rows.append({"variant": r["variant"], "gap": gap, "value": v["value"], "ci_low": v["ci_low"],
                         "ci_high": v["ci_high"], "delta_vs_fp32": change.get("delta"),
                         "delta_ci_low": change.get("ci_low"), "delta_ci_high": change.get("ci_high"),
                         "p_value": change.get("p_value"), "interval_method": v.get("interval_method")})
    return pd.DataFrame(rows)


def pareto_table(results: dict[str, dict]) -> pd.DataFrame:
    """Accuracy, worst-group accuracy and size per variant, and whether no other variant is at least as good on
    all three and better on one (``pareto``: not dominated)."""
    frame = pd.DataFrame([{"variant": r["variant"], "accuracy": r["overall"]["accuracy"],
                           "worst_group_accuracy": r["worst_group_accuracy"], "size_kb": r["size_bytes"] / 1000}
                          for r in results.values()])
    points = [(row.accuracy, row.worst_group_accuracy, -row.size_kb) for row in frame.itertuples()]
    frame["pareto"] = non_dominated(points)
    return frame


def verification_tables(verify: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SER by bits per method x calibration set (with CIs), and accuracy per race per variant."""
    ser_rows, race_rows = [], []
    for name, r in verify["variants"].items():
        method = r.get("variant", {}).get("verify_method", "fp32")
        calibration = (r.get("variant", {}).get("calibration") or {}).get("set", "")
        scheme = r.get("variant", {}).get("scheme") or {}
        ser = r["summary"]["ser"]
        if method != "fp32" and not scheme.get("bits"):
            continue  # k-means and pruning have no bit-width to plot SER against
        if scheme.get("layers"):
            method += " mixed"  # some layers at other bits: not a point on the plain bit-width curve
        ser_rows.append({"variant": name, "method": method, "bits": scheme.get("bits", 32),
                         "calibration": calibration or "none", "ser": ser["value"], "ci_low": ser["ci_low"],
                         "ci_high": ser["ci_high"]})
        for race, stats in r["races"].items():
            race_rows.append({"variant": name, "race": race, "accuracy": stats["accuracy"]})
    return pd.DataFrame(ser_rows), pd.DataFrame(race_rows)
