"""The HTML renderer: the report as one self-contained page (plots/report.html) that opens anywhere.

The page needs nothing beside it and asks the network for nothing: figures and pictures are PNGs inlined as data
URIs, the style is inline, there is no script, and its own Content-Security-Policy forbids any other source. It
reads on a phone: a viewport meta, tables in horizontally scrolling wrappers, every section collapsible. Every text
of the document is escaped here (html.escape), the only code that knows HTML.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from fairquant.errors import FairquantError
from fairquant.report.document import BulletList, Cell, Document, Figure, Gallery, Prose, Section, Span, Table
from fairquant.report.figures import png_bytes

# Images from data: URIs only, inline style only; nothing else (no script, no font, no fetch, no frame).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
TAGS = {"plain": "{}", "strong": "<strong>{}</strong>", "italic": "<em>{}</em>", "code": "<code>{}</code>"}
STYLE = """
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 62rem;
       padding: 0.75rem; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.5rem; }
summary { cursor: pointer; }
summary > h2, summary > h3, summary > h4, summary > h5, summary > h6 { display: inline; }
details { margin: 0.6rem 0; }
details details { margin-left: 0.6rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.45rem; white-space: nowrap; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.75rem 0; }
figure > img { max-width: 100%; height: auto; }
figcaption { font-size: 0.8rem; color: #555; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.5rem; }
.gallery figure { width: 7.5rem; margin: 0; }
.gallery img { width: 7.5rem; height: auto; image-rendering: pixelated; }
.synthetic { color: #a00; font-weight: bold; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


PICTURE_SIDE = 240  # px: a gallery shows a picture 7.5rem (120 CSS px) wide; twice that for high-density screens


def picture_png(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes, its longer side at most :data:`PICTURE_SIDE` (a prepared store of
    large real images would otherwise make the page megabytes per picture; smaller images are stored as they are)."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FairquantError(f"a picture should be an (H, W, 3) uint8 image, found {image.dtype} {image.shape}")
    picture = Image.fromarray(image, "RGB")
    if max(picture.size) > PICTURE_SIDE:
        picture.thumbnail((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class HtmlRenderer:
    """Renders a :class:`Document` as one self-contained HTML page."""

    def __init__(self) -> None:
        self.blocks = {Prose: self.prose, BulletList: self.bullets, Table: self.table, Figure: self.figure,
                       Gallery: self.gallery}

    def document(self, document: Document) -> str:
        title = html.escape(document.title)
        body = [f"<h1>{title}</h1>", *map(self.block, document.intro)]
        body += [self.section(section, depth=2) for section in document.sections]
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", *body, "</body>", "</html>",
            ""])

    def section(self, section: Section, depth: int) -> str:
        level = min(depth, 6)
        parts = [f"<details open><summary><h{level}>{html.escape(section.title)}</h{level}></summary>",
                 *map(self.block, section.blocks), *(self.section(sub, depth + 1) for sub in section.subsections),
                 "</details>"]
        return "\n".join(parts)

    def block(self, block) -> str:
        render = self.blocks.get(type(block))
        if render is None:
            raise FairquantError(f"the HTML renderer has no rule for {type(block).__name__}; add one to "
                                 "HtmlRenderer.blocks in fairquant/report/html.py")
        return render(block)

    def span(self, span: Span) -> str:
        return TAGS[span.style].format(html.escape(span.text))

    def prose(self, paragraph: Prose) -> str:
        return "<p>" + "".join(map(self.span, paragraph.spans)) + "</p>"

    def bullets(self, items: BulletList) -> str:
        return "<ul>\n" + "\n".join(f"<li>{''.join(map(self.span, item.spans))}</li>" for item in items.items) + \
            "\n</ul>"

    def cell(self, cell: Cell) -> str:
        words = html.escape(cell.words())
        kind = "" if cell.kind == "text" else ' class="num"'
        return f"<td{kind}>{TAGS['strong'].format(words) if cell.emphasis else words}</td>"

    def table(self, table: Table) -> str:
        head = "".join(f'<th scope="col">{html.escape(column)}</th>' for column in table.columns)
        rows = "\n".join("<tr>" + "".join(map(self.cell, row)) + "</tr>" for row in table.rows)
        return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>'

    def figure(self, figure: Figure) -> str:
        name = html.escape(figure.name)
        note = ' <span class="synthetic">SYNTHETIC data</span>' if figure.synthetic else ""
        return (f'<figure><img src="{png_data_uri(png_bytes(figure))}" alt="{name}">'
                f"<figcaption>{name}{note}</figcaption></figure>")

    def gallery(self, gallery: Gallery) -> str:
        note = ' <span class="synthetic">SYNTHETIC images</span>' if gallery.synthetic else ""
        pictures = "\n".join(f'<figure><img src="{png_data_uri(picture_png(p.image))}" alt="{html.escape(p.caption)}">'
                             f"<figcaption>{html.escape(p.caption)}</figcaption></figure>" for p in gallery.pictures)
        return f'<p>{html.escape(gallery.title)}{note}</p>\n<div class="gallery">\n{pictures}\n</div>'


def render_html(document: Document) -> str:
    """``document`` as one self-contained HTML page."""
    return HtmlRenderer().document(document)
