"""The Markdown renderer: the only code that knows Markdown syntax.

One method per document element; another format (HTML, LaTeX) is another renderer over the same elements.
"""

from __future__ import annotations

from pathlib import Path

from fairquant.errors import FairquantError
from fairquant.report.document import BulletList, Cell, Document, Figure, Prose, Section, Span, Table
from fairquant.report.figures import save_png

MARKS = {"plain": "{}", "strong": "**{}**", "italic": "*{}*", "code": "`{}`"}


class MarkdownRenderer:
    """Renders a :class:`Document` as Markdown. With ``assets``, each figure is drawn there as <name>.png and
    linked relatively (the report sits next to its figures); without, figures are only linked."""

    def __init__(self, *, assets: Path | None = None) -> None:
        self.assets = assets
        self.blocks = {Prose: self.prose, BulletList: self.bullets, Table: self.table, Figure: self.figure}

    def document(self, document: Document) -> str:
        parts = [f"# {document.title}", *map(self.block, document.intro)]
        parts += [text for section in document.sections for text in self.section(section, depth=2)]
        return "\n\n".join(parts) + "\n"

    def section(self, section: Section, depth: int) -> list[str]:
        return [f"{'#' * depth} {section.title}", *map(self.block, section.blocks),
                *(text for sub in section.subsections for text in self.section(sub, depth + 1))]

    def block(self, block) -> str:
        render = self.blocks.get(type(block))
        if render is None:
            raise FairquantError(f"the Markdown renderer has no rule for {type(block).__name__}; add one to "
                                 "MarkdownRenderer.blocks in fairquant/report/markdown.py")
        return render(block)

    def span(self, span: Span) -> str:
        return MARKS[span.style].format(span.text)

    def prose(self, paragraph: Prose) -> str:
        return "".join(map(self.span, paragraph.spans))

    def bullets(self, items: BulletList) -> str:
        return "\n".join(f"- {self.prose(item)}" for item in items.items)

    def cell(self, cell: Cell) -> str:
        words = cell.words().replace("|", "\\|")
        return MARKS["strong"].format(words) if cell.emphasis else words

    def table(self, table: Table) -> str:
        lines = [self._row(table.columns), "|" + "---|" * len(table.columns)]
        lines += [self._row([self.cell(c) for c in row]) for row in table.rows]
        return "\n".join(lines)

    def figure(self, figure: Figure) -> str:
        if self.assets is not None:
            save_png(figure, self.assets)
        return f"![{figure.name}]({figure.name}.png)"

    @staticmethod
    def _row(cells) -> str:
        return "| " + " | ".join(cells) + " |"


def render_markdown(document: Document, *, assets: Path | None = None) -> str:
    """``document`` as Markdown; figures drawn into ``assets`` when given."""
    return MarkdownRenderer(assets=assets).document(document)
