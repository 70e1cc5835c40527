"""The headline numbers of one evaluated variant (metrics/summary.json, and cut from it the per-variant rows that
`dvc metrics show`, `dvc metrics diff` and `dvc exp show` display), and the verdict on a change's interval. Metrics
dicts in, plain values out; the report and the seeds module read them."""

from __future__ import annotations

from typing import Literal

HEADLINE_GAPS = ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap")
MULTICLASS_GAPS = ("accuracy_gap",) + HEADLINE_GAPS  # the one-vs-rest gaps are each the worst class's
Verdict = Literal["widens", "narrows", "no detectable change", "undefined"]


def headline_gaps(result: dict) -> tuple[str, ...]:
    """The gaps a variant's tables lead with: equal opportunity, FPR, equalized odds and DP for a binary target; for a
    multi-class one the accuracy gap first (the one-vs-rest gaps are the worst class's), and with the class as the
    group the accuracy gap alone (the others are degenerate there)."""
    if result.get("task") != "multiclass":
        return HEADLINE_GAPS
    return ("accuracy_gap",) if result.get("class_as_group") else MULTICLASS_GAPS


def worst_difference(r: dict, rate: str) -> tuple[str | None, dict]:
    """The non-reference group whose ``rate`` is farthest from the privileged group's, and its signed difference."""
    defined = {g: d for g, d in r["signed"].get(rate, {}).items() if not is_missing(d["value"])}
    if not defined:
        return None, {}
    group = max(defined, key=lambda g: abs(defined[g]["value"]))
    return group, defined[group]


def is_missing(value) -> bool:
    """None or NaN: the metrics store an undefined rate either way."""
    return value is None or value != value


def excludes_zero(interval: dict) -> bool | None:
    """Whether the interval lies wholly above or below 0; None when an end is undefined."""
    if is_missing(interval["ci_low"]) or is_missing(interval["ci_high"]):
        return None
    return interval["ci_low"] > 0 or interval["ci_high"] < 0


def change_verdict(change: dict) -> Verdict:
    """A gap change's verdict from its interval: widens / narrows only when the whole interval is above / below 0."""
    if excludes_zero(change) is None:
        return "undefined"
    if change["ci_low"] > 0:
        return "widens"
    if change["ci_high"] < 0:
        return "narrows"
    return "no detectable change"


def summary(results: dict[str, dict]) -> dict:
    """The headline of every variant, keyed by pipeline slot (fp32, ptq, ...); :func:`variant_rows` cuts DVC's rows
    from it.

    Slots, not descriptive names, are the keys so that two experiments with different bit-widths line up
    in the same columns; the descriptive name is in each variant's metrics file and in the report.
    """
    out = {}
    for slot, r in results.items():
        compiled = r["latency_ms"].get("compiled")
        group, tpr = worst_difference(r, "tpr")
        out[slot] = {
            "accuracy": r["overall"]["accuracy"],
            **{k: r["gaps"][k]["value"] for k in HEADLINE_GAPS},
            "worst_group_accuracy": r["worst_group_accuracy"],
            "size_bytes": r["size_bytes"],
            "latency_ms": compiled,
            "flip_rate": r.get("vs_fp32", {}).get("flip_rate", 0.0),
            "tpr_diff": tpr.get("value"), "tpr_diff_ci_low": tpr.get("ci_low"), "tpr_diff_ci_high": tpr.get("ci_high"),
            "tpr_diff_group": group,
        }
        if r.get("task") == "multiclass":
            out[slot].update(multiclass_headline(r))
    out["synthetic_data"] = any(r["synthetic"] for r in results.values())
    return out


def multiclass_headline(r: dict) -> dict:
    """A multi-class variant's extra headline: the worst class's recall and, vs fp32, Balancing Act's largest
    excess accuracy drop over groups and over classes (0 for fp32 itself)."""
    out = {"balanced_accuracy": r["classes"]["balanced_accuracy"], "worst_class": r["classes"]["worst_class"],
           "worst_class_recall": r["classes"]["worst_class_recall"]}
    for key, block in (("max_excess_drop", "balancing_act"), ("max_class_excess_drop", "balancing_act_by_class")):
        entry = (r.get("vs_fp32") or {}).get(block, {}).get("max_excess_drop")
        out[key] = 0.0 if "vs_fp32" not in r else (entry or {}).get("value")
    return out


VERIFICATION_KEYS = ("verification_accuracy", "verification_std", "ser")


def verification_summary(verify: dict) -> dict:
    """Per verification variant: ser, verification_std, verification_accuracy, acc_<race>, the SER change vs
    fp32 and the size (what dvc metrics diff shows); per bits curve, the slopes and verdicts of SER and accuracy."""
    out = {}
    for name, r in verify["variants"].items():
        estimates = r["summary"]
        row = {key: _value(estimates[key]) for key in VERIFICATION_KEYS}
        row.update({key: _value(v) for key, v in estimates.items() if key.startswith("acc_")})
        if r.get("change"):
            row["ser_change"] = r["change"]["ser"]["delta"]
        row["size_bytes"] = r.get("variant", {}).get("size_bytes")
        out[name] = row
    for name, curve in (verify.get("trends") or {}).items():  # each bits curve in a few keys
        out[f"trend {name}"] = {"ser_slope": curve["ser"]["slope"], "ser_verdict": curve["ser"]["verdict"],
                                "accuracy_slope": curve["verification_accuracy"]["slope"],
                                "accuracy_verdict": {"widens": "rises", "narrows": "falls"}.get(
                                    curve["verification_accuracy"]["verdict"], curve["verification_accuracy"]["verdict"])}
    out["synthetic_data"] = bool(verify.get("synthetic"))
    return out


def _value(estimate: dict | None):
    return None if not estimate else estimate.get("value")


# One metrics file per variant (metrics/variants/<slot>.json, metrics/verify/<variant>.json): each a row of
# `dvc metrics show`, every row drawn from the same few keys, so the table's columns do not grow with the variants,
# races or seeds. The values are :func:`summary`'s (and :func:`verification_summary`'s), never recomputed.
VARIANT_ROW_KEYS = ("accuracy", "worst_group_accuracy", *HEADLINE_GAPS, "flip_rate", "size_bytes", "latency_ms")
MULTICLASS_ROW_KEYS = ("balanced_accuracy", "worst_class_recall", "max_excess_drop", "max_class_excess_drop")
VERIFY_ROW_KEYS = ("verification_accuracy", "verification_std", "worst_group_accuracy", "ser", "ser_change",
                   "size_bytes")


def variant_rows(headline: dict) -> dict[str, dict]:
    """Per slot, the flat row of ``headline`` (:func:`summary` or its mean over seeds): :data:`VARIANT_ROW_KEYS`, and
    :data:`MULTICLASS_ROW_KEYS` for a multi-class target; every key present (null when undefined)."""
    rows = {}
    for slot, values in headline.items():
        if not isinstance(values, dict) or slot == "verify":  # synthetic_data, seeds, verify: not a variant
            continue
        keys = VARIANT_ROW_KEYS + (MULTICLASS_ROW_KEYS if "balanced_accuracy" in values else ())
        rows[slot] = {key: values.get(key) for key in keys}
    return rows


def verification_rows(verify_headline: dict) -> dict[str, dict]:
    """Per verification variant, the flat row of :func:`verification_summary`'s entry: :data:`VERIFY_ROW_KEYS`, the
    worst group's accuracy being the lowest ``acc_<race>`` (race names differ between datasets: the per-race
    accuracies stay in summary.json); ``ser_change`` is null for fp32."""
    rows = {}
    for name, values in verify_headline.items():
        if not isinstance(values, dict) or name.startswith("trend "):
            continue
        races = [v for key, v in values.items() if key.startswith("acc_") and _is_number(v)]
        row = {**values, "worst_group_accuracy": min(races) if races else None}
        rows[name] = {key: row.get(key) for key in VERIFY_ROW_KEYS}
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
