"""The report's files: each notebook's tables and figures (:class:`Report`) and the page
that shows them all with the run inventory (:func:`write_index`)."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .errors import NoDataError
from .render import Grid, to_html, to_latex, to_markdown
from .tables import ResultsTable

_TEX_SYMBOLS = {r"\theta": "θ", r"\pm": "±", r"\mu": "μ", r"\sim": "~", r"\,": " "}


def _plain_text(text: str) -> str:
    """Matplotlib mathtext (``$\\mathrm{max}_g@k$``) as plain text for HTML captions."""
    text = re.sub(r"\\(?:mathrm|text)\{([^}]*)\}", r"\1", text)
    text = re.sub(r"\\binom\{([^}]*)\}\{([^}]*)\}", r"C(\1, \2)", text)
    for tex, plain in _TEX_SYMBOLS.items():
        text = text.replace(tex, plain)
    return text.replace("$", "").replace("^2", "²")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class Report:
    """Writes one notebook's tables and figures under ``out`` and lists them in
    ``out/manifest/<section>.json`` for :func:`write_index`."""

    def __init__(self, out: str | Path, section: str):
        self.out = Path(out)
        self.section = section
        self.entries: list[dict[str, Any]] = []
        for sub in ("tables", "figures", "manifest"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

    def table(
        self,
        key: str,
        grid: Grid,
        *,
        tidy: pd.DataFrame | None = None,
        used_runs: dict[str, str] | None = None,
        skipped_runs: dict[str, str] | None = None,
        lead: bool = False,
    ) -> str:
        """Markdown, LaTeX, HTML (and the tidy CSV) of a table; returns the Markdown.

        ``used_runs`` (run -> table row) and ``skipped_runs`` (run -> why not) feed the
        inventory's "which runs fed which cell". ``lead``: a verdict table, shown first.
        """
        stem = self.out / "tables" / _slug(key)
        markdown = to_markdown(grid)
        stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
        stem.with_suffix(".tex").write_text(to_latex(grid), encoding="utf-8")
        stem.with_suffix(".html").write_text(to_html(grid), encoding="utf-8")
        files = [f"tables/{stem.name}{s}" for s in (".md", ".tex", ".html")]
        if tidy is not None:
            flat = tidy.map(lambda v: ";".join(map(str, v)) if isinstance(v, tuple) else v)
            flat.to_csv(stem.with_suffix(".csv"), index=False)
            files.append(f"tables/{stem.name}.csv")
        self.entries.append(
            {
                "kind": "table",
                "key": key,
                "title": grid.title,
                "files": files,
                "used_runs": used_runs or {},
                "skipped_runs": skipped_runs or {},
                "lead": lead,
            }
        )
        self.write()
        return markdown

    def results(self, table: ResultsTable, grid: Grid) -> str:
        """:meth:`table` for a :func:`results_table` rendered as ``grid``; rows without
        runs are also listed under "no data". A table with no runs at all (the paper's numbers
        only) keeps its files but is shown on the index only in that one-line list."""
        seeds = table.cells.groupby("row", sort=False)["n_seeds"].max()
        empty = list(seeds.index[seeds == 0])
        markdown = self.table(
            table.key,
            grid,
            tidy=table.cells,
            used_runs=table.used_runs,
            skipped_runs=table.skipped_runs,
        )
        if len(empty) == len(seeds):
            self.entries[-1]["without_runs"] = True
            self.missing(table.key, table.title, "no runs at all")
        elif empty:
            self.missing(table.key, table.title, "no runs for " + ", ".join(empty))
        return markdown

    def figure(
        self, key: str, fig: Figure, title: str | None = None, *, lead: bool = False
    ) -> Path:
        """PNG (150 dpi) and PDF of a figure; returns the PNG's path.

        The index shows ``title`` (default: the figure's first suptitle line) and the rest
        of the suptitle as the caption; ``lead``: a figure of the verdicts, shown first.
        """
        stem = self.out / "figures" / _slug(key)
        fig.savefig(stem.with_suffix(".png"), dpi=150)
        fig.savefig(stem.with_suffix(".pdf"))
        heading = fig.get_suptitle() or "; ".join(
            ax.get_title() for ax in fig.axes if ax.get_title()
        )
        lines = _plain_text(heading).splitlines() or [key]
        self.entries.append(
            {
                "kind": "figure",
                "key": key,
                "title": title or lines[0],
                "caption": " ".join(lines[1:] if title is None else lines),
                "files": [f"figures/{stem.name}.png", f"figures/{stem.name}.pdf"],
                "lead": lead,
            }
        )
        self.write()
        return stem.with_suffix(".png")

    def figure_or_missing(
        self, key: str, title: str, make: Callable[[], Figure], *, lead: bool = False
    ) -> Path | None:
        """``make()``'s figure saved as :meth:`figure`, or, on :class:`NoDataError`, a
        :meth:`missing` entry; returns the PNG's path or None."""
        try:
            fig = make()
        except NoDataError as err:
            self.missing(key, title, str(err))
            return None
        return self.figure(key, fig, title, lead=lead)

    def missing(self, key: str, title: str, reason: str) -> None:
        """A table or figure that could not be made, and why."""
        self.entries.append({"kind": "missing", "key": key, "title": title, "reason": reason})
        self.write()

    def write(self) -> None:
        path = self.out / "manifest" / f"{self.section}.json"
        path.write_text(json.dumps(self.entries, indent=1), encoding="utf-8")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child{text-align:left} td.empty{color:#999} caption{font-weight:bold;text-align:left}
ul.notes{font-size:12px;color:#555} img{max-width:100%;border:1px solid #eee}
.status-crashed{color:#b00} .status-running{color:#b60} .status-finished{color:#070}
nav a{margin-right:1em}
"""


def _inventory_html(inventory: pd.DataFrame, usage: dict[str, list[str]]) -> str:
    if inventory.empty:
        return "<p>No run folders (with events.jsonl) were found.</p>"
    esc = html.escape
    header = ["run", "model", "task", "n", "arm", "seed", "status", "steps", "last eval", "fed"]
    rows = []
    for r in inventory.itertuples():
        fed = "; ".join(usage.get(r.run, [])) or "(no table cell)"
        cells = [
            r.run,
            r.model,
            r.task,
            r.n,
            r.arm,
            r.seed,
            f"{r.status} {r.detail}".strip(),
            r.steps,
            r.last_eval_step,
            fed,
        ]
        texts = [
            "—" if c is None or (isinstance(c, float) and math.isnan(c)) else str(c) for c in cells
        ]
        texts = [t[:-2] if t.endswith(".0") else t for t in texts]
        tds = "".join(f"<td>{esc(t)}</td>" for t in texts[1:])
        name = f"<th title='{esc(r.run_dir)}'>{esc(texts[0])}</th>"
        rows.append(f"<tr class='status-{esc(r.status)}'>{name}{tds}</tr>")
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_index(
    out: str | Path,
    inventory: pd.DataFrame,
    *,
    sections: Sequence[str],
    problems: Sequence[str] = (),
    warnings_seen: Sequence[str] = (),
) -> Path:
    """``out/index.html``, answers first: the verdict tables and their figures (entries made
    with ``lead``), the other figures, the tables with runs, one line of what has no data,
    the warnings and failures met on the way, and last the run inventory."""
    out = Path(out)
    esc = html.escape
    entries = []
    for section in sections:
        path = out / "manifest" / f"{section}.json"
        if path.is_file():
            entries += [dict(e, section=section) for e in json.loads(path.read_text())]
    usage: dict[str, list[str]] = {}
    for entry in entries:
        for run, row in entry.get("used_runs", {}).items():
            usage.setdefault(run, []).append(f"{entry['key']}: {row}")
        for run, why in entry.get("skipped_runs", {}).items():
            usage.setdefault(run, []).append(f"not in {entry['key']}: {why}")

    def table_html(entry: dict[str, Any]) -> str:
        html_file = next(f for f in entry["files"] if f.endswith(".html"))
        links = " ".join(
            f"<a href='{esc(f)}'>{esc(Path(f).suffix[1:])}</a>" for f in entry["files"]
        )
        text = (out / html_file).read_text(encoding="utf-8")
        return f"<div class='table' id='{esc(entry['key'])}'>{text}<p>files: {links}</p></div>"

    def figure_html(entry: dict[str, Any]) -> str:
        png, pdf = entry["files"]
        return (
            f"<figure id='{esc(entry['key'])}'><img src='{esc(png)}' alt='{esc(entry['title'])}'>"
            f"<figcaption><b>{esc(entry['title'])}</b> {esc(entry.get('caption', ''))} "
            f"(<a href='{esc(pdf)}'>pdf</a>)</figcaption></figure>"
        )

    tables = [e for e in entries if e["kind"] == "table"]
    without_runs = {e["key"]: e["files"][0] for e in tables if e.get("without_runs")}

    def missing_html(entry: dict[str, Any]) -> str:
        text = f"<b>{esc(entry['title'])}</b>: {esc(entry['reason'])}"
        if entry["key"] in without_runs:
            text += f" (<a href='{esc(without_runs[entry['key']])}'>table</a>)"
        return text

    figures = [e for e in entries if e["kind"] == "figure"]
    missing = [e for e in entries if e["kind"] == "missing"]
    body = ["<h1>PKPO: tables and figures from run logs</h1>"]
    body.append(
        "<nav><a href='#claims'>Claims</a><a href='#figures'>Figures</a>"
        "<a href='#tables'>Tables</a><a href='#missing'>No data</a>"
        "<a href='#warnings'>Warnings</a><a href='#inventory'>Runs</a></nav>"
    )
    # answers first: the verdict tables and their figures, then the rest
    body.append("<h2 id='claims'>The paper's claims: verdicts</h2>")
    body += [table_html(e) for e in tables if e.get("lead")]
    body += [figure_html(e) for e in figures if e.get("lead")]
    body.append("<h2 id='figures'>Figures</h2>")
    body += [figure_html(e) for e in figures if not e.get("lead")]
    body.append("<h2 id='tables'>Tables with runs</h2>")
    body += [table_html(e) for e in tables if not e.get("lead") and not e.get("without_runs")]
    body.append(f"<h2 id='missing'>No data ({len(missing)})</h2>")
    # one line; a table without runs is linked to its files (the paper's numbers)
    body.append("<p>" + "; ".join(missing_html(e) for e in missing) + "</p>")
    body.append(
        f"<h2 id='warnings'>Problems and warnings ({len(problems) + len(warnings_seen)})</h2><ul>"
    )
    body += [f"<li class='status-crashed'>{esc(p)}</li>" for p in problems]
    body += [f"<li>{esc(w)}</li>" for w in warnings_seen]
    body.append("</ul>")
    counts = inventory["status"].value_counts().to_dict() if not inventory.empty else {}
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"
    body.append(f"<h2 id='inventory'>Run inventory ({len(inventory)} runs: {summary})</h2>")
    body.append(
        "<p>steps: last training step logged; last eval: step of the last held-out eval; "
        "fed: the table cells (table key: row) the run contributes to. Hover a run name for "
        "its folder.</p>"
    )
    body.append(_inventory_html(inventory, usage))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>PKPO report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
