"""The classification branch's sections on remedies and on how variants were made: each remedy's change vs the
variant it fixes, the layer-sensitivity precision plans, the int8 kernel checks, the calibration sets and the
layers kept at their own bit-width."""

from __future__ import annotations

from fairquant.fairness.summary import change_verdict, headline_gaps
from fairquant.report.classification import VERDICT_WORDS, across_seeds_table, estimate_cell
from fairquant.report.document import Cell, Section, italic, prose, table
from fairquant.report.numbers import fmt, level


def remedies_section(results: dict[str, dict], seeds: dict[str, dict] | None, confidence: float) -> list[Section]:
    """Per remedy: its paired change in every gap vs the unmitigated variant it fixes, with CIs; its cost in
    accuracy and size; collapse; with several training seeds, the across-seed verdict; and for constrained
    fine-tuning whether the constraint held on train, validation and test."""
    remedies = [r for r in results.values() if r.get("baseline")]
    if not remedies:
        return []
    rows, gaps = [], headline_gaps(remedies[0])
    for r in remedies:
        base, change = results[r["baseline"]], r["vs_baseline"]["gaps"]
        rows.append([Cell(r["variant"]), Cell(base["variant"]),
                     Cell(r["overall"]["accuracy"] - base["overall"]["accuracy"], "pct_change", note="pts"),
                     Cell(r["worst_group_accuracy"], "pct", note=f"(was {fmt(base['worst_group_accuracy'], 'pct')})"),
                     Cell(r["size_bytes"] / base["size_bytes"], "times"),
                     *(estimate_cell(change[g], "delta", note=_verdict_word(change[g])) for g in gaps),
                     _collapse_cell(r)])
    columns = ["remedy", "fixes", "accuracy change", "worst-group acc", "size vs fixed",
               *(f"{g} change" for g in gaps), "collapsed"]
    blocks = (prose(f"Paired on the same test samples ({level(confidence)} exact-beta Dirichlet bounds): a negative gap "
                    "change means the remedy narrowed the gap. Accuracy and size are the cost; ", italic("collapsed"),
                    " flags a constant classifier (the whole model, or a group made constant by a post-processor)."),
              table(columns, rows), prose("Verdicts: WIDENS / narrows when the whole CI is above / below 0."))
    subsections = []
    if seeds is not None and any("changes_vs_baseline" in e and len(e["seeds"]) > 1 for e in seeds.values()):
        changes = [(e["variant"], k, c) for e in seeds.values() for k, c in e.get("changes_vs_baseline", {}).items()]
        subsections.append(Section("Across training seeds", (across_seeds_table("remedy", changes),)))
    constrained = [r for r in remedies if r.get("constraint")]
    if constrained:
        subsections.append(_constraint_section(constrained))
    return [Section("Remedies: what each one changes vs the variant it fixes", blocks, tuple(subsections))]


def _verdict_word(change: dict) -> str:
    verdict = change_verdict(change)
    return VERDICT_WORDS.get(verdict, verdict)


def _collapse_cell(r: dict) -> Cell:
    """A remedy collapsed when the variant predicts one class, or when a post-processor made a group constant."""
    groups = r.get("details", {}).get("mitigation", {}).get("collapsed") or []
    flags = (["model constant"] if r["collapsed"] else []) + [f"{g} constant" for g in groups]
    return Cell(", ".join(flags), emphasis=True) if flags else Cell("no")


def _constraint_section(constrained: list[dict]) -> Section:
    def split_cell(d: dict) -> Cell:
        holds = d.get("holds")
        verdict = None if holds is None else f"({'holds' if holds else 'violated'})"
        return Cell(d["max_excess_drop"], "num", note=verdict)

    rows = []
    for r in constrained:
        c = r["constraint"]
        base = c.get("test_baseline")
        multipliers = ", ".join(f"{g} {fmt(v, 'num4')}" for g, v in c.get("multipliers", {}).items()) or "-"
        rows.append([Cell(r["variant"]), Cell(c["test"].get("tolerance"), "num"), split_cell(c["train"]),
                     split_cell(c["validation"]), split_cell(c["test"]),
                     Cell(base["max_excess_drop"], "num") if base else Cell("-"), Cell(multipliers)])
    return Section("Does the constraint hold beyond the data it was trained on?", (
        prose("Largest excess drop of any group: (acc_fp32,g - acc_g) - (acc_fp32 - acc), on the constraint's rows, "
              "per split (a point estimate; the test split's groups are small). The fine-tuning saw only train; validation "
              "chose the checkpoint; test is unseen. Next to it, the variant it fixes on test, and the final "
              "multipliers (near 0: the constraint never pushed)."),
        table(["remedy", "tolerance", "train", "validation", "test", "test, without the remedy", "final multipliers"],
              rows)))


def precision_sections(results: dict[str, dict]) -> list[Section]:
    """Layer sensitivity (each layer alone at low bits: its damage to the worst group on validation) and the
    mixed-precision plan built from it, for every precision-plan variant."""
    sections = []
    for r in results.values():
        mitigation = r.get("details", {}).get("mitigation", {})
        if mitigation.get("family") == "precision":
            sections.append(_precision_section(r["variant"], mitigation["sensitivity"], mitigation["plan"]))
    return sections


def _precision_section(variant: str, sensitivity: dict, plan: dict) -> Section:
    groups = list(sensitivity["fp32"]["group_accuracy"])
    fp32, every = sensitivity["fp32"], sensitivity["all_layers"]
    rows = [[Cell(row["layer"]), Cell(row["damage"], "num"), Cell(row["accuracy"], "pct"),
             *(Cell(row["group_drop"][g], "num") for g in groups),
             Cell("yes", emphasis=True) if row["layer"] in plan["kept"] else Cell("")] for row in sensitivity["layers"]]
    budget = "none" if plan.get("budget_bytes") is None else f"{fmt(plan['budget_bytes'] / 1e6, 'num2')} MB"
    kept = ", ".join(plan["kept"]) or "none: no layer damages the worst group"
    return Section(f"Layer sensitivity and precision plan: {variant}", (
        prose(f"Each layer alone at {sensitivity['bits']} bits (weights and input), every other layer float, on the "
              f"{sensitivity['validation_images']} validation images. Damage = fp32 worst-group accuracy minus the "
              f"worst-group accuracy with that layer quantized. fp32: accuracy {fmt(fp32['accuracy'], 'pct')}, worst "
              f"group {fp32['worst_group']} {fmt(fp32['worst_group_accuracy'], 'pct')}; every layer at "
              f"{sensitivity['bits']} bits: accuracy {fmt(every['accuracy'], 'pct')}, damage {fmt(every['damage'])}."),
        table(["layer", "damage", "accuracy (%)", *(f"{g} drop" for g in groups), "kept"], rows),
        prose(f"Plan: {len(plan['kept'])} layer(s) kept high ({kept}); {fmt(plan['size_bytes'] / 1e6, 'num2')} MB vs "
              f"{fmt(plan['fully_quantized_size_bytes'] / 1e6, 'num2')} MB with every layer low (budget {budget}). Its "
              "gaps on test are in Table 1.")))


def int8_sections(results: dict[str, dict]) -> list[Section]:
    """What makes an int8 result trustworthy on this CPU: its int8 instructions, whether activations had to be
    7-bit (reduce_range, CPUs without VNNI), and how closely the compiled kernels followed their q/dq reference."""
    checked = [(r["variant"], r["details"]["int8_check"]) for r in results.values()
               if r.get("details", {}).get("int8_check")]
    if not checked:
        return []
    rows = [[Cell(name), Cell(c["cpu_capability"]), Cell("yes" if c["reduce_range"] else "no"),
             Cell(c["images"], "int", note=c.get("image_set", "calibration")), _decibel_cell(c["sqnr_db"]),
             Cell("-") if c.get("correlation") is None else Cell(c["correlation"], "num4"),
             _decibel_cell(c["quant_sqnr_db"]), Cell(c["tolerance_db"], "general"),
             Cell(c["mean_abs_diff"], "num4", note=f"({fmt(c['quant_noise'], 'num4')})")] for name, c in checked]
    return [Section("int8 kernels", (
        prose("Compiled int8 kernels compared with their own quantize/dequantize reference (logits) on the calibration "
              "images and on held-out validation images; the worse of the two is shown. The kernels must not add more "
              "error than quantization itself (within the tolerance) and must correlate with the reference, or the "
              "stage refuses the model. reduce_range = 7-bit activations, used on CPUs without VNNI."),
        table(["variant", "CPU int8 capability", "reduce_range", "images", "SQNR kernels vs reference (dB)",
               "correlation", "SQNR reference vs fp32 (dB)", "tolerance (dB)",
               "mean abs logit diff (quantization noise)"], rows)))]


def _decibel_cell(value: float | None) -> Cell:
    """Identical outputs have an infinite SQNR, stored as null: 'exact'."""
    return Cell("exact") if value is None else Cell(value, "num1")


def calibration_sections(sets: dict[str, dict]) -> list[Section]:
    """Each calibration set's size, source, estimated and true group composition."""
    if not sets:
        return []

    def shares(d: dict | None) -> str:
        return ", ".join(f"{g}: {fmt(v, 'num2')}" for g, v in d.items()) if d else "unlabelled"

    rows = [[Cell(name), Cell(info["size"], "int"), Cell(info["source"]), Cell(shares(info["estimated_composition"])),
             Cell(shares(info.get("true_composition"))), Cell(info.get("skipped_unreadable", 0), "int"),
             Cell(info["group_classifier"]["val_accuracy"], "num",
                  note=f"({fmt(info['group_classifier']['val_balanced_accuracy'])})")] for name, info in sets.items()]
    return [Section("Calibration sets", (
        prose("Estimated composition: a group classifier (logistic regression on fp32 features) fitted on the training "
              "split; its validation accuracy is in the last column. True composition where labels exist."),
        table(["set", "images", "source", "estimated groups", "true groups", "skipped unreadable",
               "classifier val acc (balanced)"], rows)))]


def mixed_precision_sections(results: dict[str, dict]) -> list[Section]:
    """Layers whose bit-widths differ from their variant's scheme."""
    mixed = [(r["variant"], layer) for r in results.values() for layer in r["details"].get("layers", [])
             if (layer["weight_bits"], layer["activation_bits"]) != (r["details"]["scheme"]["bits"],
                                                                     r["details"]["scheme"]["activation_bits"])]
    if not mixed:
        return []
    rows = [[Cell(v), Cell(layer["layer"]), Cell(layer["weight_bits"] or "float", "int"),
             Cell(layer["activation_bits"] or "float", "int")] for v, layer in mixed]
    return [Section("Mixed precision: layers at their own bit-width",
                    (table(["variant", "layer", "weight bits", "input bits"], rows),))]
