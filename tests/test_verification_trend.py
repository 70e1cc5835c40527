"""Race bias against bits: the verification branch's curves, their trend answers from the shared pair bootstrap,
verify.json's ``trends`` and the report's table, figure and plot table."""

import json

import numpy as np
import pytest

from fairquant.errors import FairquantError
from fairquant.fairness.trend import slope, spearman
from fairquant.fairness.verification import (
    bit_curves,
    resampled_accuracies,
    stratified_resample_indices,
    verification_report,
)
from fairquant.fairness.verification_trend import BitCurve

RACES = ("African", "Asian", "Caucasian", "Indian")
BITS = (8, 6, 4)


def _pairs(seed=0, per_race=300):
    """RFW-like pairs (10 folds, half genuine), the Indian race the hardest, as in tests/test_verification_metrics."""
    rng = np.random.default_rng(seed)
    parts = []
    for r, name in enumerate(RACES):
        per_fold = per_race // 10
        genuine = np.tile(np.arange(per_fold) < per_fold // 2, 10)
        score = np.where(genuine, rng.normal(0.45 - 0.05 * r, 0.15, per_race), rng.normal(0.05, 0.12, per_race))
        parts.append((score.clip(-1, 1), genuine, np.repeat(np.arange(10), per_fold), np.full(per_race, name)))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _config(method, bits, calibration, layers=None):
    return {"verify_method": method, "calibration": {"set": calibration},
            "scheme": {"bits": bits, "activation_bits": bits, "layers": layers or {}}}


def _study(noise_by_bits, seed=0, calibration="train"):
    """fp32 and one ptq variant per bit-width; the Indian race's scores get noise of ``noise_by_bits[bits]``."""
    score, genuine, fold, race = _pairs(seed)
    rng = np.random.default_rng(seed + 1)
    scores, configs = {"fp32": score}, {"fp32": {"kind": "fp32"}}
    hit = race == "Indian"
    for bits, noise in noise_by_bits.items():
        name = f"ptq-w{bits}a{bits}-{calibration}"
        worse = score.copy()
        worse[hit] = (score[hit] + rng.normal(0, noise, hit.sum())).clip(-1, 1) if noise else score[hit]
        scores[name], configs[name] = worse, _config("ptq", bits, calibration)
    return scores, configs, genuine, fold, race


def _report(scores, configs, genuine, fold, race, bootstrap=200):
    return verification_report(scores, genuine, fold, race, reference="fp32", bootstrap=bootstrap, seed=5,
                               curves=bit_curves(configs))


@pytest.fixture(scope="module")
def falling():
    """The Indian race, already the hardest, loses more as bits fall: SER grows."""
    study = _study({8: 0.02, 6: 0.2, 4: 0.45})
    return study, _report(*study)


def test_curves_group_variants_by_method_and_calibration_highest_bits_first():
    configs = {"fp32": {"kind": "fp32"}, "ptq-w4a4-train": _config("ptq", 4, "train"),
               "ptq-w8a8-train": _config("ptq", 8, "train"), "ptq-w4a4-synthetic": _config("ptq", 4, "synthetic"),
               "quantface-w6a6-train": _config("quantface", 6, "train"),
               "ptq-w4a4-mixed-train": _config("ptq", 4, "train", {"conv1": 8}),
               "kmeans": {"verify_method": "kmeans", "clusters": 16}, "qat": {"verify_method": "qat"}}
    curves = bit_curves(configs)
    assert curves == {
        "ptq-mixed-train": BitCurve("ptq-mixed", "train", (4,), ("ptq-w4a4-mixed-train",)),
        "ptq-synthetic": BitCurve("ptq", "synthetic", (4,), ("ptq-w4a4-synthetic",)),
        "ptq-train": BitCurve("ptq", "train", (8, 4), ("ptq-w8a8-train", "ptq-w4a4-train")),
        "quantface-train": BitCurve("quantface", "train", (6,), ("quantface-w6a6-train",))}


def test_two_variants_at_the_same_bits_on_one_curve_are_refused():
    configs = {"a": _config("ptq", 4, "train"), "b": _config("ptq", 4, "train")}
    with pytest.raises(FairquantError, match="^variants 'a' and 'b' both lie at 4 bits on the ptq-train curve"):
        bit_curves(configs)


def test_a_curve_naming_an_unscored_variant_is_refused():
    score, genuine, fold, race = _pairs(per_race=100)
    curves = {"ptq-train": BitCurve("ptq", "train", (8, 4), ("ptq-w8a8-train", "gone"))}
    with pytest.raises(FairquantError, match=r"^curve 'ptq-train' names variants \['ptq-w8a8-train', 'gone'\] that"):
        verification_report({"fp32": score}, genuine, fold, race, reference="fp32", bootstrap=5, curves=curves)


def test_a_race_that_falls_with_bits_makes_the_ser_widen(falling):
    _, report = falling
    trend = report["trends"]["ptq-train"]
    assert (trend["method"], trend["calibration"], trend["x"]) == ("ptq", "train", [8, 6, 4])
    assert trend["variants"] == ["ptq-w8a8-train", "ptq-w6a6-train", "ptq-w4a4-train"]
    assert trend["ser"]["verdict"] == "widens" and trend["ser"]["ci_low"] > 0 and trend["ser"]["points"] == 3
    assert trend["ser_change"]["verdict"] == "widens"
    assert trend["ser_change"]["slope"] == pytest.approx(trend["ser"]["slope"])  # fp32 is one constant per draw
    indian = trend["accuracy"]["Indian"]
    assert indian["verdict"] == "narrows" and indian["as_bits_fall"] == "falls" and indian["ci_high"] < 0
    assert trend["verification_std"]["verdict"] == "widens"
    for race in ("African", "Asian", "Caucasian"):  # their scores never moved
        assert trend["accuracy"][race]["slope"] == 0.0 and trend["accuracy"][race]["verdict"] == "no clear trend"
    assert "trend" in report["conventions"]


def test_the_interval_is_the_slope_over_the_same_resamples_as_every_point(falling):
    """Recomputed by hand: the report's own resamples (same seed), each point's race accuracy per resample, the
    slope per resample, its percentiles."""
    (scores, _, genuine, fold, race), report = falling
    trend = report["trends"]["ptq-train"]
    rows = stratified_resample_indices(genuine, fold, race, n_boot=200, seed=5)
    indian = RACES.index("Indian")
    draws = np.stack([resampled_accuracies(scores[v], genuine, fold, race, rows)[:, indian]
                      for v in trend["variants"]], axis=-1)
    depth = -np.array(BITS, float)
    low, high = np.quantile(slope(depth, draws), [0.025, 0.975])
    assert trend["accuracy"]["Indian"]["ci_low"] == pytest.approx(low)
    assert trend["accuracy"]["Indian"]["ci_high"] == pytest.approx(high)
    values = [report["variants"][v]["summary"]["acc_Indian"]["value"] for v in trend["variants"]]
    assert trend["accuracy"]["Indian"]["slope"] == pytest.approx(np.polyfit(depth, values, 1)[0])
    assert trend["accuracy"]["Indian"]["spearman"] == pytest.approx(float(spearman(depth, np.array(values))))


def test_a_flat_curve_does_not_widen():
    report = _report(*_study({8: 0.0, 6: 0.0, 4: 0.0}, seed=2))
    trend = report["trends"]["ptq-train"]
    assert trend["ser"]["slope"] == pytest.approx(0.0) and trend["ser"]["verdict"] != "widens"
    assert all(a["verdict"] != "narrows" for a in trend["accuracy"].values())


def test_noise_alike_at_every_bit_width_gives_no_clear_trend():
    """Every point equally damaged (independent draws of the same noise): the slope's interval holds 0."""
    report = _report(*_study({8: 0.3, 6: 0.3, 4: 0.3}, seed=3))
    trend = report["trends"]["ptq-train"]
    assert trend["ser"]["verdict"] == "no clear trend"
    assert trend["accuracy"]["Indian"]["verdict"] == "no clear trend"


def test_two_bit_widths_are_undefined_and_still_round_trip_through_json(tmp_path):
    from fairquant.io import read_json, write_json

    report = _report(*_study({8: 0.02, 4: 0.45}), bootstrap=50)
    trend = report["trends"]["ptq-train"]
    assert trend["ser"]["verdict"] == "undefined" and trend["ser"]["slope"] is None and trend["ser"]["points"] == 2
    assert trend["accuracy"]["Indian"]["as_bits_fall"] == "undefined"
    write_json(tmp_path / "verify.json", report)
    assert read_json(tmp_path / "verify.json")["trends"] == json.loads(json.dumps(report["trends"], allow_nan=False))


def test_trends_round_trip_and_only_add_to_the_report(falling, tmp_path):
    from fairquant.io import read_json, write_json

    (scores, _, genuine, fold, race), report = falling
    write_json(tmp_path / "verify.json", report)
    assert read_json(tmp_path / "verify.json")["trends"] == report["trends"]
    plain = verification_report(scores, genuine, fold, race, reference="fp32", bootstrap=200, seed=5)
    assert "trends" not in plain and "trend" not in plain["conventions"]
    added = {k: v for k, v in report.items() if k != "trends"}
    added["conventions"] = {k: v for k, v in added["conventions"].items() if k != "trend"}
    assert json.dumps(added, sort_keys=True) == json.dumps(plain, sort_keys=True)


def _with_variant_records(report, configs):
    for name, config in configs.items():
        report["variants"][name]["variant"] = {k: config[k] for k in ("verify_method", "calibration", "scheme")
                                               if k in config}
    return report | {"synthetic": True}


def test_the_report_shows_each_curve_its_trend_a_figure_and_the_plot_table(falling, tmp_path):
    from fairquant.report import Document, plot_tables, render_markdown
    from fairquant.report.verification import CURVE_COLUMNS, verification_section

    (_, configs, *_), report = falling
    verify = _with_variant_records(report, configs)
    section = verification_section(verify)
    document = Document("r", (), (section,))
    curve = next(t for t in document.tables() if t.columns[-1] == "Δ SER vs fp32")
    assert curve.columns == ("bits", "variant", *RACES, "STD", "SER", "Δ SER vs fp32")
    assert [row[0].value for row in curve.rows] == ["fp32", "8", "6", "4", "trend: slope per bit removed",
                                                    "trend: Spearman with bits removed"]
    trend = curve.row("trend: slope per bit removed")
    assert trend["SER"].note == "widens" and trend["Indian"].note == "falls" and trend["Indian"].emphasis
    assert trend["Indian"].value == pytest.approx(report["trends"]["ptq-train"]["accuracy"]["Indian"]["slope"])
    bits = document.section("Race bias against bits")
    markdown = render_markdown(Document("r", (), (bits,)), assets=tmp_path)  # the one figure this section draws
    assert "Race bias against bits" in markdown and "| trend: slope per bit removed |" in markdown
    assert (tmp_path / "verify_curve.png").stat().st_size > 0
    table = plot_tables({}, verify)["verify_curve"]
    assert list(table.columns) == CURVE_COLUMNS and len(table) == 4 * 4  # fp32 and 3 bit-widths, 4 races each
    indian4 = table[(table["bits"] == 4) & (table["race"] == "Indian")].iloc[0]
    acc = report["variants"]["ptq-w4a4-train"]["summary"]["acc_Indian"]
    assert (indian4["method"], indian4["calibration"], indian4["accuracy"], indian4["ci_low"]) == (
        "ptq", "train", acc["value"], acc["ci_low"])


def test_two_bit_widths_say_why_the_trend_is_undefined():
    from fairquant.report import Document
    from fairquant.report.verification import verification_section

    study = _study({8: 0.02, 4: 0.45})
    verify = _with_variant_records(_report(*study, bootstrap=50), study[1])
    section = verification_section(verify).subsections
    bits = next(s for s in section if s.title.startswith("Race bias against bits"))
    assert "list at least 3 in verify.bits, e.g. [8, 6, 4]" in bits.blocks[0].spans[0].text
    table = Document("r", (), (bits,)).tables()[0]
    assert table.row("trend: slope per bit removed")["SER"].words() == "undefined (2 points)"


def test_an_older_verify_json_without_trends_has_no_curve_section():
    from fairquant.report.verification import curve_table, verification_section

    study = _study({8: 0.02, 4: 0.45})
    scores, configs, genuine, fold, race = study
    verify = _with_variant_records(verification_report(scores, genuine, fold, race, reference="fp32",
                                                       bootstrap=20), configs)
    titles = [s.title for s in verification_section(verify).subsections]
    assert not any(t.startswith("Race bias against bits") for t in titles)
    assert curve_table(verify).empty


def test_the_summary_reads_an_accuracy_trend_as_falling_or_rising_not_as_a_gap():
    from fairquant.fairness.summary import verification_summary

    verify = {"variants": {}, "synthetic": True, "trends": {"ptq-train": {
        "ser": {"slope": 0.04, "verdict": "no clear trend"},
        "verification_accuracy": {"slope": -0.007, "verdict": "narrows"}}}}
    row = verification_summary(verify)["trend ptq-train"]
    assert row == {"ser_slope": 0.04, "ser_verdict": "no clear trend", "accuracy_slope": -0.007,
                   "accuracy_verdict": "falls"}
