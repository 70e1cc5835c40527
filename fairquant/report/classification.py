"""The classification branch's sections: the study's setting and methods, training seeds, the headline, signed
differences, Tables 1-3, and what compression changes vs fp32. Built from the evaluate stage's metrics."""

from __future__ import annotations

from fairquant.fairness.summary import HEADLINE_GAPS, change_verdict, excludes_zero, worst_difference
from fairquant.report.document import BulletList, Cell, Prose, Section, Table, code, italic, prose, strong, table
from fairquant.report.numbers import fmt, interval, level

SIGNED_RATES = {"accuracy": "accuracy", "tpr": "TPR", "fpr": "FPR", "selection_rate": "selection rate"}
VERDICT_WORDS = {"widens": "WIDENS"}  # the finding the reader must not miss, in capitals


def verdict_cell(change: dict) -> Cell:
    """A gap change's verdict from its CI: WIDENS, narrows, no detectable change or undefined."""
    verdict = change_verdict(change)
    return Cell(VERDICT_WORDS.get(verdict, verdict))


def estimate_cell(estimate: dict | None, key: str = "value", note: str | None = None) -> Cell:
    """'value [low, high]' of an estimate or a change (``key`` 'delta'); undefined when there is none."""
    if not estimate:
        return Cell(None, "num")
    return Cell(estimate[key], "num", interval=(estimate["ci_low"], estimate["ci_high"]), note=note)


def intro(first: dict) -> tuple[Prose, ...]:
    """The data, the protected attribute, the reference group and how every interval is made."""
    paragraphs = []
    if first["synthetic"]:
        paragraphs.append(prose(strong("Data: SYNTHETIC"),
                                " (fairquant's generated faces, not photographs)."))
    if first["details"].get("trained_here") is False:
        paragraphs.append(prose(strong("Audited as it is"), f": the fp32 model is {first['details'].get('pretrained')}, "
                                "not trained here (finetune.epochs 0); every variant compresses it."))
    if first.get("task") == "multiclass":
        classes = first["classes"]["names"]
        paragraphs.append(prose(strong(f"Multi-class target, {len(classes)} classes"), ": ",
                                ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else ""),
                                ". One-vs-rest rates per class; each one-vs-rest gap is its worst class's."))
    paragraphs.append(prose(
        f"Test split, {first['n']} samples; protected attribute(s): {', '.join(first['protected'])}; reference "
        f"(privileged) group: {first['privileged_group']}; gaps are largest minus smallest group value (fairlearn's "
        "definitions, except that a group whose rate is undefined, e.g. a TPR without positives, is left out of that "
        "gap where fairlearn counts it as 0)."))
    return (*paragraphs, methods_note(first["confidence"]))


def methods_note(confidence: float) -> Prose:
    """How every interval in the report is made (each metrics file names its method in `interval_method`)."""
    return prose(
        f"Intervals are {level(confidence)}. Differences between groups, pairwise or against the privileged group, are "
        "simultaneous max-t bootstrap intervals: d ± c·se, se the bootstrap SD, c the quantile of the largest "
        "|d* - d|/se over the family, so the whole family is covered together. A gap (largest minus smallest group "
        "value, fairlearn's definition) runs from the largest distance of any pairwise interval from 0 to the "
        "farthest end of any pairwise interval: it always contains its estimate, and reaches 0 when no pair of groups "
        "differs detectably; DP ratio and disparate impact the same on log selection rates. The bootstrap is "
        "stratified (TPR, FPR: each group's positives and negatives kept; accuracy, selection rate: each group's size "
        "kept) and draws from Jeffreys-smoothed cell shares, so a small group keeps its uncertainty. Changes vs fp32 "
        "(and a remedy's vs the variant it fixes) are exact-beta Dirichlet bounds on the same test samples: each "
        "group x label's joint (fp32, variant) cells get a Dirichlet posterior and each end of the interval leans one "
        "pseudo-row against itself on the cells where the models disagree (Clopper-Pearson carried over to any "
        "function of the cells), so an interval holds at a handful of flipped rows and is never [0, 0]; for one "
        "group's change it excludes 0 exactly when the exact McNemar test rejects, and p is the matching tail: an "
        f"interval excludes 0 exactly when p < {1 - confidence:g}. Each interval's method is named in "
        "metrics/eval/s<seed>/<slot>.json (", code("interval_method"), ").")


def seeds_section(table_by_slot: dict[str, dict], confidence: float, seed: int) -> Section:
    """Per variant: accuracy and gaps over training seeds, and each gap change's verdict across seeds."""
    entries = list(table_by_slot.values())
    seeds, gaps = entries[0]["seeds"], list(entries[0]["gaps"])
    blocks = [prose("Each training seed trains its own fp32 model and compresses it; every number below is per seed, "
                    "then mean ± between-seed standard deviation."),
              table(["variant", "accuracy", "worst-group acc", *gaps],
                    [[Cell(e["variant"]), _spread_cell(e["accuracy"]), _spread_cell(e["worst_group_accuracy"]),
                      *(_spread_cell(e["gaps"][k]) for k in gaps)] for e in entries])]
    changed = [e for e in entries if "changes" in e]
    if changed:
        test = next(iter(changed[0]["changes"].values()))["across_seeds"]["test"]
        blocks += [prose(f"Change of each gap vs the same seed's fp32 model. Per seed: the change and whether its "
                         f"paired {level(confidence)} CI excludes 0. Across seeds ({test}): the {level(confidence)} "
                         "t-interval of the mean change; WIDENS / narrows only when that whole interval is above / "
                         "below 0."),
                   across_seeds_table("variant", [(e["variant"], k, e["changes"][k]) for e in changed for k in gaps])]
    blocks.append(prose(f"The sections below are training seed {seed}'s models in detail."))
    return Section(f"Across training seeds ({len(seeds)}: {', '.join(map(str, seeds))})", tuple(blocks))


def _spread_cell(s: dict) -> Cell:
    """'mean ± sd' over seeds; the mean alone with one seed."""
    return Cell(s["mean"], "num", note=None if s["sd"] is None or s["mean"] is None else f"± {fmt(s['sd'])}")


def across_seeds_table(first_column: str, changes: list[tuple[str, str, dict]]) -> Table:
    """One row per (variant, gap, change across seeds): per-seed changes, seeds whose paired CI excludes 0,
    the t-interval of the mean change and the across-seed verdict (WIDENS emphasised)."""
    rows = []
    for variant, gap, c in changes:
        a = c["across_seeds"]
        bounds = None if a["ci_low"] is None else (a["ci_low"], a["ci_high"])
        rows.append([Cell(variant), Cell(gap), Cell(", ".join(fmt(v) for v in c["values"])),
                     Cell(f"{c['seeds_whose_paired_ci_excludes_0']} of {len(c['values'])}"),
                     Cell(a["mean"], "num", interval=bounds),
                     Cell(VERDICT_WORDS.get(a["verdict"], a["verdict"]), emphasis=a["verdict"] == "widens")])
    return table([first_column, "gap", "per-seed change", "seeds with CI excluding 0", "mean change [t-interval]",
                  "verdict"], rows)


def signed_sentence(r: dict, rate: str) -> str:
    """'Male's TPR is 0.150 lower than Female's [0.060, 0.240]: the CI excludes 0, ...', for the farthest group."""
    label, reference = SIGNED_RATES[rate], r["privileged_group"]
    group, d = worst_difference(r, rate)
    if group is None:
        return f"No {label} difference to {reference} is defined."
    value = d["value"]
    low, high = (-d["ci_high"], -d["ci_low"]) if value < 0 else (d["ci_low"], d["ci_high"])
    text = (f"{group}'s {label} is {fmt(abs(value))} {'lower' if value < 0 else 'higher'} than {reference}'s "
            f"[{fmt(low)}, {fmt(high)}]")
    excludes = excludes_zero(d)
    if excludes is None:
        return text + ": its CI is undefined."
    if not excludes:
        return text + ": the CI includes 0 (no detectable difference)."
    return text + f": the CI excludes 0, so {group if value < 0 else reference} is disadvantaged on {label}."


def headline_section(results: dict[str, dict]) -> Section:
    items = [prose(strong(r["variant"]), f": {signed_sentence(r, 'tpr')} {signed_sentence(r, 'accuracy')}")
             for r in results.values()]
    return Section("Headline", (BulletList(tuple(items)),))


def signed_sections(results: dict[str, dict], confidence: float) -> list[Section]:
    """Each group's signed differences vs the reference group, and their paired change vs fp32."""
    first = next(iter(results.values()))
    others = list(dict.fromkeys(g for r in results.values() for g in r["signed"].get("tpr", {})))
    columns = ["variant", "group", *SIGNED_RATES.values()]
    rows = [[Cell(r["variant"]), Cell(g), *(estimate_cell(r["signed"].get(rate, {}).get(g)) for rate in SIGNED_RATES)]
            for r in results.values() for g in others]
    sections = [Section(f"Signed differences vs {first['privileged_group']} ({level(confidence)} simultaneous CIs)",
                        (prose("Each group's rate minus the reference group's: below 0 means lower than the "
                               "reference."), table(columns, rows)))]
    compared = [r for r in results.values() if "vs_fp32" in r]
    if compared:
        rows = [[Cell(r["variant"]), Cell(g), *(_signed_change_cell(r["vs_fp32"]["signed"].get(rate, {}).get(g))
                                                for rate in SIGNED_RATES)] for r in compared for g in others]
        sections.append(Section(f"Change of the signed differences vs fp32 (paired, {level(confidence)} exact-beta "
                                "Dirichlet bounds, p-values)", (table(columns, rows),)))
    return sections


def _signed_change_cell(change: dict | None) -> Cell:
    return estimate_cell(change, "delta", note=f"p {fmt(change['p_value'])}") if change else Cell(None, "num")


def table1_section(results: dict[str, dict], confidence: float) -> Section:
    """Overall accuracy, the headline gaps with CIs, worst-group accuracy, size, latency and collapse."""
    fp32_size = next(iter(results.values()))["size_bytes"]
    rows = [[Cell(r["variant"]), Cell(r["overall"]["accuracy"], "pct"),
             *(estimate_cell(r["gaps"][k]) for k in HEADLINE_GAPS), Cell(r["worst_group_accuracy"], "pct"),
             Cell(r["size_bytes"] / 1000, "thousands"), Cell(fp32_size / r["size_bytes"], "times"), _latency_cell(r),
             Cell("YES" if r["collapsed"] else "no")] for r in results.values()]
    columns = ["variant", "accuracy (%)", "EO (TPR gap)", "FPR gap", "equalized odds", "DP gap", "worst group acc (%)",
               "size (KB)", "smaller than fp32", "latency (ms/batch)", "collapsed"]
    note = prose("Latency: median compiled time per batch on the CPU where real kernels ran (fp32, int8; the device, "
                 "threads and instruction set are in latency.json); ", italic("simulated"),
                 " = fake quantization (integers simulated in fp32, no speed claim); ", italic("dense-decoded"),
                 " = shared or sparse weights decoded to dense fp32 kernels (no speed claim).")
    return Section(f"Table 1: overall accuracy and gaps ({level(confidence)} CIs)", (table(columns, rows), note))


def _latency_cell(r: dict) -> Cell:
    """Median compiled milliseconds per batch, or the kernels' name where no speed is claimed."""
    compiled = r["latency_ms"].get("compiled")
    return Cell(r["kernels"]) if compiled is None else Cell(compiled, "num1")


def per_group_sections(results: dict[str, dict]) -> list[Section]:
    groups = list(next(iter(results.values()))["groups"])
    accuracy = table(["variant", *groups], [[Cell(r["variant"]), *(Cell(r["groups"][g]["accuracy"], "pct")
                                                                   for g in groups)] for r in results.values()])
    rates = table(["variant", *(f"{g} TPR" for g in groups), *(f"{g} FPR" for g in groups)],
                  [[Cell(r["variant"]), *(Cell(r["groups"][g]["tpr"], "num") for g in groups),
                    *(Cell(r["groups"][g]["fpr"], "num") for g in groups)] for r in results.values()])
    return [Section("Table 2: accuracy per group (%)", (accuracy,)),
            Section("Table 3: TPR and FPR per group", (rates,))]


def compression_sections(results: dict[str, dict], confidence: float) -> list[Section]:
    """Whether each variant widens the gaps vs fp32 (paired), every gap's change, and per-sample flips."""
    compared = [r for r in results.values() if "vs_fp32" in r]
    if not compared:
        return []
    lv = level(confidence)
    verdicts = table(["variant", f"accuracy gap change [{lv} CI]", "verdict", f"TPR gap change [{lv} CI]", "verdict"],
                     [[Cell(r["variant"]), *_change_and_verdict(r["vs_fp32"]["gaps"]["accuracy_gap"]),
                       *_change_and_verdict(r["vs_fp32"]["gaps"]["tpr_gap"])] for r in compared])
    changes = table(["variant", "gap", "change", f"{lv} CI", "p"],
                    [[Cell(r["variant"]), Cell(gap), Cell(c["delta"], "num"),
                      Cell(interval(c["ci_low"], c["ci_high"])), Cell(c["p_value"], "num")]
                     for r in compared for gap in HEADLINE_GAPS for c in [r["vs_fp32"]["gaps"][gap]]])
    return [Section("Does compression widen the minority's gap?",
                    (prose(f"Paired on the same test samples ({lv} exact-beta Dirichlet bounds of the change vs fp32): "
                           "WIDENS when the whole interval is above 0, narrows when it is below, otherwise no "
                           "detectable change."), verdicts)),
            Section("Change vs fp32 (paired, on the same test samples)", (changes,)),
            flips_section(results)]


def flips_section(results: dict[str, dict]) -> Section:
    """Per variant and group: how many test samples compression turned wrong or right."""
    compared = [r for r in results.values() if "vs_fp32" in r]
    flips = table(["variant", "group", "n", "flip rate", "correct->wrong", "wrong->correct", "accuracy change",
                   "McNemar p"],
                  [[Cell(r["variant"]), Cell(g), Cell(f["n"], "int"), Cell(f["flip_rate"], "num"),
                    Cell(f["correct_to_wrong"], "int"), Cell(f["wrong_to_correct"], "int"),
                    Cell(f["accuracy_delta"], "num"), Cell(f["mcnemar_p"], "num")]
                   for r in compared for g, f in r["vs_fp32"]["groups"].items()])
    return Section("Per-sample flips vs fp32, by group", (flips,))


def _change_and_verdict(change: dict) -> tuple[Cell, Cell]:
    return estimate_cell(change, "delta"), verdict_cell(change)
