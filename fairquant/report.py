"""The study's outputs for people and for DVC: summary metrics, plot tables, figures, a markdown report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fairquant.io import atomic_path, write_csv, write_json  # noqa: E402

HEADLINE_GAPS = ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap")


def summary(results: dict[str, dict]) -> dict:
    """What `dvc exp show` and `dvc metrics diff` display, keyed by pipeline slot (fp32, ptq, ...).

    Slots, not descriptive names, are the keys so that two experiments with different bit-widths line up
    in the same columns; the descriptive name is in each variant's metrics file and in the report.
    """
    out = {}
    for slot, r in results.items():
        compiled = r["latency_ms"].get("compiled")
        out[slot] = {
            "accuracy": r["overall"]["accuracy"],
            **{k: r["gaps"][k]["value"] for k in HEADLINE_GAPS},
            "worst_group_accuracy": r["worst_group_accuracy"],
            "size_bytes": r["size_bytes"],
            "latency_ms": compiled,
            "flip_rate": r.get("vs_fp32", {}).get("flip_rate", 0.0),
        }
    out["synthetic_data"] = any(r["synthetic"] for r in results.values())
    return out


def per_group_table(results: dict[str, dict]) -> pd.DataFrame:
    rows = [{"variant": r["variant"], "group": g, **{k: v[k] for k in ("accuracy", "tpr", "fpr", "selection_rate", "n")}}
            for r in results.values() for g, v in r["groups"].items()]
    return pd.DataFrame(rows)


def gaps_table(results: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for r in results.values():
        for gap, v in r["gaps"].items():
            change = r.get("vs_fp32", {}).get("gaps", {}).get(gap, {})
            rows.append({"variant": r["variant"], "gap": gap, "value": v["value"], "ci_low": v["ci_low"],
                         "ci_high": v["ci_high"], "delta_vs_fp32": change.get("delta"),
                         "delta_ci_low": change.get("ci_low"), "delta_ci_high": change.get("ci_high"),
                         "p_value": change.get("p_value")})
    return pd.DataFrame(rows)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def draw_figures(per_group: pd.DataFrame, gaps: pd.DataFrame, folder: Path, synthetic: bool) -> list[Path]:
    note = " (SYNTHETIC data)" if synthetic else ""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, ("accuracy", "tpr", "fpr")):
        table = per_group.pivot(index="variant", columns="group", values=metric)
        table.plot.bar(ax=ax, rot=0)
        ax.set_title(f"{metric} by group{note}")
        ax.set_ylim(0, 1)
    per_group_png = folder / "per_group.png"
    _save(fig, per_group_png)

    fig, ax = plt.subplots(figsize=(8, 3.8))
    shown = gaps[gaps["gap"].isin(HEADLINE_GAPS)]
    variants = list(dict.fromkeys(shown["variant"]))
    width = 0.8 / max(len(variants), 1)
    for k, variant in enumerate(variants):
        part = shown[shown["variant"] == variant].set_index("gap").loc[list(HEADLINE_GAPS)]
        x = [i + k * width for i in range(len(HEADLINE_GAPS))]
        errors = [(part["value"] - part["ci_low"]).clip(lower=0), (part["ci_high"] - part["value"]).clip(lower=0)]
        ax.bar(x, part["value"], width, yerr=errors, capsize=3, label=variant)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(HEADLINE_GAPS))], HEADLINE_GAPS)
    ax.set_title(f"fairness gaps with 95% bootstrap CI{note}")
    ax.legend()
    gaps_png = folder / "gaps.png"
    _save(fig, gaps_png)
    return [per_group_png, gaps_png]


def _pct(value) -> str:
    return "undefined" if value is None or value != value else f"{100 * value:.2f}"


def _num(value) -> str:
    return "undefined" if value is None or value != value else f"{value:.3f}"


def _ci(gap: dict) -> str:
    return f"{_num(gap['value'])} [{_num(gap['ci_low'])}, {_num(gap['ci_high'])}]"


def _latency(r: dict) -> str:
    compiled = r["latency_ms"].get("compiled")
    return r["kernels"] if compiled is None else f"{compiled:.1f}"


def _verdict(change: dict) -> str:
    if change["ci_low"] is None or change["ci_low"] != change["ci_low"]:
        return "undefined"
    if change["ci_low"] > 0:
        return "WIDENS"
    if change["ci_high"] < 0:
        return "narrows"
    return "no detectable change"


def calibration_table(sets: dict[str, dict]) -> list[str]:
    if not sets:
        return []
    lines = ["", "## Calibration sets", "",
             "Estimated composition: a group classifier (logistic regression on fp32 features) fitted on the "
             "training split; its validation accuracy is in the last column. True composition where labels exist.", "",
             "| set | images | source | estimated groups | true groups | skipped unreadable | classifier val acc (balanced) |",
             "|---|---|---|---|---|---|---|"]
    for name, info in sets.items():
        shares = lambda d: ", ".join(f"{g}: {v:.2f}" for g, v in d.items()) if d else "unlabelled"  # noqa: E731
        quality = info["group_classifier"]
        lines.append(f"| {name} | {info['size']} | {info['source']} | {shares(info['estimated_composition'])} | "
                     f"{shares(info.get('true_composition'))} | {info.get('skipped_unreadable', 0)} | "
                     f"{_num(quality['val_accuracy'])} ({_num(quality['val_balanced_accuracy'])}) |")
    return lines


def markdown_report(results: dict[str, dict], figures: list[Path], calibration_sets: dict[str, dict] | None = None) -> str:
    first = next(iter(results.values()))
    groups = list(first["groups"])
    lines = ["# fairquant report", ""]
    if first["synthetic"]:
        lines += ["**Data: SYNTHETIC** (fairquant's generated CelebA-layout default, not photographs).", ""]
    lines += [f"Test split, {first['n']} samples; protected attribute(s): {', '.join(first['protected'])}; "
              f"gaps are largest minus smallest group value (fairlearn's definitions), with 95% bootstrap CIs.", ""]
    lines += ["## Table 1: overall accuracy and gaps", "",
              "| variant | accuracy (%) | EO (TPR gap) | FPR gap | equalized odds | DP gap | worst group acc (%) | size (KB) | smaller than fp32 | latency (ms/batch) | collapsed |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32_size = first["size_bytes"]
    for r in results.values():
        g = r["gaps"]
        lines.append(f"| {r['variant']} | {_pct(r['overall']['accuracy'])} | {_ci(g['tpr_gap'])} | {_ci(g['fpr_gap'])} | "
                     f"{_ci(g['eq_odds'])} | {_ci(g['dp_gap'])} | {_pct(r['worst_group_accuracy'])} | "
                     f"{r['size_bytes'] / 1000:,.1f} | {fp32_size / r['size_bytes']:.2f}x | {_latency(r)} | "
                     f"{'YES' if r['collapsed'] else 'no'} |")
    lines += ["", "Latency: median compiled time per batch where real kernels ran (fp32, int8); *simulated* = fake "
              "quantization (integers simulated in fp32, no speed claim); *dense-decoded* = shared or sparse weights "
              "decoded to dense fp32 kernels (no speed claim)."]
    lines += ["", "## Table 2: accuracy per group (%)", "",
              "| variant | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for r in results.values():
        lines.append(f"| {r['variant']} | " + " | ".join(_pct(r['groups'][g]['accuracy']) for g in groups) + " |")
    lines += ["", "## Table 3: TPR and FPR per group", "",
              "| variant | " + " | ".join(f"{g} TPR" for g in groups) + " | " + " | ".join(f"{g} FPR" for g in groups) + " |",
              "|---|" + "---|" * (2 * len(groups))]
    for r in results.values():
        lines.append(f"| {r['variant']} | " + " | ".join(_num(r['groups'][g]['tpr']) for g in groups) + " | "
                     + " | ".join(_num(r['groups'][g]['fpr']) for g in groups) + " |")
    compared = [r for r in results.values() if "vs_fp32" in r]
    if compared:
        lines += ["", "## Does compression widen the minority's gap?", "",
                  "Paired bootstrap of the change vs fp32 on the same test samples: WIDENS when the whole 95% CI is "
                  "above 0, narrows when it is below, otherwise no detectable change.", "",
                  "| variant | accuracy gap change [95% CI] | verdict | TPR gap change [95% CI] | verdict |",
                  "|---|---|---|---|---|"]
        for r in compared:
            a, t = r["vs_fp32"]["gaps"]["accuracy_gap"], r["vs_fp32"]["gaps"]["tpr_gap"]
            lines.append(f"| {r['variant']} | {_num(a['delta'])} [{_num(a['ci_low'])}, {_num(a['ci_high'])}] | "
                         f"{_verdict(a)} | {_num(t['delta'])} [{_num(t['ci_low'])}, {_num(t['ci_high'])}] | {_verdict(t)} |")
        lines += ["", "## Change vs fp32 (paired bootstrap on the same test samples)", "",
                  "| variant | gap | change | 95% CI | p |", "|---|---|---|---|---|"]
        for r in compared:
            for gap in HEADLINE_GAPS:
                c = r["vs_fp32"]["gaps"][gap]
                lines.append(f"| {r['variant']} | {gap} | {_num(c['delta'])} | [{_num(c['ci_low'])}, "
                             f"{_num(c['ci_high'])}] | {_num(c['p_value'])} |")
        lines += ["", "## Per-sample flips vs fp32, by group", "",
                  "| variant | group | n | flip rate | correct->wrong | wrong->correct | accuracy change | McNemar p |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in compared:
            for g, f in r["vs_fp32"]["groups"].items():
                lines.append(f"| {r['variant']} | {g} | {f['n']} | {_num(f['flip_rate'])} | {f['correct_to_wrong']} | "
                             f"{f['wrong_to_correct']} | {_num(f['accuracy_delta'])} | {_num(f['mcnemar_p'])} |")
    lines += calibration_table(calibration_sets or {})
    mixed = [(r["variant"], layer) for r in results.values() for layer in r["details"].get("layers", [])
             if (layer["weight_bits"], layer["activation_bits"]) != (r["details"]["scheme"]["bits"],
                                                                     r["details"]["scheme"]["activation_bits"])]
    if mixed:
        lines += ["", "## Mixed precision: layers at their own bit-width", "", "| variant | layer | weight bits | input bits |",
                  "|---|---|---|---|"]
        lines += [f"| {v} | {layer['layer']} | {layer['weight_bits'] or 'float'} | {layer['activation_bits'] or 'float'} |"
                  for v, layer in mixed]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def write_report(results: dict[str, dict], summary_path: Path, plots_dir: Path,
                 calibration_sets: dict[str, dict] | None = None) -> None:
    per_group, gaps = per_group_table(results), gaps_table(results)
    synthetic = any(r["synthetic"] for r in results.values())
    figures = draw_figures(per_group, gaps, plots_dir, synthetic)
    write_csv(plots_dir / "per_group.csv", per_group)
    write_csv(plots_dir / "gaps.csv", gaps)
    with atomic_path(plots_dir / "report.md") as tmp:
        tmp.write_text(markdown_report(results, figures, calibration_sets))
    write_json(summary_path, summary(results))
