"""The report reads its confidence level and reference group from the metrics, and says what the CIs say.

Tests check the document (a table's cells, their emphasis and notes); the Markdown renderer's own tests at the
end check Markdown syntax, and only there."""

import numpy as np
import pandas as pd
import pytest

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import fairness_metrics, paired_comparison
from fairquant.fairness.pareto import non_dominated
from fairquant.fairness.summary import summary
from fairquant.report import Cell, Document, Figure, Prose, Section, render_markdown
from fairquant.report.build import classification_sections
from fairquant.report.classification import intro, signed_sentence
from fairquant.report.document import BulletList, Table, prose, strong, table
from fairquant.report.numbers import fmt


def _result(name, y_true, y_pred, groups, confidence, reference=None):
    options = {"privileged_group": "Female", "confidence": confidence, "n_boot": 500}
    result = {"variant": name, "kind": name, "kernels": "simulated", "details": {}, "synthetic": True,
              "protected": ["Male"], "size_bytes": 1000, "latency_ms": {}, "collapsed": False,
              **fairness_metrics(y_true, y_pred, groups, **options)}
    if reference is not None:
        result["vs_fp32"] = paired_comparison(y_true, reference, y_pred, groups, **options)
    return result


def _results(confidence):
    rng = np.random.default_rng(0)
    groups = np.where(np.arange(2000) < 1600, "Female", "Male")
    y_true = rng.integers(0, 2, 2000)
    fp32 = np.where(rng.random(2000) < np.where(groups == "Male", 0.7, 0.9), y_true, 1 - y_true)
    variant = np.where((groups == "Male") & (y_true == 1) & (rng.random(2000) < 0.1), 0, fp32)
    return {"fp32": _result("fp32", y_true, fp32, groups, confidence),
            "ptq": _result("ptq-w4a4", y_true, variant, groups, confidence, reference=fp32)}


def _document(results) -> Document:
    return Document("fairquant report", intro(next(iter(results.values()))), tuple(classification_sections(results)))


def _all_words(document: Document) -> str:
    """Every word the document says, whatever the format: titles, prose, column headings and cells."""
    def block_words(block):
        if isinstance(block, Prose):
            return ["".join(s.text for s in block.spans)]
        if isinstance(block, BulletList):
            return [w for item in block.items for w in block_words(item)]
        if isinstance(block, Table):
            return [*block.columns, *(c.words() for row in block.rows for c in row)]
        return [block.name]
    words = [w for b in document.intro for w in block_words(b)]
    for section in document.walk():
        words += [section.title, *(w for b in section.blocks for w in block_words(b))]
    return "\n".join(words)


def test_summary_adds_the_worst_groups_signed_tpr_difference():
    results = _results(0.95)
    out = summary(results)
    signed = results["fp32"]["signed"]["tpr"]["Male"]
    assert out["fp32"]["tpr_diff_group"] == "Male"
    assert (out["fp32"]["tpr_diff"], out["fp32"]["tpr_diff_ci_low"], out["fp32"]["tpr_diff_ci_high"]) == (
        signed["value"], signed["ci_low"], signed["ci_high"])
    assert {"accuracy", "tpr_gap", "fpr_gap", "eq_odds", "dp_gap", "worst_group_accuracy", "flip_rate"} <= set(out["ptq"])


def test_headline_names_the_disadvantaged_group_and_whether_the_ci_excludes_zero():
    r = _results(0.95)["fp32"]
    d = r["signed"]["tpr"]["Male"]
    assert d["ci_high"] < 0
    assert signed_sentence(r, "tpr") == (f"Male's TPR is {-d['value']:.3f} lower than Female's [{-d['ci_high']:.3f}, "
                                         f"{-d['ci_low']:.3f}]: the CI excludes 0, so Male is disadvantaged on TPR.")
    headline = _document(_results(0.95)).section("Headline").blocks[0]
    assert headline.items[0].spans[0] == strong("fp32") and signed_sentence(r, "tpr") in headline.items[0].spans[1].text


def test_report_uses_the_configured_confidence():
    document = _document(_results(0.9))
    words = _all_words(document)
    assert "95%" not in words and "90% simultaneous CIs" in words and "p < 0.1" in words
    signed = document.section("Signed differences vs Female").blocks[1]
    assert signed.columns == ("variant", "group", "accuracy", "TPR", "FPR", "selection rate")
    row = signed.row("ptq-w4a4")
    assert row["group"].value == "Male" and row["TPR"].kind == "num" and row["TPR"].interval is not None


def test_int8_section_shows_the_cpu_and_the_kernel_check():
    from fairquant.report.remedies import int8_sections

    check = {"cpu_capability": "AVX2", "reduce_range": True, "images": 256, "image_set": "held-out validation",
             "sqnr_db": 31.4, "correlation": 0.9996, "quant_sqnr_db": 30.6, "tolerance_db": 5.0,
             "mean_abs_diff": 0.0364, "quant_noise": 0.0657}
    sections = int8_sections({"ptq": {"variant": "ptq-w8a8-train", "details": {"int8_check": check}},
                              "qat": {"variant": "qat-w4a4", "details": {}}})
    (section,) = sections
    rows = section.blocks[1].rows
    assert [[c.words() for c in row] for row in rows] == [
        ["ptq-w8a8-train", "AVX2", "yes", "256 held-out validation", "31.4", "0.9996", "30.6", "5", "0.0364 (0.0657)"]]
    assert rows[0][3] == Cell(256, "int", note="held-out validation")
    assert int8_sections({"qat": {"variant": "qat-w4a4", "details": {}}}) == []


def test_pareto_front_by_hand():
    # (accuracy, worst-group accuracy, -size): b beats a everywhere; c trades accuracy for size; d ties c
    points = [(0.8, 0.6, -4.0), (0.9, 0.7, -4.0), (0.85, 0.7, -1.0), (0.85, 0.7, -1.0)]
    assert non_dominated(points) == [False, True, True, True]


def test_one_formatter_prints_undefined_for_none_and_nan_and_infinities_as_such():
    """Found in review: an infinite SER (a race with no errors) printed "undefined", as if nothing were known."""
    assert [fmt(v) for v in (None, float("nan"), float("inf"), -float("inf"))] == ["undefined", "undefined", "inf",
                                                                                    "-inf"]
    assert fmt(float("inf"), "pct_change") == "inf"
    assert fmt(0.12345) == "0.123" and fmt(0.9, "pct") == "90.00" and fmt(-0.009, "pct_change") == "-0.90"
    assert Cell(0.1, "num", interval=(None, 0.2), note="*").words() == "0.100 [undefined, 0.200] *"
    with pytest.raises(FairquantError, match="unknown number format 'percent'"):
        fmt(0.5, "percent")


# The Markdown renderer: the only tests that know Markdown syntax.

def test_markdown_renders_a_table_with_emphasis_notes_and_undefined_values():
    t = table(["variant", "gap", "verdict"], [[Cell("qat-w4a4"), Cell(0.1234, "num", interval=(0.01, None)),
                                              Cell("WIDENS", emphasis=True)],
                                             [Cell("a|b"), Cell(float("nan"), "num", note="p 0.500"), Cell("")]])
    text = render_markdown(Document("r", (), (Section("Gaps", (t,)),)))
    assert text == ("# r\n\n## Gaps\n\n| variant | gap | verdict |\n|---|---|---|\n"
                    "| qat-w4a4 | 0.123 [0.010, undefined] | **WIDENS** |\n| a\\|b | undefined p 0.500 |  |\n")


def test_markdown_renders_prose_lists_subsections_and_figure_links(tmp_path):
    frame = pd.DataFrame({"variant": ["fp32", "ptq"], "accuracy": [0.9, 0.8], "worst_group_accuracy": [0.7, 0.6],
                          "size_kb": [4000.0, 1000.0], "pareto": [True, True]})
    figure = Figure("pareto", "pareto_scatter", frame)
    document = Document("r", (prose(strong("Data: SYNTHETIC"), " (generated)."),), (
        Section("Headline", (BulletList((prose(strong("fp32"), ": fine."), prose("second"))),),
                (Section("Figures", (figure,)),)),))
    assert render_markdown(document) == ("# r\n\n**Data: SYNTHETIC** (generated).\n\n## Headline\n\n- **fp32**: fine.\n"
                                         "- second\n\n### Figures\n\n![pareto](pareto.png)\n")
    assert not (tmp_path / "pareto.png").exists()
    render_markdown(document, assets=tmp_path)
    assert (tmp_path / "pareto.png").is_file()


def test_unknown_elements_and_figure_kinds_are_errors(tmp_path):
    with pytest.raises(FairquantError, match="no drawing for figure kind 'pie'"):
        render_markdown(Document("r", (), (Section("F", (Figure("x", "pie", pd.DataFrame()),)),)), assets=tmp_path)
    with pytest.raises(FairquantError, match="the Markdown renderer has no rule for str"):
        render_markdown(Document("r", ("raw markdown",), ()))


def test_verification_cells_keep_an_infinite_ser_and_an_unbounded_interval_end():
    """The stored form of an infinite estimate is null with ``nonfinite``; a ratio's null CI end is unbounded."""
    from fairquant.report.verification import change_cell, estimate_cell

    infinite = {"value": None, "ci_low": None, "ci_high": None, "nonfinite": {"value": "inf"}}
    assert estimate_cell(infinite, pct=False).words() == "inf"
    assert estimate_cell({"value": 2.5, "ci_low": 1.769, "ci_high": None}, pct=False).words() == "2.500 [1.769, inf]"
    change = {"delta": 0.03, "ci_low": -0.31, "ci_high": None, "excludes_zero": False}
    assert change_cell(change, pct=False).words() == "+0.03 [-0.31, inf]"
    assert estimate_cell({"value": None, "ci_low": None, "ci_high": None}).words() == "undefined"
    # a null named "undefined" (an all-NaN bootstrap) stays undefined, not unbounded; an infinite change prints inf
    assert estimate_cell({"value": 2.0, "ci_low": 1.0, "ci_high": None, "nonfinite": {"ci_high": "undefined"}},
                         pct=False).words() == "2.000 [1.000, undefined]"
    assert change_cell({"delta": None, "ci_low": None, "ci_high": None, "nonfinite": {"delta": "inf"}},
                       pct=False).words() == "inf"
