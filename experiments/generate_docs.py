"""Regenerate the documentation's generated tables and figures from the committed logs.

    python -m experiments.generate_docs

Writes ``docs/generated/``: each confirmatory study's claims table and its figure, the
pilot's exploratory claims table, and the stall search's table; and refreshes the block of
the README between ``<!-- generated:headline -->`` and ``<!-- /generated -->``.
``tests/test_docs.py`` fails when a committed file differs from its regeneration.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from pkpo import analysis as A  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
PILOT = RESULTS / "tiny_arith_noisy"
STALL = RESULTS / "stall_search" / "search.md"
HEADLINE = re.compile(r"(<!-- generated:headline -->\n).*?(<!-- /generated -->)", re.S)


def tables() -> dict[str, str]:
    """File name -> Markdown of every generated table."""
    out = {}
    for protocol in A.find_protocols([RESULTS]):
        df = A.load_runs([protocol.folder])
        table = A.confirmatory_table(df, protocol)
        out[f"{table.key}.md"] = A.to_markdown(A.confirmatory_grid(table))
        out[f"{table.key}_headline.md"] = A.to_markdown(A.headline_grid(table))
    pilot = A.load_runs([PILOT])
    for model, task, n in A.settings(pilot):
        claims = A.claims_table(pilot, model, task, n)
        out[f"pilot_{claims.key}.md"] = A.to_markdown(A.claims_grid(claims))
    if STALL.is_file():
        out["stall_search.md"] = STALL.read_text(encoding="utf-8")
    return out


def readme_with(headline: str, readme: str) -> str:
    return HEADLINE.sub(lambda m: m.group(1) + headline + m.group(2), readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "generated")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in tables().items():
        (args.out / name).write_text(text, encoding="utf-8")
    for protocol in A.find_protocols([RESULTS]):
        runs = A.load_runs([protocol.folder])
        title = f"Confirmatory study {protocol.name}: held-out progress per arm"
        fig = A.fig_held_out_progress(runs, list(protocol.labels.values()), title)
        fig.savefig(args.out / f"confirmatory_{protocol.name}.png", dpi=110)
        headline = (args.out / f"confirmatory_{protocol.name}_headline.md").read_text()
        readme = REPO / "README.md"
        readme.write_text(readme_with(headline, readme.read_text(encoding="utf-8")))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
