"""The verification branch in the report: seed 001's tables (per-race accuracy, mean, STD, SER for fp32 and each
method x bits x calibration set), paired changes vs fp32 and vs real-data calibration, one global threshold's
per-race FMR / FNMR, the synthetic set's estimated race mix, SER by bits, and the summary keys for DVC."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fairquant.io import write_csv  # noqa: E402
from fairquant.report import _save as save_figure  # noqa: E402

SUMMARY_KEYS = ("verification_accuracy", "verification_std", "ser")


def _value(estimate: dict | None):
    return None if not estimate else estimate.get("value")


def summary_keys(verify: dict) -> dict:
    """Per variant: ser, verification_std, verification_accuracy, acc_<race> (what dvc metrics diff shows)."""
    out = {}
    for name, r in verify["variants"].items():
        summary = r["summary"]
        row = {key: _value(summary[key]) for key in SUMMARY_KEYS}
        row.update({key: _value(v) for key, v in summary.items() if key.startswith("acc_")})
        if r.get("change"):
            row["ser_change"] = r["change"]["ser"]["delta"]
        row["size_bytes"] = r.get("variant", {}).get("size_bytes")
        out[name] = row
    out["synthetic_data"] = bool(verify.get("synthetic"))
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _num(v, digits: int = 3) -> str:
    return "inf" if v is None else f"{v:.{digits}f}"


def _est(e: dict, pct: bool = True) -> str:
    """'value [low, high]'; a non-finite value (SER with an error-free race) says so."""
    if e["value"] is None:
        return e.get("nonfinite", {}).get("value", "undefined")
    fmt = _pct if pct else _num
    if e["ci_low"] is None:
        return fmt(e["value"])
    return f"{fmt(e['value'])} [{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"


def _point(e: dict, pct: bool = True) -> str:
    if e["value"] is None:
        return e.get("nonfinite", {}).get("value", "undefined")
    return (_pct if pct else _num)(e["value"])


def _change(c: dict | None, pct: bool = True) -> str:
    if not c:
        return ""
    if c["delta"] is None:
        return "undefined"
    scale = 100 if pct else 1
    text = f"{scale * c['delta']:+.2f} [{_bound(c['ci_low'], scale)}, {_bound(c['ci_high'], scale)}]"
    if c.get("excludes_zero"):
        text += " *"
    return text


def _bound(v, scale) -> str:
    return "inf" if v is None else f"{scale * v:+.2f}"


def _describe(r: dict) -> tuple[str, str, str]:
    """(method, bits, calibration set) as the report shows them: int8 kernels with reduce_range run 7-bit
    activations (CPUs without VNNI), and say so."""
    v = r.get("variant", {})
    method = v.get("verify_method", "fp32")
    scheme = v.get("scheme") or {}
    if scheme.get("bits"):
        activations = scheme["activation_bits"]
        if (v.get("int8_check") or {}).get("reduce_range"):
            activations = f"{activations} (7-bit: reduce_range)"
        bits = f"W{scheme['bits']}A{activations}"
        if scheme.get("layers"):
            bits += ", " + ", ".join(f"{k}: {'float' if b is None else b}" for k, b in scheme["layers"].items())
    elif method == "kmeans":
        bits = f"k={v.get('clusters')}"
    elif method == "prune":
        bits = f"sparsity {v.get('sparsity', 0):.2f}"
    else:
        bits = "fp32"
    if v.get("kernels") == "int8":
        method += " (int8 kernels)"
    return method, bits, (v.get("calibration") or {}).get("set", "")


def tables(verify: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plot tables: SER by bits per method x calibration (with CIs), and accuracy per race per variant."""
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


def draw_ser(ser: pd.DataFrame, folder: Path, synthetic: bool, level: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    fp32 = ser[ser["method"] == "fp32"]
    if len(fp32) and fp32["ser"].notna().all():
        ax.axhline(float(fp32["ser"].iloc[0]), color="black", linestyle="--", label="fp32")
    for (method, calibration), part in ser[ser["method"] != "fp32"].groupby(["method", "calibration"]):
        part = part.sort_values("bits").dropna(subset=["ser"])
        if part.empty:
            continue
        low = (part["ser"] - part["ci_low"]).clip(lower=0).fillna(0)
        high = (part["ci_high"] - part["ser"]).clip(lower=0).fillna(0)
        ax.errorbar(part["bits"], part["ser"], yerr=[low, high], marker="o", capsize=3,
                    linestyle="-" if calibration == "train" else ":", label=f"{method}, {calibration} calibration")
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("SER (max race error / min race error)")
    ax.invert_xaxis()
    ax.set_title(f"SER by bits, {level} bootstrap CI" + (" (SYNTHETIC data)" if synthetic else ""))
    ax.legend(fontsize=8)
    path = folder / "verify_ser.png"
    save_figure(fig, path)
    return path


def section(verify: dict, folder: Path) -> list[str]:
    """Write the plot tables and figure into ``folder``; return the report's markdown lines."""
    level = f"{100 * verify['confidence']:g}%"
    races = verify["races"]
    ser, per_race = tables(verify)
    write_csv(folder / "verify_ser.csv", ser)
    write_csv(folder / "verify_per_race.csv", per_race)
    figure = draw_ser(ser, folder, bool(verify.get("synthetic")), level)
    lines = ["", "## Face verification: race bias on RFW's protocol (seed 001)", ""]
    if verify.get("synthetic"):
        lines += ["**SYNTHETIC data**: generated identities in the BUPT and RFW layouts, not photographs of people.", ""]
    first = next(iter(verify["variants"].values()))
    per_race = ", ".join(f"{race} {first['races'][race]['pairs']}" for race in races)
    lines += [f"Pairs per race: {per_race}, 10 folds. Per race, "
              "insightface's protocol: embeddings of the image and its mirror summed and normalised; the threshold "
              "maximising accuracy on 9 folds is applied to the 10th. STD is the standard deviation of the race "
              f"accuracies; SER = max race error / min race error. Brackets: {level} bootstrap CIs (pairs resampled "
              "within race x fold x genuine, thresholds re-chosen in each resample). STD and SER are shown without "
              "one: both are biased upward (a max/min and a spread exceed their no-difference values on any finite "
              "sample; their resamples mostly lie above the estimate, so a percentile interval would not even "
              "contain it; `metrics/verify.json` keeps it). Whether races differ is read from the pairwise "
              "differences below; whether compression moved SER, from its paired change.", "",
              "| variant | method | bits | calibration | " + " | ".join(races) + " | mean | STD | SER |",
              "|---|---|---|---|" + "---|" * len(races) + "---|---|---|"]
    for name, r in verify["variants"].items():
        method, bits, calibration = _describe(r)
        s = r["summary"]
        lines.append(f"| {name} | {method} | {bits} | {calibration} | "
                     + " | ".join(_est(s[f"acc_{race}"]) for race in races)
                     + f" | {_est(s['verification_accuracy'])} | {_point(s['verification_std'])} | "
                     f"{_point(s['ser'], pct=False)} |")
    lines += _difference_lines(verify, level)
    lines += ["", f"### Paired change vs fp32 (points; SER as a ratio; * = the {level} CI excludes 0)", "",
              "| variant | " + " | ".join(f"Δ {race}" for race in races) + " | Δ mean | Δ STD | Δ SER |",
              "|---|" + "---|" * len(races) + "---|---|---|"]
    for name, r in verify["variants"].items():
        c = r.get("change")
        if not c:
            continue
        lines.append(f"| {name} | " + " | ".join(_change(c[f"acc_{race}"]) for race in races)
                     + f" | {_change(c['verification_accuracy'])} | {_change(c['verification_std'])} | "
                     f"{_change(c['ser'], pct=False)} |")
    contrasts = {n: r["vs_real_calibration"] for n, r in verify["variants"].items() if r.get("vs_real_calibration")}
    if contrasts:
        lines += ["", "### Synthetic (or balanced) vs real-data calibration, same method and bits (paired)", "",
                  "| variant | vs | Δ mean | Δ STD | Δ SER |", "|---|---|---|---|---|"]
        for name, c in contrasts.items():
            lines.append(f"| {name} | {c['reference']} | {_change(c['verification_accuracy'])} | "
                         f"{_change(c['verification_std'])} | {_change(c['ser'], pct=False)} |")
    lines += _threshold_lines(verify, races, level)
    lines += _race_mix_lines(verify.get("synthetic_race_mix"))
    lines += ["", f"![verify_ser]({figure.name})", ""]
    return lines


def _difference_lines(verify: dict, level: str) -> list[str]:
    """Whether the races differ at all: SER and STD exceed their no-difference values on any finite sample, so
    their intervals cannot say; pairwise differences with simultaneous intervals can."""
    rows = {n: r["race_differences"] for n, r in verify["variants"].items() if r.get("race_differences")}
    if not rows:
        return []
    pairs = list(next(iter(rows.values()))["pairs"])
    lines = ["", f"### Do the races differ? Pairwise accuracy differences (points, {level} simultaneous, Bonferroni; "
                 "* = excludes 0)", "", "| variant | " + " | ".join(pairs) + " | any |", "|---|" + "---|" * len(pairs) + "---|"]
    for name, d in rows.items():
        lines.append(f"| {name} | " + " | ".join(_change(d["pairs"][p]) for p in pairs)
                     + f" | {'yes' if d['any_excludes_zero'] else 'no'} |")
    return lines


def _threshold_lines(verify: dict, races: list[str], level: str) -> list[str]:
    lines = ["", "### One global threshold", "",
             "Per-race thresholds hide threshold-driven bias. One threshold, chosen on folds 0-4 of all races pooled"
             + (f" at FMR {verify['target_fmr']:g}" if verify.get("target_fmr") else " (maximum accuracy)")
             + ", applied to folds 5-9: FMR and FNMR per race (%), their max/min ratios, FDR, IR and GARBE "
               "(a = 0.5).", "",
             "| variant | threshold (cos) | " + " | ".join(f"FMR {r}" for r in races) + " | "
             + " | ".join(f"FNMR {r}" for r in races) + " | FMR max/min | FNMR max/min | FDR | GARBE |",
             "|---|---|" + "---|" * (2 * len(races)) + "---|---|---|---|"]
    for name, r in verify["variants"].items():
        g = r["global_threshold"]
        lines.append(f"| {name} | {g['cosine']:.3f} | " + " | ".join(_est(g["races"][x]["fmr"]) for x in races)
                     + " | " + " | ".join(_est(g["races"][x]["fnmr"]) for x in races)
                     + f" | {_est(g['fmr_ratio'], False)} | {_est(g['fnmr_ratio'], False)} | {_est(g['fdr'], False)} | "
                     f"{_est(g['garbe'], False)} |")
    shifted = {n: r["at_reference_threshold"] for n, r in verify["variants"].items() if r.get("at_reference_threshold")}
    if shifted:
        lines += ["", f"Each compressed variant at the fp32 model's global threshold: the per-race FMR shift (points, "
                      f"{level} CI; * = excludes 0). A deployment that keeps its threshold after compressing sees these.",
                  "", "| variant | " + " | ".join(f"Δ FMR {r}" for r in races) + " | "
                  + " | ".join(f"Δ FNMR {r}" for r in races) + " |", "|---|" + "---|" * (2 * len(races))]
        for name, a in shifted.items():
            lines.append(f"| {name} | " + " | ".join(_change(a["races"][x]["fmr_change"]) for x in races) + " | "
                         + " | ".join(_change(a["races"][x]["fnmr_change"]) for x in races) + " |")
    return lines


def _race_mix_lines(mix: dict | None) -> list[str]:
    if not mix:
        return ["", "The synthetic calibration set's race mix was not estimated (no synthetic set, or training "
                    "races unknown)."]
    probe = mix["probe"]
    on_test = (f", on the labelled test faces {probe['test_balanced_accuracy']:.3f}"
               if "test_balanced_accuracy" in probe else "")
    lines = ["", "### The synthetic calibration set's race mix (estimated, as seed 001 did)", "",
             f"A linear race classifier on the fp32 embeddings (balanced class weights), fitted on training identities; "
             f"balanced accuracy on {probe['held_out_identities']} held-out training identities "
             f"{probe['held_out_balanced_accuracy']:.3f}{on_test}. Applied to the {mix['images']} synthetic faces: "
             "the shares it predicts, and the shares adjusted by its confusion matrix on the held-out identities.", "",
             "| race | classified | adjusted |" + (" true (generator) |" if mix.get("true") else ""),
             "|---|---|---|" + ("---|" if mix.get("true") else "")]
    for race, share in mix["estimated"].items():
        row = f"| {race} | {mix['classified'][race]:.3f} | {share:.3f} |"
        if mix.get("true"):
            row += f" {mix['true'].get(race, 0.0):.3f} |"
        lines.append(row)
    return lines
