"""Rendering a results table: a :class:`Grid` of strings, then Markdown, LaTeX or HTML.

:func:`table_grid` puts our numbers in the paper's layout, :func:`comparison_grid` ours,
the paper's and the difference side by side; :func:`to_markdown`, :func:`to_latex` and
:func:`to_html` write a grid out.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from .style import display_model
from .tables import ResultsTable


@dataclass
class Grid:
    """A rendered table: header, body rows of strings, optional header groups and notes."""

    title: str
    header: list[str]
    body: list[list[str]]
    notes: list[str] = field(default_factory=list)
    groups: list[tuple[str, int]] | None = None
    """(label, span) over the header after the first column (LaTeX and HTML only)."""


def number(x: float | None, spec: str = ".2f", *, scale: float = 1.0, suffix: str = "") -> str:
    """``scale * x`` formatted by ``spec``, then ``suffix``; ``—`` when x is missing (None
    or NaN). Every table cell of a single number goes through here."""
    if x is None or math.isnan(x):
        return "—"
    return f"{scale * x:{spec}}{suffix}"


def format_cell(mean: float, se: float, n_seeds: int, note: str = "") -> str:
    """``12.34 ± 0.56 (n=3)``; ``12.34 (n=1)`` for one seed; ``— (no runs)`` when empty."""
    if n_seeds == 0 or math.isnan(mean):
        return f"— ({note or 'no runs'})"
    if n_seeds == 1 or math.isnan(se):
        return f"{mean:.2f} (n={n_seeds})"
    return f"{mean:.2f} ± {se:.2f} (n={n_seeds})"


def table_grid(table: ResultsTable) -> Grid:
    """Our numbers in the paper's layout: one row per arm, one column per k_eval."""
    body = []
    for row in table.rows:
        cells = table.cells[table.cells["row"] == row]
        body.append(
            [row, *(format_cell(c.mean, c.se, c.n_seeds, c.note) for c in cells.itertuples())]
        )
    return Grid(
        table.title,
        [display_model(table.model), *(c.label for c in table.columns)],
        body,
        table.notes,
    )


def comparison_grid(table: ResultsTable, paper: pd.DataFrame) -> Grid:
    """Ours, the paper's and ours − paper (± both s.e. combined) per cell."""
    number = table.paper.number if table.paper else None
    mine = paper[paper["table"] == number]
    body = []
    for row in table.rows:
        line = [row]
        for cell in table.cells[table.cells["row"] == row].itertuples():
            published = mine[(mine["row"] == row) & (mine["column"] == cell.metric)]
            line.append(format_cell(cell.mean, cell.se, cell.n_seeds, cell.note))
            if published.empty:
                line += ["— (not in paper)", "—"]
                continue
            p_mean, p_se = published.iloc[0][["mean", "se"]]
            line.append(f"{p_mean:.2f} ± {p_se:.2f}")
            if cell.n_seeds == 0:
                line.append("—")
                continue
            diff = cell.mean - p_mean
            se = math.sqrt((0.0 if math.isnan(cell.se) else cell.se) ** 2 + p_se**2)
            line.append(f"{diff:+.2f} ± {se:.2f}")
        body.append(line)
    header = [display_model(table.model)]
    for column in table.columns:
        header += [f"{column.label} ours", f"{column.label} paper", f"{column.label} Δ"]
    groups = [(column.label, 3) for column in table.columns]
    notes = [
        *table.notes,
        "Paper: the published mean ± s.e. (3 seeds). Δ = ours − paper ± √(s.e.² + s.e.²).",
    ]
    return Grid(table.title, header, body, notes, groups)


def to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table with its title and notes."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = [f"**{grid.title}**", "", line(grid.header), line(["---"] * len(grid.header))]
    parts += [line(row) for row in grid.body]
    parts += [""] + [f"- {note}" for note in grid.notes]
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "—": "---",
    "–": "--",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "√": r"$\surd$",
    "²": r"$^2$",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    return _LATEX_PATTERN.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def to_latex(grid: Grid) -> str:
    """A booktabs ``table`` environment; notes become a footnote-size paragraph."""
    spec = "l" + "c" * (len(grid.header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize"]
    lines += [rf"\caption{{{latex_escape(grid.title)}}}", rf"\begin{{tabular}}{{{spec}}}"]
    lines.append(r"\toprule")
    header = grid.header
    if grid.groups:
        spans = [rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}" for g, span in grid.groups]
        lines.append(" & ".join(["", *spans]) + r" \\")
        header = [header[0], *(h.rsplit(" ", 1)[-1] for h in header[1:])]
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in grid.body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if grid.notes:
        notes = " ".join(latex_escape(note) for note in grid.notes)
        lines.append(rf"\par\smallskip\parbox{{\linewidth}}{{\tiny {notes}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(grid: Grid) -> str:
    """An HTML ``<table>`` with a caption and the notes below it."""
    esc = html.escape
    parts = [f"<table class='results'><caption>{esc(grid.title)}</caption><thead>"]
    header = grid.header
    if grid.groups:
        spans = "".join(f"<th colspan='{span}'>{esc(g)}</th>" for g, span in grid.groups)
        parts.append(f"<tr><th></th>{spans}</tr>")
        header = [header[0], *(h.rsplit(" ", 1)[-1] for h in header[1:])]
    parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in grid.body:
        cells = "".join(
            f"<td class='{'empty' if c.startswith('—') else 'num'}'>{esc(c)}</td>" for c in row[1:]
        )
        parts.append(f"<tr><th>{esc(row[0])}</th>{cells}</tr>")
    parts.append("</tbody></table>")
    if grid.notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in grid.notes))
        parts.append("</ul>")
    return "\n".join(parts) + "\n"
