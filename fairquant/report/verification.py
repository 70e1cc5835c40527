"""The verification branch's sections, as in "Compressed Models Decompress Race Biases" (BIOSIG 2023): per-race
accuracy, mean, STD and SER for fp32 and each method x bits x calibration set, whether races differ, paired changes
vs fp32 and vs real-data calibration, one global threshold's per-race FMR / FNMR, and the synthetic calibration
set's estimated race mix. Built from metrics/verify.json."""

from __future__ import annotations

import math

import pandas as pd

from fairquant.report.document import Cell, Figure, Section, code, prose, strong, table
from fairquant.report.numbers import fmt, level
from fairquant.report.tables import verification_tables

REFERENCE_WORK = '"Compressed Models Decompress Race Biases"'


def describe_variant(r: dict) -> tuple[str, str, str]:
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


def _stored(e: dict, key: str, default: float | None = None) -> float | None:
    """``e[key]``; a non-finite one is stored as null and named in ``e["nonfinite"]`` ("inf", "-inf", "undefined"),
    and read back as that. A null without a name is ``default``."""
    if e.get(key) is not None:
        return e[key]
    named = (e.get("nonfinite") or {}).get(key)
    if named is None:
        return default
    return math.nan if named == "undefined" else float(named)


def point(e: dict) -> float | None:
    """An estimate's value: an SER or a max/min ratio with an error-free race prints as inf, not as undefined."""
    return _stored(e, "value")


def _unbounded(e: dict, low: str, high: str) -> tuple[float, float]:
    """A ratio's (or a change's) interval; an end stored as null without a name is unbounded (a resample with an
    error-free race), as the report has always printed it."""
    return _stored(e, low, -math.inf), _stored(e, high, math.inf)


def estimate_cell(e: dict, pct: bool = True) -> Cell:
    """'value [low, high]' in percent (or as a ratio); the value alone where the estimate has no interval."""
    kind = "pct" if pct else "num"
    bounds = None if e["value"] is None or e["ci_low"] is None else (e["ci_low"], e["ci_high"])
    if bounds is not None and not pct:
        bounds = _unbounded(e, "ci_low", "ci_high")
    return Cell(point(e), kind, interval=bounds)


def change_cell(c: dict | None, pct: bool = True) -> Cell:
    """A paired change: signed points (or ratio), its CI, and a '*' note when the CI excludes 0; blank if none."""
    if not c:
        return Cell("")
    kind = "pct_change" if pct else "change"
    if c["delta"] is None:
        return Cell(_stored(c, "delta"), kind)
    return Cell(c["delta"], kind, interval=_unbounded(c, "ci_low", "ci_high"),
                note="*" if c.get("excludes_zero") else None)


def verification_section(verify: dict) -> Section:
    """The whole verification branch: the per-race table and SER figure, then one subsection per question."""
    races, lv = verify["races"], level(verify["confidence"])
    ser, _ = verification_tables(verify)
    first = next(iter(verify["variants"].values()))
    blocks = []
    if verify.get("synthetic"):
        blocks.append(prose(strong("SYNTHETIC data"),
                            ": generated identities in the BUPT and RFW layouts, not photographs of people."))
    audited = (verify["variants"].get("fp32") or {}).get("variant", {})
    if audited.get("trained_here") is False:
        blocks.append(prose(strong("Audited as it is"), f": the fp32 backbone is {audited.get('pretrained')}, not "
                            "trained here (verify.train.epochs 0); every variant compresses it."))
    pairs = ", ".join(f"{race} {first['races'][race]['pairs']}" for race in races)
    blocks.append(prose(
        f"Pairs per race: {pairs}, 10 folds. Per race, "
        "insightface's protocol: embeddings of the image and its mirror summed and normalised; the threshold "
        "maximising accuracy on 9 folds is applied to the 10th. STD is the standard deviation of the race accuracies; SER = max "
        f"race error / min race error. Brackets: {lv} bootstrap CIs (pairs resampled within race x fold x genuine, "
        "thresholds re-chosen in each resample). STD and SER are shown without one: both are biased upward (a max/min "
        "and a spread exceed their no-difference values on any finite sample; their resamples mostly lie above the "
        "estimate, so a percentile interval would not even contain it; ", code("metrics/verify.json"), " keeps it). "
        "Whether races differ is read from the pairwise differences below; whether compression moved SER, from its "
        "paired change."))
    rows = []
    for name, r in verify["variants"].items():
        s = r["summary"]
        rows.append([Cell(name), *map(Cell, describe_variant(r)), *(estimate_cell(s[f"acc_{race}"]) for race in races),
                     estimate_cell(s["verification_accuracy"]), Cell(s["verification_std"]["value"], "pct"),
                     Cell(point(s["ser"]), "num")])
    blocks.append(table(["variant", "method", "bits", "calibration", *races, "mean", "STD", "SER"], rows))
    blocks.append(Figure("verify_ser", "ser_by_bits", ser, synthetic=bool(verify.get("synthetic")),
                         confidence=verify["confidence"]))
    subsections = [*_difference_sections(verify, lv), _change_section(verify, races, lv),
                   *_bits_sections(verify, races, lv), *_contrast_sections(verify),
                   _threshold_section(verify, races, lv),
                   _race_mix_section(verify.get("synthetic_race_mix"))]
    return Section(f"Face verification: race bias on RFW's protocol ({REFERENCE_WORK})", tuple(blocks),
                   tuple(subsections))


def _difference_sections(verify: dict, lv: str) -> list[Section]:
    """Whether the races differ at all: SER and STD exceed their no-difference values on any finite sample, so
    their intervals cannot say; pairwise differences with simultaneous intervals can."""
    rows = {n: r["race_differences"] for n, r in verify["variants"].items() if r.get("race_differences")}
    if not rows:
        return []
    pairs = list(next(iter(rows.values()))["pairs"])
    body = [[Cell(name), *(change_cell(d["pairs"][p]) for p in pairs), Cell("yes" if d["any_excludes_zero"] else "no")]
            for name, d in rows.items()]
    return [Section(f"Do the races differ? Pairwise accuracy differences (points, {lv} simultaneous, Bonferroni; "
                    "* = excludes 0)", (table(["variant", *pairs, "any"], body),))]


def _change_section(verify: dict, races: list[str], lv: str) -> Section:
    rows = [[Cell(name), *(change_cell(c[f"acc_{race}"]) for race in races), change_cell(c["verification_accuracy"]),
             change_cell(c["verification_std"]), change_cell(c["ser"], pct=False)]
            for name, r in verify["variants"].items() for c in [r.get("change")] if c]
    return Section(f"Paired change vs fp32 (points; SER as a ratio; * = the {lv} CI excludes 0)",
                   (table(["variant", *(f"Δ {race}" for race in races), "Δ mean", "Δ STD", "Δ SER"], rows),))


def _contrast_sections(verify: dict) -> list[Section]:
    contrasts = {n: r["vs_real_calibration"] for n, r in verify["variants"].items() if r.get("vs_real_calibration")}
    if not contrasts:
        return []
    rows = [[Cell(name), Cell(c["reference"]), change_cell(c["verification_accuracy"]),
             change_cell(c["verification_std"]), change_cell(c["ser"], pct=False)] for name, c in contrasts.items()]
    return [Section("Synthetic (or balanced) vs real-data calibration, same method and bits (paired)",
                    (table(["variant", "vs", "Δ mean", "Δ STD", "Δ SER"], rows),))]


def _threshold_section(verify: dict, races: list[str], lv: str) -> Section:
    """Per-race FMR and FNMR at one global threshold, and how a compressed variant moves them at fp32's."""
    chosen = f" at FMR {verify['target_fmr']:g}" if verify.get("target_fmr") else " (maximum accuracy)"
    rows = []
    for name, r in verify["variants"].items():
        g = r["global_threshold"]
        rows.append([Cell(name), Cell(g["cosine"], "num"), *(estimate_cell(g["races"][x]["fmr"]) for x in races),
                     *(estimate_cell(g["races"][x]["fnmr"]) for x in races),
                     *(estimate_cell(g[key], pct=False) for key in ("fmr_ratio", "fnmr_ratio", "fdr", "garbe"))])
    blocks = [prose("Per-race thresholds hide threshold-driven bias. One threshold, chosen on folds 0-4 of all races "
                    f"pooled{chosen}, applied to folds 5-9: FMR and FNMR per race (%), their max/min ratios, FDR, IR "
                    "and GARBE (a = 0.5)."),
              table(["variant", "threshold (cos)", *(f"FMR {x}" for x in races), *(f"FNMR {x}" for x in races),
                     "FMR max/min", "FNMR max/min", "FDR", "GARBE"], rows)]
    shifted = {n: r["at_reference_threshold"] for n, r in verify["variants"].items() if r.get("at_reference_threshold")}
    if shifted:
        blocks += [prose(f"Each compressed variant at the fp32 model's global threshold: the per-race FMR shift "
                         f"(points, {lv} CI; * = excludes 0). A deployment that keeps its threshold after compressing "
                         "sees these."),
                   table(["variant", *(f"Δ FMR {x}" for x in races), *(f"Δ FNMR {x}" for x in races)],
                         [[Cell(name), *(change_cell(a["races"][x]["fmr_change"]) for x in races),
                           *(change_cell(a["races"][x]["fnmr_change"]) for x in races)]
                          for name, a in shifted.items()])]
    return Section("One global threshold", tuple(blocks))


def _race_mix_section(mix: dict | None) -> Section:
    title = f"The synthetic calibration set's race mix (estimated, as {REFERENCE_WORK} did)"
    if not mix:
        return Section(title, (prose("The synthetic calibration set's race mix was not estimated (no synthetic set, or "
                                     "training races unknown)."),))
    probe = mix["probe"]
    on_test = (f", on the labelled test faces {fmt(probe['test_balanced_accuracy'])}"
               if "test_balanced_accuracy" in probe else "")
    columns = ["race", "classified", "adjusted", *(["true (generator)"] if mix.get("true") else [])]
    rows = [[Cell(race), Cell(mix["classified"][race], "num"), Cell(share, "num"),
             *([Cell(mix["true"].get(race, 0.0), "num")] if mix.get("true") else [])]
            for race, share in mix["estimated"].items()]
    return Section(title, (
        prose("A linear race classifier on the fp32 embeddings (balanced class weights), fitted on training "
              f"identities; balanced accuracy on {probe['held_out_identities']} held-out training identities "
              f"{fmt(probe['held_out_balanced_accuracy'])}{on_test}. Applied to the {mix['images']} synthetic faces: "
              "the shares it predicts, and the shares adjusted by its confusion matrix on the held-out identities."),
        table(columns, rows)))


# --- race bias against bits: one curve per method x calibration set ---------------------------------------------

CURVE_COLUMNS = ["method", "calibration", "bits", "race", "accuracy", "ci_low", "ci_high"]


def curve_table(verify: dict) -> pd.DataFrame:
    """plots/verify_curve.csv: each race's accuracy and its CI per curve (method x calibration set) and bit-width,
    one row per race, with fp32 once (method fp32, calibration none, bits 32); no rows without ``trends``."""
    trends = verify.get("trends") or {}
    points = [("fp32", "none", 32, verify["reference"])] if trends else []
    points += [(t["method"], t["calibration"], bits, name) for t in trends.values()
               for bits, name in zip(t["x"], t["variants"])]
    rows = [[method, calibration, bits, race, e["value"], e["ci_low"], e["ci_high"]]
            for method, calibration, bits, name in points for race in verify["races"]
            for e in [verify["variants"][name]["summary"][f"acc_{race}"]]]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curve_figure_frame(verify: dict) -> pd.DataFrame:
    """The curve figure's data: per curve and bit-width (fp32 flagged ``reference``, at 32 bits) each race's
    accuracy with its CI, and the SER (series "SER"; its percentile CI is biased, see the section, so left out;
    None where infinite)."""
    rows = []
    reference = verify["reference"]
    for curve, t in (verify.get("trends") or {}).items():
        for bits, name in [(32, reference), *zip(t["x"], t["variants"])]:
            summary = verify["variants"][name]["summary"]
            for race in verify["races"]:
                e = summary[f"acc_{race}"]
                rows.append([curve, bits, name == reference, "accuracy", race, e["value"], e["ci_low"], e["ci_high"]])
            ser = point(summary["ser"])  # an error-free race makes it infinite: not drawn
            rows.append([curve, bits, name == reference, "ser", "SER", ser if ser is not None and math.isfinite(ser)
                         else None, None, None])
    return pd.DataFrame(rows, columns=["curve", "bits", "reference", "quantity", "series", "value", "ci_low",
                                       "ci_high"])


def _trend_cell(answer: dict, kind: str, reads: str | None = None) -> Cell:
    """A slope per bit removed with its interval and the verdict; "undefined (n points)" without one."""
    if answer["verdict"] == "undefined":
        return Cell(None, kind, note=f"({answer['points']} points)")
    return Cell(answer["slope"], kind, interval=(answer["ci_low"], answer["ci_high"]),
                note=reads or answer["verdict"], emphasis=answer["verdict"] in ("widens", "narrows"))


def _spearman_cell(answer: dict) -> Cell:
    if answer["verdict"] == "undefined" or answer["spearman"] is None:  # too few points, or every value tied
        return Cell(None, "num2")
    return Cell(answer["spearman"], "num2", interval=(answer["spearman_ci_low"], answer["spearman_ci_high"]))


def curve_rows(verify: dict, trend: dict, races: list[str]) -> list[list[Cell]]:
    """fp32, each bit-width (accuracy per race with CI, STD, SER, paired SER change vs fp32), then the trend."""
    rows = []
    for bits, name in [("fp32", verify["reference"]), *zip(trend["x"], trend["variants"])]:
        r = verify["variants"][name]
        s = r["summary"]
        rows.append([Cell(str(bits)), Cell(name), *(estimate_cell(s[f"acc_{race}"]) for race in races),
                     Cell(s["verification_std"]["value"], "pct"), Cell(point(s["ser"]), "num"),
                     change_cell((r.get("change") or {}).get("ser"), pct=False)])
    accuracy = trend["accuracy"]
    rows.append([Cell("trend: slope per bit removed"), Cell(""),
                 *(_trend_cell(accuracy[race], "pct_change", accuracy[race]["as_bits_fall"]) for race in races),
                 _trend_cell(trend["verification_std"], "pct_change"), _trend_cell(trend["ser"], "change"),
                 _trend_cell(trend["ser_change"], "change")])
    rows.append([Cell("trend: Spearman with bits removed"), Cell(""),
                 *(_spearman_cell(accuracy[race]) for race in races), _spearman_cell(trend["verification_std"]),
                 _spearman_cell(trend["ser"]), _spearman_cell(trend["ser_change"])])
    return rows


def _bits_sections(verify: dict, races: list[str], lv: str) -> list[Section]:
    """Race bias against bits: per curve a table of its points and its trend, then one figure of every curve."""
    trends = verify.get("trends") or {}
    if not trends:
        return []
    few = sorted({len(t["x"]) for t in trends.values() if len(t["x"]) < 3})
    blocks = [prose(
        f"Does the bias grow as bits fall? {REFERENCE_WORK} reads its results as a curve: \"the lower the bits, the "
        "higher the bias\". Per method and calibration set: fp32 and each bit-width (accuracy per race with its "
        f"{lv} CI, STD and SER, and SER's paired change vs fp32), then the trend over the bit-widths: the "
        f"least-squares slope per bit removed with its {lv} percentile interval, and Spearman's rank correlation "
        "with the bits removed. Both come from the same pair resamples that fp32 and every point share (pairs "
        "resampled within race x fold x genuine, thresholds re-chosen), so the pairing of the points is kept. "
        "Verdicts: SER, STD: widens (grows as bits fall), narrows, no clear trend (the interval holds 0); a race's "
        "accuracy: falls, rises, no clear trend. SER's slope and its change's are the same number (fp32 is one "
        "constant per resample): the change column leaves out resamples where fp32's SER is infinite."
        + (f" With {' or '.join(map(str, few))} bit-width(s) a trend is undefined: "
           "list at least 3 in verify.bits, e.g. [8, 6, 4]." if few else ""))]
    for name, trend in trends.items():
        blocks += [prose(strong(f"{trend['method']}, {trend['calibration']} calibration"),
                         f" (bits {', '.join(map(str, trend['x']))})"),
                   table(["bits", "variant", *races, "STD", "SER", "Δ SER vs fp32"], curve_rows(verify, trend, races))]
    blocks.append(Figure("verify_curve", "verify_curve", curve_figure_frame(verify),
                         synthetic=bool(verify.get("synthetic")), confidence=verify["confidence"]))
    return [Section(f"Race bias against bits (trend from one paired bootstrap, {lv})", tuple(blocks))]
