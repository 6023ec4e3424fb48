"""Writers: the same `Table`s as Markdown, LaTeX (booktabs), CSV and one HTML page.

Cells arrive as Unicode text (\u00b1, \u2020, \u2212); each writer only escapes and emphasises.
"""

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from ltbench.file_modes import atomic_write_bytes, make_dirs

from .formats import plural
from .model import FigureFile, Section, Table

# Figure-only sections, placed among the table sections in reading order.
SECTION_ORDER = ["main", "intervals", "baseline", "tuning", "ranking", "many_medium_few", "per_class",
                 "curves", "calibration", "paper_comparison", "cost", "memory", "provenance",
                 "left_out"]
SECTION_TITLES = {"per_class": "Per-class accuracy", "memory": "Feature-loss memory",
                  "curves": "Training curves"}
PROVENANCE_SUFFIX = ".provenance.csv"  # tables/<section><suffix>: the runs behind each cell
FIGURE_SCALE = 0.75  # CSS pixels per PNG pixel (figures are saved at 150 dpi)


@dataclass
class Meta:
    """What the page header says about where the numbers came from."""
    results_dir: str
    runs: int
    specs: int
    filters: str
    generated: str
    version: str
    left_out: str


# --- Markdown ---------------------------------------------------------------------------

def flat_header(table: Table) -> list[str]:
    """Spanning groups folded into each column name, since Markdown has one header row."""
    if not table.groups:
        return list(table.header)
    names = [name for name, span in table.groups for _ in range(span)]
    return [f"{g} {h}".strip() for g, h in zip(names, table.header)]


def aligns(table: Table) -> list[str]:
    """'l' for text columns, 'r' for numbers: numbers are cells that start like one."""
    def numeric(j):
        cells = [row[j] for row in table.rows if row[j]]
        # "\u2014": an empty shot group; "<" and ">": "< 0.001", "> 100"
        return j > 0 and all(c[0] in "0123456789+-.[\u2212\u2014<>" for c in cells)
    return ["r" if numeric(j) else "l" for j in range(len(table.header))]


def md_text(text: str) -> str:
    """Text as Markdown shows it, with no HTML of its own: names and values come from result
    rows, and a crafted row must not put markup into the report."""
    return html.escape(str(text), quote=False)


def md_cell(text: str) -> str:
    """md_text for a table cell: `|` kept out of the table's structure, one line."""
    return " ".join(md_text(text).replace("|", "\\|").splitlines())


def markdown_table(table: Table) -> str:
    def cell(text, i, j):
        text = md_cell(text)
        text = f"*{text}*" if text and (i, j) in table.italic else text
        # Markdown has no underline of its own; <u> is the inline HTML renderers keep
        text = f"<u>{text}</u>" if text and (i, j) in table.underline else text
        return f"**{text}**" if text and (i, j) in table.bold else text

    lines = [f"### {md_text(table.title)}", ""] if table.title else []
    header = [md_cell(h) for h in flat_header(table)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in aligns(table)) + "|")
    for i, row in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(t, i, j) for j, t in enumerate(row)) + " |")
    if table.notes:
        lines += [""] + [md_text(note) + "  " for note in table.notes]
    return "\n".join(lines) + "\n"


def markdown_section(section: Section, figures: list[FigureFile], figure_dir: str,
                     provenance: bool = False) -> str:
    """`provenance`: the tables' .provenance.csv files were written, so name them."""
    parts = [f"## {md_text(section.title)}\n"]
    if section.intro:
        parts.append(md_text(section.intro) + "\n")
    parts += [markdown_table(t) for t in section.tables]
    if provenance and any(t.sources for t in section.tables):
        parts.append(f"Runs behind each cell: `tables/{section.name}{PROVENANCE_SUFFIX}`.\n")
    parts += [f"![{f.title}]({figure_dir}/{f.png.name})\n\n*{f.caption}* "
              f"([PDF]({figure_dir}/{f.pdf.name}))\n" for f in figures]
    return "\n".join(parts)


# --- LaTeX ------------------------------------------------------------------------------

# < > | are ligature slots in OT1, the default font encoding: "> 100" would print "¿ 100"
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                "|": r"\textbar{}"}
_TEX_UNICODE = {"\u00b1": r"$\pm$", "\u2212": r"$-$", "\u2020": r"$^\dagger$",
                "\u2021": r"$^\ddagger$", "\u0394": r"$\Delta$", "\u2014": "---",
                "\u2013": "--", "\u00d7": r"$\times$", "\u2192": r"$\rightarrow$",
                "\u2191": r"$^{\uparrow}$", "\u2193": r"$^{\downarrow}$", "\u2265": r"$\geq$",
                "\u2264": r"$\leq$", "\u03b1": r"$\alpha$", "\u03c7": r"$\chi$",
                "\u03a3": r"$\Sigma$", "\u00b2": r"$^2$", "\u221a": r"$\surd$", "\u0161": r"\v{s}"}


def tex(text: str) -> str:
    escaped = "".join(_TEX_UNICODE.get(c, _TEX_SPECIAL.get(c, c)) for c in text)
    # A cell opening with "[" right after "\\" would be read as that command's argument.
    return "{[}" + escaped[1:] if escaped.startswith("[") else escaped


def _seed_count(text: str) -> tuple[str, str | None]:
    """Split "71.50 ± 1.29 (n=4)" into the value and "(n=4)", which formats set smaller."""
    found = re.fullmatch(r"(.*) (\(n=\d+\))", text)
    return (found[1], found[2]) if found else (text, None)


def _tex_cell(text: str) -> str:
    value, seeds = _seed_count(text)
    return tex(value) + (r" {\scriptsize " + seeds + "}" if seeds else "")


def _tex_emphasis(cell: str, bold: bool, underline: bool, italic: bool) -> str:
    cell = r"\textit{" + cell + "}" if italic else cell
    cell = r"\underline{" + cell + "}" if underline else cell
    return r"\textbf{" + cell + "}" if bold else cell


# --latex-width: the float, the width a table is scaled down to when wider, and the package
# each needs beyond booktabs and graphicx
LATEX_WIDTHS = {"column": ("table", r"\columnwidth", None),
                "page": ("table*", r"\textwidth", None),
                "landscape": ("sidewaystable", r"\linewidth", "rotating")}


def latex_table(table: Table, label: str, width: str = "column") -> str:
    """A booktabs table in a float of `width` (LATEX_WIDTHS): a caption of the title alone,
    the tabular scaled down where it is wider than the float (never up), the explanations
    as a note below it."""
    environment, line_width, package = LATEX_WIDTHS[width]
    needs = r"\usepackage{booktabs}, \usepackage{graphicx}" + (
        r", \usepackage{" + package + "}" if package else "")
    lines = ["% needs " + needs, r"\begin{" + environment + "}[htbp]", r"\centering", r"\small"]
    if table.title:
        lines.append(r"\caption{" + tex(table.title) + "}")
    lines += [r"\label{tab:" + label + "}",
              # \width is the tabular's natural width: shrink to the line only when wider
              r"\resizebox{\ifdim\width>" + line_width + line_width + r"\else\width\fi}{!}{%",
              r"\begin{tabular}{" + "".join(aligns(table)) + "}", r"\toprule"]
    if table.groups:
        spans, rules, start = [], [], 1
        for name, span in table.groups:
            spans.append(tex(name) if span == 1 else
                         r"\multicolumn{" + str(span) + "}{c}{" + tex(name) + "}")
            if name:
                rules.append(r"\cmidrule(lr){" + f"{start}-{start + span - 1}" + "}")
            start += span
        lines += [" & ".join(spans) + r" \\", " ".join(rules)]
    lines += [" & ".join(tex(h) for h in table.header) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        cells = [_tex_emphasis(_tex_cell(t), t and (i, j) in table.bold,
                               t and (i, j) in table.underline, t and (i, j) in table.italic)
                 for j, t in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        # sloppy: a note names run ids and files, words too long to justify a narrow column
        lines.append(r"\par\smallskip{\footnotesize\sloppy " +
                     r"\\ ".join(tex(note) for note in table.notes) + r"\par}")
    lines.append(r"\end{" + environment + "}")
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 1.7em; }
h2 { margin-top: 40px; padding-bottom: 4px; border-bottom: 2px solid #e3e3e3; }
.meta { color: #555; margin: 2px 0; }
nav { margin: 16px 0; } nav a { margin-right: 14px; }
.wrap { overflow-x: auto; margin: 12px 0 4px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { padding: 4px 9px; text-align: right; white-space: nowrap; }
th.l, td.l { text-align: left; }
td .n { color: #777; font-size: 0.85em; }
thead tr:last-child th { border-bottom: 1.5px solid #333; }
thead tr:first-child th { border-top: 1.5px solid #333; }
tbody tr:last-child td { border-bottom: 1.5px solid #333; }
th.group { text-align: center; border-bottom: 1px solid #999; }
tbody tr:nth-child(even) { background: #f5f7fa; }
td.wrap-text { white-space: normal; text-align: left; min-width: 24em; }
.note { color: #444; font-size: 0.88em; margin: 2px 0; max-width: 980px; }
td[title] { cursor: help; }
td.mixed { background: #fff3cd; text-decoration: underline dotted #b26a00; }
.warning { color: #8a4b00; }
.figures { display: flex; flex-wrap: wrap; gap: 24px; margin-top: 16px; }
figure { margin: 0; max-width: 100%; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; margin-top: 4px; }
"""


def html_table(table: Table, provenance=None) -> str:
    """`provenance` (a provenance.Provenance, or None): each cell with runs gets a tooltip
    naming them, and a cell mixing data or code versions is marked."""
    align = aligns(table)

    def attributes(i, j):
        run_ids = table.sources.get((i, j)) or table.sources.get((i, None))
        if provenance is None or not run_ids or not table.rows[i][j]:
            return [], ""
        mixed = ["mixed"] if provenance.warning(run_ids) else []
        return mixed, f' title="{html.escape(provenance.tooltip(run_ids))}"'

    def cell(text, i, j):
        # The seed count is read less often than the mean: set it smaller and grey.
        value, seeds = _seed_count(text)
        body = html.escape(value) + (f' <span class="n">{seeds}</span>' if seeds else "")
        body = f"<em>{body}</em>" if text and (i, j) in table.italic else body
        body = f"<u>{body}</u>" if text and (i, j) in table.underline else body
        body = f"<strong>{body}</strong>" if text and (i, j) in table.bold else body
        mixed, title = attributes(i, j)
        classes = (["l" if align[j] == "l" else ""] + (["wrap-text"] if len(text) > 60 else [])
                   + mixed)
        names = " ".join(c for c in classes if c)
        return (f'<td class="{names}"{title}>{body}</td>' if names
                else f"<td{title}>{body}</td>")

    out = ['<div class="wrap"><table>']
    if table.title:
        out.append(f"<caption>{html.escape(table.title)}</caption>")
    out.append("<thead>")
    if table.groups:
        out.append("<tr>" + "".join(
            f'<th colspan="{span}" class="{"group" if name else ""}">{html.escape(name)}</th>'
            for name, span in table.groups) + "</tr>")
    out.append("<tr>" + "".join(f'<th class="{"l" if a == "l" else ""}">{html.escape(h)}</th>'
                                for h, a in zip(table.header, align)) + "</tr>")
    out.append("</thead><tbody>")
    for i, row in enumerate(table.rows):
        out.append("<tr>" + "".join(cell(t, i, j) for j, t in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{html.escape(note)}</p>' for note in table.notes]
    return "\n".join(out)


def html_figure(figure: FigureFile, figure_dir: str) -> str:
    png = figure.png.read_bytes()
    # Every figure at the same scale (PNG pixels -> CSS pixels), so text reads the same size
    # in all of them; the IHDR chunk holds the width at bytes 16-20.
    width = round(int.from_bytes(png[16:20], "big") * FIGURE_SCALE)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure style="width: {width}px"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(figure.title)}">'
            f"<figcaption>{html.escape(figure.caption)} "
            f'<a href="{figure_dir}/{html.escape(figure.pdf.name)}">PDF</a></figcaption></figure>')


def html_page(sections: list[tuple[str, str, Section | None, list[FigureFile]]],
              meta: Meta, figure_dir: str, provenance=None) -> str:
    body = ["<h1>ltbench report</h1>",
            f'<p class="meta">{_counts(meta)} from '
            f"<code>{html.escape(meta.results_dir)}</code>{html.escape(meta.filters)}</p>",
            f'<p class="meta">{html.escape(meta.left_out)}</p>',
            f'<p class="meta">Generated {html.escape(meta.generated)} by ltbench '
            f"{html.escape(meta.version)}.</p>",
            "<nav>" + "".join(f'<a href="#{name}">{html.escape(title)}</a>'
                              for name, title, _, _ in sections) + "</nav>"]
    for name, title, section, figures in sections:
        body.append(f'<section id="{name}"><h2>{html.escape(title)}</h2>')
        if section is not None:
            if section.intro:
                body.append(f"<p>{html.escape(section.intro)}</p>")
            body += [html_table(t, provenance) for t in section.tables]
            if provenance is not None and any(t.sources for t in section.tables):
                body.append(f'<p class="note">Hover a cell for the runs behind it; all of '
                            f'them: <a href="tables/{name}{PROVENANCE_SUFFIX}">'
                            f"tables/{name}{PROVENANCE_SUFFIX}</a>.</p>")
        if figures:
            body.append('<div class="figures">' +
                        "".join(html_figure(f, figure_dir) for f in figures) + "</div>")
        body.append("</section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ltbench report</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


# --- the report directory ---------------------------------------------------------------

def write_report(out: Path, sections: list[Section], figures: list[FigureFile],
                 meta: Meta, provenance=None, latex_width: str = "column") -> Path:
    """Write tables/*.{md,tex,csv}, report.md and index.html under `out`; return the page.
    With `provenance` (a provenance.Provenance), each table whose cells name their runs
    gets tables/<name>.provenance.csv, and the HTML a tooltip per cell. `latex_width`: a
    key of LATEX_WIDTHS, for the .tex tables."""
    tables_dir = out / "tables"
    make_dirs(tables_dir)
    for section in sections:
        _write(tables_dir / f"{section.name}.csv", section.data.to_csv(index=False))
        if section.name == "left_out":
            continue
        companion = provenance.companion(section) if provenance is not None else None
        if companion is not None:
            _write(tables_dir / f"{section.name}{PROVENANCE_SUFFIX}", companion.to_csv(index=False))
        _write(tables_dir / f"{section.name}.md",
               "\n".join(markdown_table(t) for t in section.tables) or section.intro + "\n")
        _write(tables_dir / f"{section.name}.tex", "\n".join(
            latex_table(t, f"ltbench-{section.name}" + (f"-{k}" if k else ""), latex_width)
            for k, t in enumerate(section.tables)) or "% " + section.intro + "\n")

    ordered = _ordered(sections, figures)
    figure_dir = figures[0].png.parent.relative_to(out).as_posix() if figures else "figures"
    markdown = ["# ltbench report\n", f"{_counts(meta)} from "
                f"`{meta.results_dir}`{meta.filters}. {meta.left_out}\n",
                f"Generated {meta.generated} by ltbench {meta.version}.\n"]
    for name, title, section, figs in ordered:
        section = section or Section(name, title, [], None)
        markdown.append(markdown_section(section, figs, figure_dir, provenance is not None))
    _write(out / "report.md", "\n".join(markdown))
    page = out / "index.html"
    _write(page, html_page(ordered, meta, figure_dir, provenance))
    return page


def clear_generated(out: Path) -> None:
    """Drop the previous report's files, so a narrower filter leaves no stale figures.

    Only tables/ and figures/ under `out`, and only the file types written there.
    """
    for sub, suffixes in [("tables", {".md", ".tex", ".csv"}), ("figures", {".png", ".pdf"})]:
        folder = out / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and path.suffix in suffixes:
                    path.unlink()


def _counts(meta: Meta) -> str:
    """"5 finished runs (1 spec)"."""
    return f"{plural(meta.runs, 'finished run')} ({plural(meta.specs, 'spec')})"


def _write(path: Path, text: str) -> None:
    """Whole or not at all, with the results store's modes (not the umask's 664 at 002)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _ordered(sections, figures):
    by_name = {s.name: s for s in sections}
    names = [n for n in SECTION_ORDER if n in by_name or any(f.section == n for f in figures)]
    names += [s.name for s in sections if s.name not in names]
    return [(n, by_name[n].title if n in by_name else SECTION_TITLES.get(n, n), by_name.get(n),
             [f for f in figures if f.section == n]) for n in names]
