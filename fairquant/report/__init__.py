"""The report: one document model built once from the metrics, and one renderer per format.

- ``document``: the elements (sections, prose, tables of typed cells, figures kept as data);
- ``numbers``: how every number prints; ``figures``: how every chart is drawn; ``tables``: the plot tables;
- ``classification``, ``remedies``, ``verification``: the section builders;
- ``markdown``: the Markdown renderer; ``latex``: the LaTeX renderer (booktabs tables, each a document that
  compiles on its own); ``html``: the HTML renderer (plots/report.html, one self-contained page); ``exemplars``: the
  flipped test images that page adds; ``build``: the document assembled and written.
"""

from fairquant.report.build import build_document, plot_tables, summary_metrics, write_report
from fairquant.report.document import Cell, Document, Figure, Prose, Section, Table
from fairquant.report.html import HtmlRenderer, render_html
from fairquant.report.latex import LatexRenderer, escape_latex, latex_tables, render_latex_table
from fairquant.report.markdown import MarkdownRenderer, render_markdown

__all__ = ["Cell", "Document", "Figure", "HtmlRenderer", "LatexRenderer", "MarkdownRenderer", "Prose", "Section",
           "Table", "build_document", "escape_latex", "latex_tables", "plot_tables", "render_html",
           "render_latex_table", "render_markdown", "summary_metrics", "write_report"]
