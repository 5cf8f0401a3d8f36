"""Regenerate the documentation's generated tables and figures from the committed logs.

    python -m experiments.generate_docs

Writes ``docs/generated/``: each confirmatory study's claims table and its figure, the
pilot's exploratory claims table, the SmolLM2 reproduction's held-out and claims tables, the
stall search's table, verdict and Figure 8 analogues, the regime pilot's progress; and
refreshes the README's blocks between ``<!-- generated:<key> -->`` and
``<!-- /generated -->``: per study ``headline_<name>`` (its pre-registered primary
comparisons) and ``claims_<name>`` / ``claims_<name>_rereading`` (its claims as stated), and
per stall search ``claim7_<name>``.
``tests/test_docs.py`` fails when a committed file differs from its regeneration.
"""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

from pkpo import analysis as A  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
PILOT = RESULTS / "tiny_arith_noisy"
REPRO = RESULTS / "repro_arith"
BLOCK = r"(<!-- generated:{} -->\n).*?(<!-- /generated -->)"


@functools.cache
def logs(folder: Path) -> tuple:
    """The runs of one results folder, read once: the frame and the per-problem outcomes
    (which the frame leaves out) both come from it."""
    return tuple(A.scan_runs([folder]))


@functools.cache
def runs(folder: Path):
    """The long runs frame of one results folder, for tables and figures."""
    return A.runs_frame(logs(folder))


def tables() -> dict[str, str]:
    """File name -> Markdown of every generated table."""
    out = {}
    for protocol in A.find_protocols([RESULTS]):
        if protocol.families["primary"]:
            table = A.confirmatory_table(runs(protocol.folder), protocol)
            out[f"{table.key}.md"] = A.to_markdown(A.confirmatory_grid(table))
            out[f"{table.key}_headline.md"] = A.to_markdown(A.headline_grid(table))
        sweep = A.sweep_grid(protocol)
        if sweep is not None:
            out[f"sweep_{protocol.name}.md"] = A.to_markdown(sweep)
        for key, stated in A.stated_tables(runs(protocol.folder), protocol):
            out[f"{key}.md"] = A.to_markdown(A.stated_grid(stated))
            out[f"{key}_headline.md"] = A.to_markdown(A.stated_headline_grid(stated))
    pilot = runs(PILOT)
    for model, task, n in A.settings(pilot):
        claims = A.claims_table(pilot, model, task, n)
        out[f"pilot_{claims.key}.md"] = A.to_markdown(A.claims_grid(claims))
    repro = runs(REPRO)
    for model, task, n in A.settings(repro):
        held_out = A.results_table(A.final_metrics(repro), model, task, n)
        out[f"repro_{held_out.key}.md"] = A.to_markdown(A.table_grid(held_out))
        claims = A.claims_table(repro, model, task, n)
        out[f"repro_{claims.key}.md"] = A.to_markdown(A.claims_grid(claims))
    for criterion in A.find_searches([RESULTS]):
        stall = A.stall_table(runs(criterion.folder), criterion)
        out[f"claim7_{criterion.name}.md"] = A.to_markdown(A.stall_grid(stall))
        met = int(stall.rows.get("meets_base", pd.Series(dtype=bool)).fillna(False).sum())
        none_stalled = "" if stall.verdict == A.UNDECIDED else "; none of them stalled"
        out[f"claim7_{criterion.name}_verdict.md"] = (
            f"**Claim 7** (pass@k optimisation unblocks the hard split): **{stall.verdict}** "
            f"({met} of {len(stall.rows)} candidate splits met the base criterion"
            f"{none_stalled} under k_opt = 1).\n"
            if stall.chosen is None and stall.verdict != A.NOT_RUN
            else f"**Claim 7** ({criterion.name}): {stall.verdict}.\n"
        )
    return out


def readme_with(block: str, text: str, readme: str) -> str:
    """``readme`` with the generated block ``block`` replaced by ``text``."""
    pattern = re.compile(BLOCK.format(block), re.S)
    return pattern.sub(lambda m: m.group(1) + text + m.group(2), readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "generated")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in tables().items():
        (args.out / name).write_text(text, encoding="utf-8")
    readme_path = REPO / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    for protocol in A.find_protocols([RESULTS]):
        title = f"Confirmatory study {protocol.name}: held-out progress per arm"
        study = runs(protocol.folder)
        if not A.runs_under(study, protocol.folder).empty:
            fig = A.fig_held_out_progress(study, list(protocol.labels.values()), title)
            fig.savefig(args.out / f"confirmatory_{protocol.name}.png", dpi=110)
        study_logs = [r for r in logs(protocol.folder) if r.config.seed in protocol.seeds]
        if not A.eval_counts(study_logs).empty:  # evals with per-problem outcomes
            title = f"Study {protocol.name}: held-out pass@k against k per arm, final eval"
            ks = [1, 2, 4, 8, 16, 32, 64]
            fig = A.fig_pass_at_k_curves(study_logs, list(protocol.labels.values()), ks, title)
            fig.savefig(args.out / f"passk_curves_{protocol.name}.png", dpi=110)
        if protocol.families["primary"]:
            headline = (args.out / f"confirmatory_{protocol.name}_headline.md").read_text()
            readme = readme_with(f"headline_{protocol.name}", headline, readme)
        for key, _ in A.stated_tables(study, protocol):
            readme = readme_with(key, (args.out / f"{key}_headline.md").read_text(), readme)
    pilot = runs(RESULTS / "regime_pilot")
    title = "Regime pilot: k_opt = 1 to 1000 steps, held-out progress"
    fig = A.fig_held_out_progress(pilot, ["k_opt=1"], title)
    fig.savefig(args.out / "regime_pilot.png", dpi=110)
    for criterion in A.find_searches([RESULTS]):
        for candidate in criterion.candidates:
            pilot = A.runs_under(runs(criterion.folder), criterion.folder / candidate)
            if not pilot.empty:
                title = f"Figure 8 analogue: {candidate} ({criterion.name}), held-out progress"
                fig = A.fig_held_out_progress(pilot, [criterion.label], title)
                fig.savefig(args.out / f"fig8_{criterion.name}_{candidate}.png", dpi=110)
        verdict = (args.out / f"claim7_{criterion.name}_verdict.md").read_text()
        readme = readme_with(f"claim7_{criterion.name}", verdict, readme)
    readme_path.write_text(readme, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
