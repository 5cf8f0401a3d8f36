"""``pkpo-analyze RUNS... --out report/``: the paper's tables and figures from run logs.

Reads every run folder (with ``events.jsonl``) and toy-experiment folder (with
``fig1_maxg_at_k.csv``) under RUNS, executes the report's notebooks (the Jupytext
``.py`` files of the repository's ``analysis/`` folder, installed as ``pkpo.notebooks``)
headless with nbclient, and writes into ``--out``: ``tables/`` (Markdown, LaTeX, HTML, CSV),
``figures/`` (PNG, PDF), ``notebooks/`` (the executed notebooks), ``inventory.csv`` and
``index.html``, which shows all of it with the run inventory and what has no data.
Exit status 1 if a notebook failed (the page lists the failure), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

import pkpo.notebooks
from pkpo import plugins
from pkpo.logger import EventLogWarning

from .notebook import PARAMS_ENV
from .report import write_index
from .runs import run_inventory, runs_frame, scan_runs
from .toy_figures import find_toy_dirs

NOTEBOOKS = pkpo.notebooks.NOTEBOOKS
"""The report's notebooks, executed in this order."""

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pkpo-analyze",
        description="Regenerate the paper's Tables 1-8 and Figures 1-8 from run logs.",
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="folders searched recursively for runs and toy outputs"
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    parser.add_argument(
        "--toy", type=Path, action="append", default=[], help="extra toy-output folder(s)"
    )
    parser.add_argument(
        "--window", type=int, default=20, help="rolling window of Figures 3, 6-8, in steps"
    )
    parser.add_argument(
        "--split",
        default=None,
        help="held-out eval split (default: each run's own; 'test' if a run logs several)",
    )
    parser.add_argument(
        "--fig3-k-evals", default="1,4,16", help="k_eval panels of Figure 3 (comma separated)"
    )
    parser.add_argument(
        "--stale-after-hours",
        type=float,
        default=1.0,
        help="a log without an end event is 'running' if written to within this time, "
        "else 'crashed'",
    )
    parser.add_argument(
        "--notebooks",
        default=",".join(NOTEBOOKS),
        help=f"which notebooks to execute (default: {','.join(NOTEBOOKS)})",
    )
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout, seconds")
    args = parser.parse_args(argv)
    for path in [*args.runs, *args.toy]:
        if not path.is_dir():
            parser.error(f"{path} is not a folder")
    if args.window < 1:
        parser.error("--window must be >= 1")
    unknown = set(args.notebooks.split(",")) - set(NOTEBOOKS)
    if unknown:
        parser.error(f"unknown notebook(s) {', '.join(sorted(unknown))}")
    try:
        args.fig3_k_evals = [int(k) for k in args.fig3_k_evals.split(",")]
    except ValueError:
        parser.error(f"--fig3-k-evals must be integers separated by commas: {args.fig3_k_evals}")
    return args


def scan_with_warnings(
    paths: Sequence[Path], stale_after_s: float, split: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(long runs frame, inventory, warning messages); each warning is also logged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EventLogWarning)  # AnalysisWarning is one too
        runs = scan_runs(paths, stale_after_s=stale_after_s)
    messages = [str(w.message) for w in caught if issubclass(w.category, EventLogWarning)]
    for message in messages:
        log.warning("%s", message)
    return runs_frame(runs), run_inventory(runs, split), messages


def execute_notebook(name: str, params_path: Path, out: Path, timeout: int) -> None:
    """Run the notebook ``name`` (``analysis/<name>.py``, Jupytext) and save it executed as
    ``out/notebooks/<name>.ipynb``. The kernel inherits our environment (so it imports the
    same installed pkpo) plus ``$PKPO_ANALYSIS_PARAMS``.

    Raises nbclient's error after saving the notebook up to the failing cell.
    """
    source = files("pkpo.notebooks") / f"{name}.py"
    notebook = jupytext.reads(source.read_text(encoding="utf-8"), fmt="py:percent")
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(out)}},
    )
    target = out / "notebooks" / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.execute(env={**os.environ, PARAMS_ENV: str(params_path)})
    finally:
        nbformat.write(notebook, target)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        plugins.load()
    except plugins.PluginError as err:
        print(f"pkpo-analyze: error: {err}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_paths = [p.resolve() for p in args.runs]

    df, inventory, warned = scan_with_warnings(run_paths, 3600 * args.stale_after_hours, args.split)
    log.info("%d runs under %s", len(inventory), ", ".join(map(str, run_paths)))
    inventory.to_csv(out / "inventory.csv", index=False)
    cache = out / ".cache" / "runs.pkl"
    cache.parent.mkdir(exist_ok=True)
    pd.to_pickle({"runs": df, "inventory": inventory}, cache)
    toy_dirs = find_toy_dirs([*run_paths, *args.toy])
    params = {
        "runs": [str(p) for p in run_paths],
        "toy_dirs": [str(p) for p in toy_dirs],
        "out": str(out),
        "cache": str(cache),
        "rolling_window": args.window,
        "split": args.split,
        "fig3_k_evals": args.fig3_k_evals,
        "stale_after_s": 3600 * args.stale_after_hours,
    }
    params_path = out / "params.json"
    params_path.write_text(json.dumps(params, indent=1), encoding="utf-8")

    sections = args.notebooks.split(",")
    problems = []
    for name in sections:
        log.info("executing notebook %s", name)
        (out / "manifest" / f"{name}.json").unlink(missing_ok=True)
        try:
            execute_notebook(name, params_path, out, args.timeout)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            summary = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            problems.append(f"notebook {name} failed: {summary} (see notebooks/{name}.ipynb)")
            log.error("%s", problems[-1])
    index = write_index(out, inventory, sections=sections, problems=problems, warnings_seen=warned)
    print(f"report: {index}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
