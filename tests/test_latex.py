"""The LaTeX renderer: escaping, cells (intervals, emphasis, undefined), the files the report writes, and that
each written file compiles on its own where a TeX engine is installed (skipped, with the reason, elsewhere)."""

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fairquant.errors import FairquantError
from fairquant.report import Cell, Section, escape_latex, latex_tables, render_latex_table
from fairquant.report.build import build_document, write_report
from fairquant.report.document import Document, Table, code, italic, prose, strong, table
from fairquant.report.latex import LatexRenderer, PAPER_TABLES, select_columns, slug
from test_report import _document, _results

ENGINE = shutil.which("pdflatex") or shutil.which("lualatex")
needs_tex = pytest.mark.skipif(ENGINE is None, reason="no TeX engine (pdflatex or lualatex) on PATH: the LaTeX "
                                                      "tables cannot be compiled here (texlive is not in CI)")


@pytest.mark.parametrize("char, expected", [
    ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
    ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"), ("\\", r"\textbackslash{}"),
    ("<", r"\textless{}"), (">", r"\textgreater{}"), ("|", r"\textbar{}"),
    ("±", r"$\pm$"), ("−", "$-$"), ("≤", r"$\leq$"), ("≥", r"$\geq$"), ("Δ", r"$\Delta$"), ("·", r"$\cdot$"),
    ("Φ", r"$\Phi$"), ("é", r"\'{e}"), ("ï", r'\"{\i{}}'), ("ß", r"\ss{}"), ("中", r"\texttt{[U+4E2D]}"),
])
def test_every_special_character_is_escaped(char, expected):
    assert escape_latex(f"a{char}b") == f"a{expected}b"


def test_backslash_escape_is_not_escaped_again():
    # the backslash's replacement holds braces; they must not be escaped a second time
    assert escape_latex("\\{x}") == r"\textbackslash{}\{x\}"


@pytest.mark.parametrize("text, expected", [
    ("-0.90", "$-$0.90"), ("[-0.079, 0.024]", "[$-$0.079, 0.024]"), ("(-1)", "($-$1)"), ("-inf", "$-$inf"),
    ("ptq-w8a8-train", "ptq-w8a8-train"), ("fp32-8", "fp32-8"), ("s80-2", "s80-2"), ("a--b", "a-{}-b"),
    ("+0.03", "+0.03"),
])
def test_a_minus_sign_only_before_a_number(text, expected):
    assert escape_latex(text) == expected


def test_a_table_with_intervals_emphasis_and_undefined_values_renders():
    t = table(["variant", "EO (TPR gap)", "verdict", "size (KB)"], [
        [Cell("ptq_w4a4 & co"), Cell(0.12, "num", interval=(0.05, 0.19)), Cell("WIDENS", emphasis=True),
         Cell(4918.1, "thousands")],
        [Cell("fp32"), Cell(-0.05, "num", interval=(-0.1, None)), Cell(None, "num"), Cell(float("nan"), "num")],
    ])
    source = LatexRenderer().tabular(t)
    assert source.splitlines() == [
        r"\begin{tabular}{lrlr}", r"\toprule",
        r"variant & EO (TPR gap) & verdict & size (KB) \\", r"\midrule",
        r"ptq\_w4a4 \& co & 0.120 [0.050, 0.190] & \textbf{WIDENS} & 4,918.1 \\",
        r"fp32 & $-$0.050 [$-$0.100, undefined] & undefined & undefined \\",
        r"\bottomrule", r"\end{tabular}"]


def test_a_table_document_has_its_caption_number_and_notes():
    t = table(["a", "b"], [[Cell("x"), Cell(1, "int")]])
    notes = (prose(strong("Note"), ": 95% CIs; ", italic("simulated"), " ", code("metrics/eval")),)
    numbered = render_latex_table(t, caption="Gaps (95% CIs)", notes=notes, number=3)
    assert numbered.startswith("\\documentclass{article}") and numbered.rstrip().endswith("\\end{document}")
    assert r"\usepackage{booktabs}" in numbered
    assert r"\setcounter{table}{2}\caption{Gaps (95\% CIs)}" in numbered
    assert r"{\footnotesize \textbf{Note}: 95\% CIs; \textit{simulated} \texttt{metrics/eval}}" in numbered
    assert r"\caption*{Gaps (95\% CIs)}" in render_latex_table(t, caption="Gaps (95% CIs)")


def test_latex_tables_reproduce_the_posters_tables_1_to_3_and_every_report_table(per_seed):
    document = _document(per_seed[0])
    files = latex_tables(document)
    report_tables = [name for name in files if name.startswith("report_")]
    assert list(files)[:3] == [p.name for p in PAPER_TABLES][:3]  # the sweep's table needs a sweep section
    assert len(report_tables) == len(document.tables())
    assert "report_03_table_1_overall_accuracy_and_gaps_95_cis" in report_tables
    table1 = files["table1_accuracy_eo_fpr"]
    assert r"variant & accuracy (\%) & EO (TPR gap) & FPR gap \\" in table1
    fp32 = document.section("Table 1:").blocks[0].row("fp32")
    eo = fp32["EO (TPR gap)"]
    assert (f"fp32 & {fp32['accuracy (%)'].words()} & {eo.value:.3f} [{eo.interval[0]:.3f}, {eo.interval[1]:.3f}] & "
            in table1)
    assert "Latency" not in table1  # the full Table 1's latency note speaks of a column the poster's lacks
    assert r"variant & Female & Male \\" in files["table2_accuracy_per_group"]
    assert r"variant & Female TPR & Male TPR & Female FPR & Male FPR \\" in files["table3_tpr_fpr_per_group"]


def test_a_paper_table_whose_section_is_absent_is_left_out():
    document = Document("r", (), (Section("Table 2: accuracy per group (%)",
                                          (table(["variant", "A"], [[Cell("fp32"), Cell(0.9, "pct")]]),)),))
    assert list(latex_tables(document)) == ["table2_accuracy_per_group", "report_01_table_2_accuracy_per_group"]


def test_selecting_a_column_the_table_lacks_names_the_fix():
    with pytest.raises(FairquantError, match=r"no columns \['EO'\] \(it has \['variant'\]\); update PAPER_TABLES"):
        select_columns(Table(("variant",), ()), ("variant", "EO"))


def test_slug_is_a_short_ascii_file_stem():
    assert slug("Face verification: race bias on RFW's protocol (Δ, 95% CIs)") == \
        "face_verification_race_bias_on_rfw_s_protocol_95"
    assert slug("±") == "table"


@pytest.fixture(scope="module")
def per_seed() -> dict[int, dict[str, dict]]:
    return {0: _results(0.95)}


def _write(tmp_path: Path, per_seed: dict) -> Path:
    plots = tmp_path / "plots"
    write_report(per_seed, summary_path=tmp_path / "summary.json", plots_dir=plots)
    return plots / "tables"


def test_write_report_writes_the_latex_tables_and_replaces_the_folder_whole(tmp_path, per_seed):
    (tmp_path / "plots" / "tables").mkdir(parents=True)
    (tmp_path / "plots" / "tables" / "stale.tex").write_text("from an earlier run")
    tables = _write(tmp_path, per_seed)
    document = build_document(per_seed)
    assert sorted(p.name for p in tables.iterdir()) == sorted(f"{n}.tex" for n in latex_tables(document))
    assert not any(p.name.startswith(".") for p in (tmp_path / "plots").iterdir())  # no staging folder left


def test_a_file_where_the_tables_folder_goes_is_refused_before_anything_is_written(tmp_path, per_seed):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "tables").write_text("not a folder")
    with pytest.raises(FairquantError, match=r"plots/tables is a file; the report writes its LaTeX tables to a folder"):
        _write(tmp_path, per_seed)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["tables"]
    assert not (tmp_path / "summary.json").exists()


def _compile(tex: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex.name],
                          cwd=tex.parent, capture_output=True, text=True, timeout=60)


@needs_tex
def test_every_written_table_compiles_on_its_own(tmp_path, per_seed):
    tables = _write(tmp_path, per_seed)
    hard = table(["name & co", "value"], [[Cell("a_b #1 {x} ~^\\ $5 50% ±−≤≥ Δ·Φ é 中"),
                                           Cell(-0.12, "num", interval=(None, 0.19), emphasis=True, note="p < 0.05")]])
    (tables / "special_characters.tex").write_text(render_latex_table(hard, caption="every special: & % $ # _ ~ ^ \\",
                                                                      number=1), encoding="utf-8")
    files = sorted(tables.glob("*.tex"))
    assert len(files) >= 4
    for tex in files:  # each in its own folder: a complete document, nothing shared
        folder = tmp_path / "build" / tex.stem
        folder.mkdir(parents=True)
        shutil.copy(tex, folder / tex.name)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(_compile, [tmp_path / "build" / t.stem / t.name for t in files]))
    failed = {t.name: r.stdout[-1500:] for t, r in zip(files, runs) if r.returncode != 0}
    assert failed == {}
    assert all((tmp_path / "build" / t.stem / f"{t.stem}.pdf").stat().st_size > 1000 for t in files)


def test_a_row_opening_with_a_bracket_is_not_read_as_an_optional_argument():
    # after \\, \toprule or \midrule LaTeX reads "[..." as an optional length ("Illegal unit of measure")
    t = table(["[group]", "value"], [[Cell("[18, 30)"), Cell(0.5, "num")], [Cell("x"), Cell(0.1, "num")]])
    lines = LatexRenderer().tabular(t).splitlines()
    assert lines[2] == r"{}[group] & value \\" and lines[4] == r"{}[18, 30) & 0.500 \\" and lines[5] == r"x & 0.100 \\"


@needs_tex
def test_a_table_whose_rows_open_with_brackets_compiles(tmp_path):
    t = table(["[group]", "value"], [[Cell("[18, 30)"), Cell(0.5, "num")], [Cell("[30, 45)"), Cell(0.1, "num")]])
    tex = tmp_path / "brackets.tex"
    tex.write_text(render_latex_table(t, caption="age bands"), encoding="utf-8")
    run = _compile(tex)
    assert run.returncode == 0, run.stdout[-1500:]
