"""The report's document model: a section holds tables (text cells plus emphasis, notes and
the runs behind each cell) and the unrounded numbers behind them. Writers (render) and the
terminal only read it."""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""
    groups: list[tuple[str, int]] = field(default_factory=list)  # spanning row above header
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column): the best
    underline: set[tuple[int, int]] = field(default_factory=set)  # (row, column): tied with it
    italic: set[tuple[int, int]] = field(default_factory=set)  # (row, column): few seeds
    notes: list[str] = field(default_factory=list)
    # the run ids behind a cell: (row, column), or (row, None) for every cell of the row;
    # the report's provenance files and HTML tooltips are built from them
    sources: dict[tuple[int, int | None], tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Section:
    name: str  # file stem under tables/
    title: str
    tables: list[Table]
    data: pd.DataFrame  # the numbers behind the tables, unrounded, for the CSV
    intro: str = ""


@dataclass
class FigureFile:
    name: str
    title: str
    caption: str
    section: str  # the Section it is shown beside
    png: Path
    pdf: Path
