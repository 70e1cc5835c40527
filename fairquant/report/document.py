"""The report as data: a document of sections holding prose, tables of typed cells and figures.

Elements hold values, never markup: a cell keeps its number and how to format it, an emphasis flag and a note;
a figure keeps its data frame and what kind of chart to draw. Each output format is one renderer over these
elements (fairquant/report/markdown.py), in the spirit of dvc-render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import pandas as pd

from fairquant.report.numbers import Kind, cell_text

Style = Literal["plain", "strong", "italic", "code"]


@dataclass(frozen=True)
class Span:
    """A run of text in one style."""

    text: str
    style: Style = "plain"


@dataclass(frozen=True)
class Prose:
    """A paragraph: spans of text."""

    spans: tuple[Span, ...]


@dataclass(frozen=True)
class BulletList:
    """Paragraphs shown as a list."""

    items: tuple[Prose, ...]


@dataclass(frozen=True)
class Cell:
    """One table value: a number, a string or None (undefined), how to format it, and optionally its interval
    (formatted like the value), an emphasis flag (a finding the reader should not miss) and a note printed after it."""

    value: float | int | str | None
    kind: Kind = "text"
    interval: tuple[float | None, float | None] | None = None
    emphasis: bool = False
    note: str | None = None

    def words(self) -> str:
        """What the cell says in any format: 'value [low, high] note', numbers formatted by its kind."""
        return cell_text(self.value, self.kind, self.interval, self.note)


@dataclass(frozen=True)
class Table:
    """Column headings and rows of cells."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def row(self, first: str) -> dict[str, Cell]:
        """The first row whose first cell is ``first`` (a variant, a layer), as column heading -> cell."""
        for cells in self.rows:
            if cells[0].value == first:
                return dict(zip(self.columns, cells))
        raise KeyError(f"no row starting with {first!r}")


@dataclass(frozen=True, eq=False)
class Figure:
    """A chart kept as data until a renderer draws it: ``kind`` names the drawing in fairquant/report/figures.py,
    ``frame`` is its data, ``name`` its file stem (also the plot table's when it has one)."""

    name: str
    kind: str
    frame: pd.DataFrame
    synthetic: bool = False
    confidence: float | None = None


@dataclass(frozen=True, eq=False)
class Picture:
    """One image to show as it is (an (H, W, 3) uint8 array), with its caption."""

    image: np.ndarray
    caption: str


@dataclass(frozen=True, eq=False)
class Gallery:
    """Pictures shown side by side under a heading (a group's flipped test images); ``synthetic`` labels them so."""

    title: str
    pictures: tuple[Picture, ...]
    synthetic: bool = False


Block = Union[Prose, BulletList, Table, Figure, Gallery]


@dataclass(frozen=True)
class Section:
    """A titled part of the report: its blocks in reading order, then its subsections."""

    title: str
    blocks: tuple[Block, ...] = ()
    subsections: tuple[Section, ...] = field(default=())


@dataclass(frozen=True)
class Document:
    """A title, the paragraphs before the first section, and the sections."""

    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]

    def tables(self) -> list[Table]:
        """Every table in reading order (tests and later renderers look tables up by heading)."""
        return [b for s in self.walk() for b in s.blocks if isinstance(b, Table)]

    def walk(self) -> list[Section]:
        """Every section and subsection in reading order."""
        out: list[Section] = []

        def visit(section: Section) -> None:
            out.append(section)
            for sub in section.subsections:
                visit(sub)

        for section in self.sections:
            visit(section)
        return out

    def section(self, title_start: str) -> Section:
        """The first section or subsection whose title starts with ``title_start``."""
        for section in self.walk():
            if section.title.startswith(title_start):
                return section
        raise KeyError(f"no section titled {title_start!r}...")


def text(value: str) -> Span:
    return Span(value)


def strong(value: str) -> Span:
    return Span(value, "strong")


def italic(value: str) -> Span:
    return Span(value, "italic")


def code(value: str) -> Span:
    return Span(value, "code")


def prose(*parts: str | Span) -> Prose:
    """A paragraph from plain strings and styled spans, in order."""
    return Prose(tuple(Span(p) if isinstance(p, str) else p for p in parts))


def table(columns: list[str] | tuple[str, ...], rows: list[list[Cell]]) -> Table:
    """A table from lists; every row must have one cell per column."""
    frozen = tuple(tuple(row) for row in rows)
    for row in frozen:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns ({columns[0]}: {row[0].value})")
    return Table(tuple(columns), frozen)

