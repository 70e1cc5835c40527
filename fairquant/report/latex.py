"""The LaTeX renderer: the only code that knows LaTeX syntax. Tables become booktabs ``.tex`` files that compile
on their own (``pdflatex`` or ``lualatex``, packages of a basic TeX Live: booktabs, graphicx, geometry, caption).

- :func:`escape_latex`: any text made safe for LaTeX's text mode (the ten special characters, a minus sign
  before a number, the symbols the report prints: ±, −, ≤, Δ, ...; accented letters as accent commands);
- :class:`LatexRenderer`: one method per element (span, prose, cell, table), as the Markdown renderer;
- :func:`render_latex_table`: one table as a complete document;
- :func:`latex_tables`: the files the report stage writes to ``plots/tables/<name>.tex``: "Fairness of Model
  Quantization"'s Tables 1-3 on our data (:data:`PAPER_TABLES`), then every table of the report, one file each.

A cell prints the words every format prints (fairquant/report/numbers.py: "0.120 [0.050, 0.190]", "undefined"),
in bold where the cell is emphasised. A wide or tall table is scaled down to the page (``\\fittable``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from fairquant.errors import FairquantError
from fairquant.report.document import Cell, Document, Prose, Section, Span, Table

SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
           "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
SYMBOLS = {"±": r"$\pm$", "−": "$-$", "≤": r"$\leq$", "≥": r"$\geq$", "≠": r"$\neq$", "≈": r"$\approx$",
           "×": r"$\times$", "·": r"$\cdot$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "∞": r"$\infty$",
           "Δ": r"$\Delta$", "Φ": r"$\Phi$", "Σ": r"$\Sigma$", "α": r"$\alpha$", "β": r"$\beta$",
           "ε": r"$\varepsilon$", "η": r"$\eta$", "λ": r"$\lambda$", "μ": r"$\mu$", "µ": r"$\mu$", "σ": r"$\sigma$",
           "–": "--", "—": "---", "…": r"\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''", "°": r"$^{\circ}$",
           "²": r"$^{2}$", "ß": r"\ss{}", "ø": r"\o{}", "Ø": r"\O{}", "æ": r"\ae{}", "Æ": r"\AE{}", "å": r"\aa{}",
           "Å": r"\AA{}", "\u00a0": "~"}
ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"', "\u0327": "c", "\u030c": "v",
           "\u0304": "=", "\u0306": "u", "\u030a": "r"}  # combining mark -> LaTeX accent command
_TOKEN = re.compile(r"(?P<minus>(?<![\w.)\]])-(?=\d|inf\b))|(?P<ligature>-(?=-))|(?P<char>.)", re.S)

PREAMBLE = r"""\documentclass{article}
\usepackage[a4paper,landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{caption}
\pagestyle{empty}
% \fittable{<tabular>}: the table at its own size, scaled down only where it is wider or taller than the page
\newsavebox{\fqtable}
\newcommand{\fittable}[1]{\sbox{\fqtable}{#1}%
  \ifdim\wd\fqtable>\linewidth\sbox{\fqtable}{\resizebox{\linewidth}{!}{\usebox{\fqtable}}}\fi
  \ifdim\dimexpr\ht\fqtable+\dp\fqtable\relax>0.85\textheight
    \sbox{\fqtable}{\resizebox*{!}{0.85\textheight}{\usebox{\fqtable}}}\fi
  \usebox{\fqtable}}
"""
STYLES = {"plain": "{}", "strong": r"\textbf{{{}}}", "italic": r"\textit{{{}}}", "code": r"\texttt{{{}}}"}


def _character(char: str) -> str:
    """One character in LaTeX text mode: special, a known symbol, ASCII, an accented letter, else its code point."""
    if char in SPECIAL:
        return SPECIAL[char]
    if char in SYMBOLS:
        return SYMBOLS[char]
    if char == "\n":
        return " "
    if char.isascii():
        return char
    base, *marks = unicodedata.normalize("NFD", char)
    if base.isascii() and marks and all(m in ACCENTS for m in marks):
        out = {"i": r"\i{}", "j": r"\j{}"}.get(base, base)  # dotless i / j under an accent, as LaTeX wants
        for mark in marks:
            out = f"\\{ACCENTS[mark]}{{{out}}}"
        return out
    return rf"\texttt{{[U+{ord(char):04X}]}}"  # a script the basic fonts lack: named, never a failed compile


def escape_latex(text: str) -> str:
    """``text`` safe in LaTeX's text mode, reading as it does in the Markdown report."""
    parts = []
    for match in _TOKEN.finditer(text):
        if match.group("minus"):
            parts.append("$-$")  # a negative number: a minus sign, not a hyphen
        elif match.group("ligature"):
            parts.append("-{}")  # "--" stays two hyphens, not an en dash
        else:
            parts.append(_character(match.group("char")))
    return "".join(parts)


class LatexRenderer:
    """Renders the document's elements as LaTeX: spans, prose, cells and booktabs tables."""

    def span(self, span: Span) -> str:
        return STYLES[span.style].format(escape_latex(span.text))

    def prose(self, paragraph: Prose) -> str:
        return "".join(map(self.span, paragraph.spans))

    def cell(self, cell: Cell) -> str:
        words = escape_latex(cell.words())
        return STYLES["strong"].format(words) if cell.emphasis else words

    def tabular(self, table: Table) -> str:
        """The booktabs tabular: text columns left-aligned, number columns right-aligned."""
        lines = [rf"\begin{{tabular}}{{{''.join(_alignment(table))}}}", r"\toprule",
                 _row(escape_latex(c) for c in table.columns), r"\midrule"]
        lines += [_row(map(self.cell, row)) for row in table.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)

    def table(self, table: Table, *, caption: str, notes: tuple[Prose, ...] = (), number: int | None = None) -> str:
        """A ``table`` float: the caption (numbered ``number`` where given, else unnumbered), the tabular fitted to
        the page, and the notes in small type below."""
        heading = (rf"\setcounter{{table}}{{{number - 1}}}\caption{{{escape_latex(caption)}}}" if number is not None
                   else rf"\caption*{{{escape_latex(caption)}}}")
        lines = [r"\begin{table}[p]", r"\centering", heading, rf"\fittable{{{self.tabular(table)}}}"]
        if notes:
            lines.append(r"\par\medskip{\footnotesize " + r"\par ".join(map(self.prose, notes)) + "}")
        lines.append(r"\end{table}")
        return "\n".join(lines)

    @staticmethod
    def document(body: str) -> str:
        return f"{PREAMBLE}\\begin{{document}}\n{body}\n\\end{{document}}\n"


def _row(cells) -> str:
    """One tabular row. A row that opens with '[' gets '{}' first: after ``\\\\``, ``\\toprule`` or ``\\midrule``
    LaTeX would read the bracket as their optional argument (a length) and fail to compile."""
    line = " & ".join(cells) + r" \\"
    return "{}" + line if line.startswith("[") else line


def _alignment(table: Table) -> list[str]:
    """'l' for the first column and any column holding text cells, 'r' for number columns."""
    return ["l" if k == 0 or any(row[k].kind == "text" for row in table.rows) else "r"
            for k in range(len(table.columns))]


def render_latex_table(table: Table, *, caption: str, notes: tuple[Prose, ...] = (), number: int | None = None) -> str:
    """``table`` as a complete LaTeX document that compiles on its own."""
    renderer = LatexRenderer()
    return renderer.document(renderer.table(table, caption=caption, notes=notes, number=number))


# --------------------------------------------------------------------------------------------------------------
# The files the report writes


@dataclass(frozen=True)
class PaperTable:
    """A table of a reference work, reproduced from the report table of the section whose title starts with
    ``section``: its ``columns`` (all where None) under the work's table ``number`` and ``caption``."""

    name: str
    section: str
    number: int
    caption: str
    columns: tuple[str, ...] | None = None


# "Fairness of Model Quantization" (CS 299 poster), Tables 1-3: one row per model (fine-tuned, quantized, FairALM
# and calibrated equalized odds before and after quantization); ours add every other variant and the intervals.
# Then the sweep's table: its first curve.
PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable("table1_accuracy_eo_fpr", "Table 1:", 1,
               "Overall accuracy, EO (TPR gap) and FPR difference of every model, with intervals "
               "(Fairness of Model Quantization, Table 1)", ("variant", "accuracy (%)", "EO (TPR gap)", "FPR gap")),
    PaperTable("table2_accuracy_per_group", "Table 2:", 2,
               "Accuracy (%) per group of every model (Fairness of Model Quantization, Table 2)"),
    PaperTable("table3_tpr_fpr_per_group", "Table 3:", 3,
               "TPR and FPR per group of every model (Fairness of Model Quantization, Table 3)"),
    PaperTable("sweep_curve", "Curve:", 4,
               "The sweep's first curve: each group's accuracy, the TPR gap, its change vs fp32 and the worst group's "
               "accuracy change at each point, with intervals (the bit-width sweep of Compressed Models Decompress "
               "Race Biases and Beyond Naive Quantization)"),
)


def select_columns(table: Table, columns: tuple[str, ...]) -> Table:
    """The table reduced to ``columns``, in that order."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise FairquantError(f"the report table has no columns {missing} (it has {list(table.columns)}); update "
                             "PAPER_TABLES in fairquant/report/latex.py to the report's column headings")
    keep = [table.columns.index(c) for c in columns]
    return Table(columns, tuple(tuple(row[k] for k in keep) for row in table.rows))


def _section_tables(section: Section) -> list[Table]:
    return [b for b in section.blocks if isinstance(b, Table)]


def _notes(section: Section) -> tuple[Prose, ...]:
    return tuple(b for b in section.blocks if isinstance(b, Prose))


def paper_tables(document: Document) -> dict[str, str]:
    """Each entry of :data:`PAPER_TABLES` whose section the document holds, as a complete ``.tex`` document."""
    out = {}
    for paper in PAPER_TABLES:
        section = next((s for s in document.walk() if s.title.startswith(paper.section)), None)
        if section is None or not _section_tables(section):
            continue
        table = _section_tables(section)[0]
        notes = _notes(section)
        if paper.columns is not None:  # the section's notes speak of the columns left out
            table, notes = select_columns(table, paper.columns), ()
        out[paper.name] = render_latex_table(table, caption=paper.caption, notes=notes, number=paper.number)
    return out


def slug(title: str, limit: int = 48) -> str:
    """A file-name stem from a section title: lower-case ASCII words joined by '_', at most ``limit`` characters."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_title.lower())
    return "_".join(words)[:limit].rstrip("_") or "table"


def report_tables(document: Document) -> dict[str, str]:
    """Every table of the report, in reading order, as ``report_<NN>_<section>`` (unnumbered, the section's
    title as caption, its paragraphs as notes)."""
    out, index = {}, 0
    for section in document.walk():
        for table in _section_tables(section):
            index += 1
            out[f"report_{index:02d}_{slug(section.title)}"] = render_latex_table(
                table, caption=section.title, notes=_notes(section))
    return out


def latex_tables(document: Document) -> dict[str, str]:
    """The report stage's ``plots/tables/<name>.tex`` files: name -> a complete LaTeX document. The paper tables
    first, then every report table; a new table is one more entry in :data:`PAPER_TABLES` or one more report
    section."""
    return {**paper_tables(document), **report_tables(document)}
