"""The study's outputs for people and for DVC: summary metrics, plot tables, figures, a markdown report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fairquant.io import atomic_path, write_csv, write_json  # noqa: E402

HEADLINE_GAPS = ("tpr_gap", "fpr_gap", "eq_odds", "dp_gap")
SIGNED_RATES = {"accuracy": "accuracy", "tpr": "TPR", "fpr": "FPR", "selection_rate": "selection rate"}


def worst_difference(r: dict, rate: str) -> tuple[str | None, dict]:
    """The non-reference group whose ``rate`` is farthest from the privileged group's, and its signed difference."""
    defined = {g: d for g, d in r["signed"].get(rate, {}).items() if not _undefined(d["value"])}
    if not defined:
        return None, {}
    group = max(defined, key=lambda g: abs(defined[g]["value"]))
    return group, defined[group]


def summary(results: dict[str, dict]) -> dict:
    """What `dvc exp show` and `dvc metrics diff` display, keyed by pipeline slot (fp32, ptq, ...).

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
    out["synthetic_data"] = any(r["synthetic"] for r in results.values())
    return out


def _mean_over_seeds(values: list):
    """Mean of numbers (int kept when every seed agrees, as sizes do); None when any seed's value is undefined."""
    if any(v is None or (isinstance(v, float) and _undefined(v)) for v in values):
        return None
    if all(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return values[0]
    if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
        return values[0]
    return sum(values) / len(values)


def _tpr_diff_over_seeds(runs: list[dict]) -> dict:
    """The signed TPR difference of one fixed group (farthest from the privileged group in the mean over seeds):
    its mean, and as bounds that seed's CI (one seed) or the t-interval of the mean across seeds."""
    from fairquant.fairness.seeds import across_seeds

    per_group: dict[str, list] = {}
    for r in runs:
        for group, d in r["signed"].get("tpr", {}).items():
            per_group.setdefault(group, []).append(d)
    defined = {g: ds for g, ds in per_group.items()
               if len(ds) == len(runs) and not any(_undefined(d["value"]) for d in ds)}
    if not defined:
        return {"tpr_diff": None, "tpr_diff_ci_low": None, "tpr_diff_ci_high": None, "tpr_diff_group": None}
    group = max(defined, key=lambda g: abs(sum(d["value"] for d in defined[g])))
    values = [d["value"] for d in defined[group]]
    if len(runs) == 1:
        low, high = defined[group][0]["ci_low"], defined[group][0]["ci_high"]
    else:
        spread = across_seeds(values, runs[0]["confidence"])
        low, high = spread["ci_low"], spread["ci_high"]
    return {"tpr_diff": sum(values) / len(values), "tpr_diff_ci_low": low, "tpr_diff_ci_high": high,
            "tpr_diff_group": group}


def summary_over_seeds(per_seed: dict[int, dict[str, dict]]) -> dict:
    """The headline keys of :func:`summary`, each the mean over training seeds. The signed TPR difference is one
    group's (the same in every seed); its bounds are the CI with one seed, the across-seed t-interval with more."""
    seeds = sorted(per_seed)
    runs = [summary(per_seed[s]) for s in seeds]
    out = {}
    for slot, first in runs[0].items():
        if not isinstance(first, dict):
            continue
        out[slot] = {key: _mean_over_seeds([run[slot][key] for run in runs])
                     for key in first if not key.startswith("tpr_diff")}
        out[slot].update(_tpr_diff_over_seeds([per_seed[s][slot] for s in seeds]))
    out["synthetic_data"] = any(run["synthetic_data"] for run in runs)
    out["seeds"] = len(seeds)
    return out


def seeds_section(table: dict[str, dict], confidence: float) -> list[str]:
    """Per variant: accuracy and gaps over training seeds, and each gap change's verdict across seeds."""
    level = _level(confidence)
    seeds = next(iter(table.values()))["seeds"]
    gaps = list(next(iter(table.values()))["gaps"])
    spread = lambda s: "-" if s["mean"] is None else (  # noqa: E731
        f"{_num(s['mean'])}" + ("" if s["sd"] is None else f" ± {_num(s['sd'])}"))
    lines = ["", f"## Across training seeds ({len(seeds)}: {', '.join(map(str, seeds))})", "",
             "Each training seed trains its own fp32 model and compresses it; every number below is per seed, then "
             "mean ± between-seed standard deviation.", "",
             "| variant | accuracy | worst-group acc | " + " | ".join(gaps) + " |",
             "|---|---|---|" + "---|" * len(gaps)]
    for entry in table.values():
        lines.append(f"| {entry['variant']} | {spread(entry['accuracy'])} | {spread(entry['worst_group_accuracy'])} | "
                     + " | ".join(spread(entry["gaps"][k]) for k in gaps) + " |")
    changed = [entry for entry in table.values() if "changes" in entry]
    if not changed:
        return lines
    test = next(iter(changed[0]["changes"].values()))["across_seeds"]["test"]
    lines += ["", f"Change of each gap vs the same seed's fp32 model. Per seed: the change and whether its paired "
              f"{level} CI excludes 0. Across seeds ({test}): the {level} t-interval of the mean change; "
              "WIDENS / narrows only when that whole interval is above / below 0.", "",
              "| variant | gap | per-seed change | seeds with CI excluding 0 | mean change [t-interval] | verdict |",
              "|---|---|---|---|---|---|"]
    lines += [_across_seed_row(entry["variant"], k, entry["changes"][k]) for entry in changed for k in gaps]
    return lines


def _across_seed_row(variant: str, gap: str, c: dict) -> str:
    """One gap change across seeds: per-seed changes, seeds whose paired CI excludes 0, t-interval, verdict."""
    a = c["across_seeds"]
    interval = "-" if a["ci_low"] is None else f"[{_num(a['ci_low'])}, {_num(a['ci_high'])}]"
    verdict = {"widens": "**WIDENS**", "narrows": "narrows"}.get(a["verdict"], a["verdict"])
    return (f"| {variant} | {gap} | {', '.join(_num(v) for v in c['values'])} | "
            f"{c['seeds_whose_paired_ci_excludes_0']} of {len(c['values'])} | {_num(a['mean'])} {interval} | {verdict} |")


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
                         "p_value": change.get("p_value"), "interval_method": v.get("interval_method")})
    return pd.DataFrame(rows)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def draw_figures(per_group: pd.DataFrame, gaps: pd.DataFrame, folder: Path, synthetic: bool,
                 confidence: float) -> list[Path]:
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
    ax.set_title(f"fairness gaps with {_level(confidence)} simultaneous bootstrap CI{note}")
    ax.legend()
    gaps_png = folder / "gaps.png"
    _save(fig, gaps_png)
    return [per_group_png, gaps_png]


def _pct(value) -> str:
    return "undefined" if _undefined(value) else f"{100 * value:.2f}"


def _num(value) -> str:
    return "undefined" if _undefined(value) else f"{value:.3f}"


def _undefined(value) -> bool:
    return value is None or value != value


def _level(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _ci(interval: dict | None, key: str = "value") -> str:
    if not interval:
        return "undefined"
    return f"{_num(interval[key])} [{_num(interval['ci_low'])}, {_num(interval['ci_high'])}]"


def _latency(r: dict) -> str:
    compiled = r["latency_ms"].get("compiled")
    return r["kernels"] if compiled is None else f"{compiled:.1f}"


def _excludes_zero(interval: dict) -> bool | None:
    if _undefined(interval["ci_low"]) or _undefined(interval["ci_high"]):
        return None
    return interval["ci_low"] > 0 or interval["ci_high"] < 0


def _verdict(change: dict) -> str:
    if _excludes_zero(change) is None:
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


def methods_note(confidence: float) -> list[str]:
    """How every interval in the report is made (each metrics file names its method in `interval_method`)."""
    return [f"Intervals are {_level(confidence)}. Differences between groups, pairwise or against the privileged "
            "group, are simultaneous max-t bootstrap intervals: d ± c·se, se the bootstrap SD, c the quantile of "
            "the largest |d* - d|/se over the family, so the whole family is covered together. A gap (largest minus "
            "smallest group value, fairlearn's definition) runs from the largest distance of any pairwise interval "
            "from 0 to the farthest end of any pairwise interval: it always contains its estimate, and reaches 0 "
            "when no pair of groups differs detectably; DP ratio and disparate impact the same on log selection "
            "rates. The bootstrap is stratified (TPR, FPR: each group's positives and negatives kept; accuracy, "
            "selection rate: each group's size kept) and draws from Jeffreys-smoothed cell shares, so a small "
            "group keeps its uncertainty. Changes vs fp32 are Wald intervals, change ± z·se with se from a paired "
            "bootstrap of the same samples, and p = 2Φ(-|change|/se): an interval excludes 0 exactly when "
            f"p < {1 - confidence:g}. Each interval's method is named in metrics/eval/s<seed>/<slot>.json "
            "(`interval_method`)."]


def signed_sentence(r: dict, rate: str) -> str:
    """'Male's TPR is 0.150 lower than Female's [0.060, 0.240]: the CI excludes 0, ...', for the farthest group."""
    label, reference = SIGNED_RATES[rate], r["privileged_group"]
    group, d = worst_difference(r, rate)
    if group is None:
        return f"No {label} difference to {reference} is defined."
    value = d["value"]
    low, high = (-d["ci_high"], -d["ci_low"]) if value < 0 else (d["ci_low"], d["ci_high"])
    text = (f"{group}'s {label} is {_num(abs(value))} {'lower' if value < 0 else 'higher'} than {reference}'s "
            f"[{_num(low)}, {_num(high)}]")
    excludes = _excludes_zero(d)
    if excludes is None:
        return text + ": its CI is undefined."
    if not excludes:
        return text + ": the CI includes 0 (no detectable difference)."
    return text + f": the CI excludes 0, so {group if value < 0 else reference} is disadvantaged on {label}."


def headline_lines(r: dict) -> list[str]:
    return [f"- **{r['variant']}**: {signed_sentence(r, 'tpr')} {signed_sentence(r, 'accuracy')}"]


def gaps_row(r: dict, fp32_size: int) -> str:
    g = r["gaps"]
    return (f"| {r['variant']} | {_pct(r['overall']['accuracy'])} | {_ci(g['tpr_gap'])} | {_ci(g['fpr_gap'])} | "
            f"{_ci(g['eq_odds'])} | {_ci(g['dp_gap'])} | {_pct(r['worst_group_accuracy'])} | "
            f"{r['size_bytes'] / 1000:,.1f} | {fp32_size / r['size_bytes']:.2f}x | {_latency(r)} | "
            f"{'YES' if r['collapsed'] else 'no'} |")


def signed_row(r: dict, group: str) -> str:
    """One variant's signed differences of ``group`` against the privileged group, with CIs."""
    return (f"| {r['variant']} | {group} | "
            + " | ".join(_ci(r["signed"].get(rate, {}).get(group)) for rate in SIGNED_RATES) + " |")


def signed_change_row(r: dict, group: str) -> str:
    """One variant's paired change vs fp32 of ``group``'s signed differences, with CIs and p-values."""
    changes = r["vs_fp32"]["signed"]
    cells = []
    for rate in SIGNED_RATES:
        change = changes.get(rate, {}).get(group)
        cells.append(f"{_ci(change, 'delta')} p {_num(change['p_value'])}" if change else "undefined")
    return f"| {r['variant']} | {group} | " + " | ".join(cells) + " |"


def _intro(first: dict) -> list[str]:
    lines = ["# fairquant report", ""]
    if first["synthetic"]:
        lines += ["**Data: SYNTHETIC** (fairquant's generated CelebA-layout default, not photographs).", ""]
    return lines + [f"Test split, {first['n']} samples; protected attribute(s): {', '.join(first['protected'])}; "
                    f"reference (privileged) group: {first['privileged_group']}; gaps are largest minus smallest group "
                    f"value (fairlearn's definitions, except that a group whose rate is undefined, e.g. a TPR without "
                    f"positives, is left out of that gap where fairlearn counts it as 0).", ""] + \
        methods_note(first["confidence"]) + [""]


def _signed_sections(results: dict[str, dict], level: str) -> list[str]:
    first = next(iter(results.values()))
    reference = first["privileged_group"]
    others = list(dict.fromkeys(g for r in results.values() for g in r["signed"].get("tpr", {})))
    header = " | ".join(SIGNED_RATES.values())
    lines = ["## Headline", "", *[line for r in results.values() for line in headline_lines(r)], "",
             f"## Signed differences vs {reference} ({level} simultaneous CIs)", "",
             "Each group's rate minus the reference group's: below 0 means lower than the reference.", "",
             f"| variant | group | {header} |", "|---|---|" + "---|" * len(SIGNED_RATES)]
    lines += [signed_row(r, g) for r in results.values() for g in others]
    compared = [r for r in results.values() if "vs_fp32" in r]
    if compared:
        lines += ["", f"## Change of the signed differences vs fp32 (paired, {level} Wald CIs, p-values)", "",
                  f"| variant | group | {header} |", "|---|---|" + "---|" * len(SIGNED_RATES)]
        lines += [signed_change_row(r, g) for r in compared for g in others]
    return lines + [""]


def _table1(results: dict[str, dict], level: str) -> list[str]:
    fp32_size = next(iter(results.values()))["size_bytes"]
    return [f"## Table 1: overall accuracy and gaps ({level} CIs)", "",
            "| variant | accuracy (%) | EO (TPR gap) | FPR gap | equalized odds | DP gap | worst group acc (%) | size (KB) | smaller than fp32 | latency (ms/batch) | collapsed |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *[gaps_row(r, fp32_size) for r in results.values()], "",
            "Latency: median compiled time per batch where real kernels ran (fp32, int8); *simulated* = fake "
            "quantization (integers simulated in fp32, no speed claim); *dense-decoded* = shared or sparse weights "
            "decoded to dense fp32 kernels (no speed claim)."]


def _per_group_tables(results: dict[str, dict]) -> list[str]:
    groups = list(next(iter(results.values()))["groups"])
    lines = ["", "## Table 2: accuracy per group (%)", "",
             "| variant | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for r in results.values():
        lines.append(f"| {r['variant']} | " + " | ".join(_pct(r['groups'][g]['accuracy']) for g in groups) + " |")
    lines += ["", "## Table 3: TPR and FPR per group", "",
              "| variant | " + " | ".join(f"{g} TPR" for g in groups) + " | " + " | ".join(f"{g} FPR" for g in groups) + " |",
              "|---|" + "---|" * (2 * len(groups))]
    for r in results.values():
        lines.append(f"| {r['variant']} | " + " | ".join(_num(r['groups'][g]['tpr']) for g in groups) + " | "
                     + " | ".join(_num(r['groups'][g]['fpr']) for g in groups) + " |")
    return lines


def _compression_sections(compared: list[dict], level: str) -> list[str]:
    if not compared:
        return []
    lines = ["", "## Does compression widen the minority's gap?", "",
             f"Paired bootstrap of the change vs fp32 on the same test samples: WIDENS when the whole {level} CI is "
             "above 0, narrows when it is below, otherwise no detectable change.", "",
             f"| variant | accuracy gap change [{level} CI] | verdict | TPR gap change [{level} CI] | verdict |",
             "|---|---|---|---|---|"]
    for r in compared:
        a, t = r["vs_fp32"]["gaps"]["accuracy_gap"], r["vs_fp32"]["gaps"]["tpr_gap"]
        lines.append(f"| {r['variant']} | {_ci(a, 'delta')} | {_verdict(a)} | {_ci(t, 'delta')} | {_verdict(t)} |")
    lines += ["", "## Change vs fp32 (paired bootstrap on the same test samples)", "",
              f"| variant | gap | change | {level} CI | p |", "|---|---|---|---|---|"]
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
    return lines


def _mixed_precision(results: dict[str, dict]) -> list[str]:
    mixed = [(r["variant"], layer) for r in results.values() for layer in r["details"].get("layers", [])
             if (layer["weight_bits"], layer["activation_bits"]) != (r["details"]["scheme"]["bits"],
                                                                     r["details"]["scheme"]["activation_bits"])]
    if not mixed:
        return []
    rows = [f"| {v} | {layer['layer']} | {layer['weight_bits'] or 'float'} | {layer['activation_bits'] or 'float'} |"
            for v, layer in mixed]
    return ["", "## Mixed precision: layers at their own bit-width", "",
            "| variant | layer | weight bits | input bits |", "|---|---|---|---|", *rows]


def int8_section(results: dict[str, dict]) -> list[str]:
    """What makes an int8 result trustworthy on this CPU: its int8 instructions, whether activations had to be
    7-bit (reduce_range, CPUs without VNNI), and how closely the compiled kernels followed their q/dq reference."""
    checked = [(r["variant"], r["details"]["int8_check"]) for r in results.values()
               if r.get("details", {}).get("int8_check")]
    if not checked:
        return []
    lines = ["", "## int8 kernels", "",
             "Compiled int8 kernels compared with their own quantize/dequantize reference (logits) on the calibration "
             "images and on held-out validation images; the worse of the two is shown. The kernels must not add more "
             "error than quantization itself (within the tolerance) and must correlate with the reference, or the "
             "stage refuses the model. reduce_range = 7-bit activations, used on CPUs without VNNI.", "",
             "| variant | CPU int8 capability | reduce_range | images | SQNR kernels vs reference (dB) | correlation | "
             "SQNR reference vs fp32 (dB) | tolerance (dB) | mean abs logit diff (quantization noise) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, c in checked:
        db = lambda v: "exact" if v is None else f"{v:.1f}"  # noqa: E731  (identical outputs: inf, stored as null)
        lines.append(f"| {name} | {c['cpu_capability']} | {'yes' if c['reduce_range'] else 'no'} | {c['images']} "
                     f"{c.get('image_set', 'calibration')} | {db(c['sqnr_db'])} | "
                     f"{'-' if c.get('correlation') is None else format(c['correlation'], '.4f')} | "
                     f"{db(c['quant_sqnr_db'])} | {c['tolerance_db']:g} | {c['mean_abs_diff']:.4f} ({c['quant_noise']:.4f}) |")
    return lines


def _remedy_collapse(r: dict) -> str:
    """A remedy collapsed when the variant predicts one class, or when a post-processor made a group constant."""
    groups = r.get("details", {}).get("mitigation", {}).get("collapsed") or []
    flags = (["model constant"] if r["collapsed"] else []) + [f"{g} constant" for g in groups]
    return "**" + ", ".join(flags) + "**" if flags else "no"


def remedies_section(results: dict[str, dict], seeds: dict[str, dict] | None, level: str) -> list[str]:
    """Per remedy: its paired change in every gap vs the unmitigated variant it fixes, with CIs; its cost in
    accuracy and size; collapse; with several training seeds, the across-seed verdict; and for constrained
    fine-tuning whether the constraint held on train, validation and test."""
    remedies = [(slot, r) for slot, r in results.items() if r.get("baseline")]
    if not remedies:
        return []
    lines = ["", "## Remedies: what each one changes vs the variant it fixes", "",
             f"Paired on the same test samples ({level} Wald CIs of the bootstrap): a negative gap change means the "
             "remedy narrowed the gap. Accuracy and size are the cost; *collapsed* flags a constant classifier "
             "(the whole model, or a group made constant by a post-processor).", "",
             f"| remedy | fixes | accuracy change | worst-group acc | size vs fixed | "
             + " | ".join(f"{g} change" for g in HEADLINE_GAPS) + " | collapsed |",
             "|---|---|---|---|---|" + "---|" * len(HEADLINE_GAPS) + "---|"]
    for slot, r in remedies:
        base = results[r["baseline"]]
        change = r["vs_baseline"]
        accuracy = r["overall"]["accuracy"] - base["overall"]["accuracy"]
        cells = [f"{_num(change['gaps'][g]['delta'])} [{_num(change['gaps'][g]['ci_low'])}, "
                 f"{_num(change['gaps'][g]['ci_high'])}] {_verdict(change['gaps'][g])}" for g in HEADLINE_GAPS]
        lines.append(f"| {r['variant']} | {base['variant']} | {100 * accuracy:+.2f} pts | "
                     f"{_pct(r['worst_group_accuracy'])} (was {_pct(base['worst_group_accuracy'])}) | "
                     f"{r['size_bytes'] / base['size_bytes']:.2f}x | " + " | ".join(cells) + f" | {_remedy_collapse(r)} |")
    lines += ["", "Verdicts: WIDENS / narrows when the whole CI is above / below 0."]
    if seeds is not None and any("changes_vs_baseline" in e and len(e["seeds"]) > 1 for e in seeds.values()):
        lines += ["", "### Across training seeds", "",
                  "| remedy | gap | per-seed change | seeds with CI excluding 0 | mean change [t-interval] | verdict |",
                  "|---|---|---|---|---|---|"]
        lines += [_across_seed_row(entry["variant"], k, c) for entry in seeds.values()
                  for k, c in entry.get("changes_vs_baseline", {}).items()]
    constrained = [(r, r["constraint"]) for _, r in remedies if r.get("constraint")]
    if constrained:
        lines += ["", "### Does the constraint hold beyond the data it was trained on?", "",
                  "Largest excess drop of any group: (acc_fp32,g - acc_g) - (acc_fp32 - acc), on the constraint's "
                  "rows, per split (a point estimate; the test split's groups are small). The fine-tuning saw only "
                  "train; validation chose the checkpoint; test is unseen. Next to it, the variant it fixes on test, "
                  "and the final multipliers (near 0: the constraint never pushed).", "",
                  "| remedy | tolerance | train | validation | test | test, without the remedy | final multipliers |",
                  "|---|---|---|---|---|---|---|"]
        for r, c in constrained:
            cell = lambda d: f"{_num(d['max_excess_drop'])} ({'holds' if d['holds'] else 'violated'})" \
                if d.get("holds") is not None else _num(d["max_excess_drop"])  # noqa: E731
            base = c.get("test_baseline")
            multipliers = ", ".join(f"{g} {v:.4f}" for g, v in c.get("multipliers", {}).items()) or "-"
            lines.append(f"| {r['variant']} | {_num(c['test'].get('tolerance'))} | {cell(c['train'])} | "
                         f"{cell(c['validation'])} | {cell(c['test'])} | "
                         f"{_num(base['max_excess_drop']) if base else '-'} | {multipliers} |")
    return lines


def precision_section(results: dict[str, dict]) -> list[str]:
    """Layer sensitivity (each layer alone at low bits: its damage to the worst group on validation) and the
    mixed-precision plan built from it, for every precision-plan variant."""
    lines = []
    for r in results.values():
        mitigation = r.get("details", {}).get("mitigation", {})
        if mitigation.get("family") != "precision":
            continue
        sensitivity, plan = mitigation["sensitivity"], mitigation["plan"]
        groups = list(sensitivity["fp32"]["group_accuracy"])
        lines += ["", f"## Layer sensitivity and precision plan: {r['variant']}", "",
                  f"Each layer alone at {sensitivity['bits']} bits (weights and input), every other layer float, on "
                  f"the {sensitivity['validation_images']} validation images. Damage = fp32 worst-group accuracy minus "
                  f"the worst-group accuracy with that layer quantized. fp32: accuracy "
                  f"{_pct(sensitivity['fp32']['accuracy'])}, worst group {sensitivity['fp32']['worst_group']} "
                  f"{_pct(sensitivity['fp32']['worst_group_accuracy'])}; every layer at {sensitivity['bits']} bits: "
                  f"accuracy {_pct(sensitivity['all_layers']['accuracy'])}, damage "
                  f"{_num(sensitivity['all_layers']['damage'])}.", "",
                  "| layer | damage | accuracy (%) | " + " | ".join(f"{g} drop" for g in groups) + " | kept |",
                  "|---|---|---|" + "---|" * len(groups) + "---|"]
        for row in sensitivity["layers"]:
            lines.append(f"| {row['layer']} | {_num(row['damage'])} | {_pct(row['accuracy'])} | "
                         + " | ".join(_num(row["group_drop"][g]) for g in groups)
                         + f" | {'**yes**' if row['layer'] in plan['kept'] else ''} |")
        budget = "none" if plan.get("budget_bytes") is None else f"{plan['budget_bytes'] / 1e6:.2f} MB"
        kept = ", ".join(plan["kept"]) or "none: no layer damages the worst group"
        lines += ["", f"Plan: {len(plan['kept'])} layer(s) kept high ({kept}); {plan['size_bytes'] / 1e6:.2f} MB vs "
                  f"{plan['fully_quantized_size_bytes'] / 1e6:.2f} MB with every layer low (budget {budget}). Its gaps "
                  "on test are in Table 1."]
    return lines


def pareto_table(results: dict[str, dict]) -> pd.DataFrame:
    """Accuracy, worst-group accuracy and size per variant, and whether another variant is at least as good on
    all three and better on one (dominated)."""
    rows = [{"variant": r["variant"], "accuracy": r["overall"]["accuracy"],
             "worst_group_accuracy": r["worst_group_accuracy"], "size_kb": r["size_bytes"] / 1000}
            for r in results.values()]
    frame = pd.DataFrame(rows)
    def dominated(i: int) -> bool:
        a = frame.iloc[i]
        for j in range(len(frame)):
            b = frame.iloc[j]
            if j != i and b.accuracy >= a.accuracy and b.worst_group_accuracy >= a.worst_group_accuracy \
                    and b.size_kb <= a.size_kb and (b.accuracy > a.accuracy or b.worst_group_accuracy
                                                    > a.worst_group_accuracy or b.size_kb < a.size_kb):
                return True
        return False
    frame["pareto"] = [not dominated(i) for i in range(len(frame))]
    return frame


def draw_pareto(table: pd.DataFrame, folder: Path, synthetic: bool) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = 40 + 300 * table["size_kb"] / table["size_kb"].max()
    ax.scatter(table["accuracy"], table["worst_group_accuracy"], s=sizes,
               c=["tab:blue" if p else "tab:gray" for p in table["pareto"]], alpha=0.7)
    for _, row in table.iterrows():
        ax.annotate(f"{row['variant']} ({row['size_kb'] / 1000:.1f} MB)", (row["accuracy"], row["worst_group_accuracy"]),
                    fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("accuracy")
    ax.set_ylabel("worst-group accuracy")
    ax.set_title("accuracy x worst-group accuracy x size (marker area); blue = not dominated"
                 + (" (SYNTHETIC data)" if synthetic else ""), fontsize=9)
    path = folder / "pareto.png"
    _save(fig, path)
    return path


def markdown_report(results: dict[str, dict], figures: list[Path],
                    calibration_sets: dict[str, dict] | None = None, seeds: dict[str, dict] | None = None,
                    seed: int | None = None) -> str:
    """``results`` are one training seed's metrics (``seed``); ``seeds`` the across-seed table of all seeds."""
    first = next(iter(results.values()))
    level = _level(first["confidence"])
    lines = _intro(first)
    if seeds is not None:
        lines += seeds_section(seeds, first["confidence"])
        lines += ["", f"The sections below are training seed {seed}'s models in detail.", ""]
    lines += _signed_sections(results, level) + _table1(results, level) + _per_group_tables(results)
    lines += _compression_sections([r for r in results.values() if "vs_fp32" in r], level)
    lines += remedies_section(results, seeds, level) + precision_section(results)
    lines += int8_section(results) + calibration_table(calibration_sets or {}) + _mixed_precision(results)
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def write_report(per_seed: dict[int, dict[str, dict]], summary_path: Path, plots_dir: Path,
                 calibration_sets: dict[str, dict] | None = None, extra_lines: list[str] | None = None,
                 extra_summary: dict | None = None) -> None:
    """``per_seed`` maps each training seed to its metrics by slot. Summary keys are means over seeds; the
    report's detail tables and figures show the first seed. ``extra_lines`` and ``extra_summary`` add another
    branch's section and summary keys (face verification)."""
    from fairquant.fairness.seeds import seed_table

    seed = min(per_seed)
    results = per_seed[seed]
    per_group, gaps = per_group_table(results), gaps_table(results)
    synthetic = any(r["synthetic"] for r in results.values())
    confidence = next(iter(results.values()))["confidence"]
    pareto = pareto_table(results)
    figures = draw_figures(per_group, gaps, plots_dir, synthetic, confidence) + [draw_pareto(pareto, plots_dir, synthetic)]
    write_csv(plots_dir / "per_group.csv", per_group)
    write_csv(plots_dir / "gaps.csv", gaps)
    write_csv(plots_dir / "pareto.csv", pareto)
    table = seed_table(per_seed, ("accuracy_gap",) + HEADLINE_GAPS, confidence)
    with atomic_path(plots_dir / "report.md") as tmp:
        tmp.write_text(markdown_report(results, figures, calibration_sets, table, seed)
                       + "\n".join(extra_lines or []) + ("\n" if extra_lines else ""))
    write_json(summary_path, {**summary_over_seeds(per_seed), **(extra_summary or {})})
