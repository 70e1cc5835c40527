"""The multi-class report sections, built from evaluation JSONs written and read back as the pipeline does, and
rendered through the Markdown renderer."""

import numpy as np
import pytest

from fairquant.fairness.multiclass import multiclass_metrics
from fairquant.fairness.multiclass_paired import multiclass_paired
from fairquant.io import read_json, write_json
from fairquant.report import Document, render_markdown
from fairquant.report.multiclass import multiclass_sections

OPTIONS = {"n_boot": 200, "confidence": 0.9, "seed": 0}


def _results(tmp_path, y_true, group, classes, variants: dict[str, np.ndarray], privileged: str | None) -> dict:
    """variant -> the evaluation dict as the report reads it (written to JSON: NaN becomes null)."""
    out = {}
    for name, y_pred in variants.items():
        result = {"variant": name, **multiclass_metrics(y_true, y_pred, group, classes, privileged_group=privileged,
                                                        **OPTIONS)}
        if name != "fp32":
            result["vs_fp32"] = multiclass_paired(y_true, variants["fp32"], y_pred, group, classes,
                                                  privileged_group=privileged, **OPTIONS)
        write_json(tmp_path / f"{name}.json", result)
        out[f"slot-{name}"] = read_json(tmp_path / f"{name}.json")  # keyed by slot, printed by variant name
    return out


def _class_as_group(tmp_path):
    rng = np.random.default_rng(0)
    k, n = 6, 1800
    y_true = rng.integers(0, k, n)
    fp32 = np.where(rng.random(n) < np.linspace(0.6, 0.95, k)[y_true], y_true, rng.integers(0, k, n))
    int8 = np.where((y_true == 0) & (fp32 == 0) & (rng.random(n) < 0.4), 1, fp32)  # class 0 loses many rows
    classes = [f"digit{c}" for c in range(k)]
    return _results(tmp_path, y_true, np.asarray(classes)[y_true], classes, {"fp32": fp32, "int8": int8,
                                                                             "prune": fp32.copy()}, None)


def test_class_as_group_leads_with_per_class_accuracy_and_drops(tmp_path):
    results = _class_as_group(tmp_path)
    sections = multiclass_sections(results, 0.9)
    assert [s.title.split(" (")[0] for s in sections] == [
        "Class as the group", "Per-class accuracy", "The worst class", "Per-class accuracy drop vs fp32 and excess drop"]
    document = Document("r", (), tuple(sections))
    text = render_markdown(document)
    assert "Each group is one class" in text and "degenerate" in text
    accuracy = document.tables()[0]
    fp32_recall = results["slot-fp32"]["classes"]["per_class"]["digit0"]["recall"]
    assert accuracy.row("digit0")["fp32 (%)"].value == pytest.approx(fp32_recall)
    assert f"{100 * fp32_recall:.2f} [" in text  # the band is printed next to the value
    summary, drops = document.tables()[2], document.tables()[3]
    int8 = summary.row("int8")
    assert int8["worst class"].value == "digit0" and int8["max excess drop (pts)"].emphasis
    assert not summary.row("prune")["max excess drop (pts)"].emphasis  # no row flipped: nothing detected
    assert drops.row("digit0")["int8 excess drop (pts)"].emphasis
    assert drops.row("digit3")["prune drop (pts)"].value == 0
    assert "| digit0 |" in text and "**" in text


def test_attribute_as_group_shows_groups_worst_class_gaps_and_their_changes(tmp_path):
    rng = np.random.default_rng(1)
    n, k = 2000, 4
    group = rng.choice(["female", "male"], n)
    y_true = rng.integers(0, k, n)
    fp32 = np.where(rng.random(n) < 0.8, y_true, rng.integers(0, k, n))
    int8 = np.where((group == "female") & (fp32 == y_true) & (rng.random(n) < 0.15), (y_true + 1) % k, fp32)
    results = _results(tmp_path, y_true, group, [f"race{c}" for c in range(k)], {"fp32": fp32, "int8": int8}, "male")
    sections = multiclass_sections(results, 0.9)
    titles = [s.title.split(" (")[0] for s in sections]
    assert titles[:4] == ["Accuracy per group", "Gaps between groups, worst class", "Change of the gaps vs fp32",
                          "Accuracy drop vs fp32 and excess drop per group"]
    assert titles[4:] == ["Per-class accuracy", "The worst class", "Per-class accuracy drop vs fp32 and excess drop"]
    document = Document("r", (), tuple(sections))
    text = render_markdown(document)
    gaps = document.tables()[1].row("int8")
    worst = results["slot-int8"]["gaps"]["tpr_gap"]["worst_class"]
    assert gaps["worst-class TPR (recall) gap"].note == f"({worst})"
    changes = document.tables()[2].row("int8")
    assert changes["accuracy gap change"].interval[0] > 0  # female lost 15 % of its right rows
    drops = document.tables()[4]
    assert drops.row("female")["int8 excess drop (pts)"].emphasis
    assert not drops.row("male")["int8 excess drop (pts)"].emphasis
    assert "undefined" not in document.tables()[0].rows[0][1].words()
    assert text.count("\n## ") == len(sections)


def test_a_metrics_block_nested_under_metrics_renders_the_same(tmp_path):
    results = _class_as_group(tmp_path)
    nested = {slot: {"variant": r["variant"], "metrics": {k: v for k, v in r.items() if k not in ("variant", "vs_fp32")},
                     **({"vs_fp32": r["vs_fp32"]} if "vs_fp32" in r else {})} for slot, r in results.items()}
    flat_text = render_markdown(Document("r", (), tuple(multiclass_sections(results, 0.9))))
    assert render_markdown(Document("r", (), tuple(multiclass_sections(nested, 0.9)))) == flat_text
    assert "slot-" not in flat_text
