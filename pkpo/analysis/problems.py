"""Per-problem eval outcomes: problems paired across arms and seeds, eval noise measured
directly, and pass@k curves with simultaneous bands over the k grid.

Every held-out eval event carries ``problem_ids`` and ``successes`` (c of ``n_eval``,
:func:`pkpo.metrics.per_problem_outcomes`), which is all Eq. 3 needs for any k <= n. Runs of
one seed share the eval problems, so arm A and arm B can be compared problem by problem:
the paired comparison and the simultaneous band over the k grid are those of the maintained
library ``passk-inference`` (a Gaussian-multiplier sup-t band over independent rows). Its
rows here are (seed, problem) pairs; the band covers the redraw of eval samples and the
spread over problems, not the spread of training over seeds, which the seed-level
decisions (:mod:`.stated`) carry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import passk_inference
from matplotlib.figure import Figure

from .errors import NoDataError
from .runs import RunLog, pick_split
from .style import arm_style

BOOTSTRAP = 4000
"""Multiplier draws of the simultaneous band (passk-inference's default)."""


def eval_counts(runs: Sequence[RunLog], step: int | None = None) -> pd.DataFrame:
    """One row per (run, problem) of the held-out eval at ``step`` (default: each run's last
    held-out eval with per-problem outcomes): run, arm (label), seed, step, problem_id, c, n.
    Runs whose evals predate per-problem outcomes contribute nothing."""
    rows = []
    for run in runs:
        evals = [r for r in run.records if r["event"] == "eval" and "successes" in r]
        if not evals:  # logged before evals recorded per-problem outcomes
            continue
        split = pick_split([r.get("split") for r in evals])
        evals = [r for r in evals if r.get("split") == split]
        if step is not None:
            evals = [r for r in evals if r["step"] == step]
        if not evals:
            continue
        last = max(evals, key=lambda r: r["step"])
        for pid, c in zip(last["problem_ids"], last["successes"], strict=True):
            rows.append(
                {
                    "run": run.run,
                    "arm": run.config.arm,
                    "seed": run.config.seed,
                    "step": last["step"],
                    "problem_id": pid,
                    "c": int(c),
                    "n": int(last["n_eval"]),
                }
            )
    return pd.DataFrame(rows, columns=["run", "arm", "seed", "step", "problem_id", "c", "n"])


def resample_se(c: np.ndarray, n: np.ndarray) -> float:
    """Standard error of mean pass@1 over fixed problems from redrawing the eval samples
    alone: ``sqrt(sum_i p_i (1 - p_i) / n_i) / B``, with the unbiased estimate
    ``c (n - c) / (n (n - 1))`` of each ``p_i (1 - p_i)``. The eval noise of one run's
    pass@1, measured from its own outcomes."""
    c, n = np.asarray(c, float), np.asarray(n, float)
    variance = c * (n - c) / (n * (n - 1)) / n
    return float(math.sqrt(variance.sum()) / len(c))


def paired_rows(counts: pd.DataFrame, arm_a: str, arm_b: str) -> pd.DataFrame:
    """The (seed, problem) rows that both arms evaluated, sorted by seed and problem id (the
    band's multiplier draws follow the row order): ``c_a, n_a, c_b, n_b``."""
    key = ["seed", "problem_id"]
    a = counts.loc[counts["arm"] == arm_a, [*key, "c", "n"]]
    b = counts.loc[counts["arm"] == arm_b, [*key, "c", "n"]]
    return a.merge(b, on=key, suffixes=("_a", "_b")).sort_values(key, ignore_index=True)


def paired_comparison(
    counts: pd.DataFrame, arm_a: str, arm_b: str, ks: Sequence[int], alpha: float = 0.05
) -> dict:
    """pass@k of arm A − arm B over the k grid, paired by (seed, problem), with
    passk-inference's simultaneous band (``lower``/``upper``), the budgets where A is
    certified better or worse, and the first-loss set. Raises :class:`NoDataError` when the
    arms share fewer than two rows."""
    rows = paired_rows(counts, arm_a, arm_b)
    if len(rows) < 2:
        raise NoDataError(f"{arm_a} and {arm_b} share no per-problem eval outcomes")
    return passk_inference.compare(
        rows["c_b"].to_numpy(),
        rows["n_b"].to_numpy(),
        rows["c_a"].to_numpy(),
        rows["n_a"].to_numpy(),
        ks=list(ks),
        bootstrap=BOOTSTRAP,
        alpha=alpha,
    )


def arm_curve(counts: pd.DataFrame, arm: str, ks: Sequence[int], alpha: float = 0.05) -> dict:
    """Mean pass@k of one arm over its (seed, problem) rows at each k, with a simultaneous
    band over the grid (passk-inference)."""
    own = counts[counts["arm"] == arm]
    if len(own) < 2:
        raise NoDataError(f"{arm}: no per-problem eval outcomes")
    c, n = own["c"].to_numpy(), own["n"].to_numpy()
    rows = np.column_stack([passk_inference.pass_at_k(c, n, k) for k in ks])
    return passk_inference.simultaneous_band(rows, bootstrap=BOOTSTRAP, alpha=alpha)


def fig_pass_at_k_curves(
    runs: Sequence[RunLog], arms: Sequence[str], ks: Sequence[int], title: str
) -> Figure:
    """pass@k against k (log scale) per arm at each run's last eval, mean over (seed,
    problem) rows with a 95 % simultaneous band over the k grid; ``arms``: labels in
    legend order; k above the eval's n is left out."""
    counts = eval_counts(runs)
    present = [a for a in arms if (counts["arm"] == a).sum() >= 2]
    if not present:
        raise NoDataError(f"{title}: no per-problem eval outcomes")
    ks = [k for k in ks if k <= counts["n"].min()]  # no unbiased pass@k above n (Corollary 2)
    configs = {run.config.arm: run.config.arm_config for run in runs}
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for arm in present:
        band = arm_curve(counts, arm, ks)
        style = arm_style(configs[arm])
        ax.plot(ks, 100 * band["mean"], label=arm, **style)
        ax.fill_between(
            ks, 100 * band["lower"], 100 * band["upper"], alpha=0.2, lw=0, color=style["color"]
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_xlabel("k", fontsize=8)
    ax.set_ylabel("held-out pass@k (%)", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"{title}\nmean over seeds × problems; band: 95 % simultaneous over k\n"
        "(passk-inference: eval samples and problems, not training seeds)",
        fontsize=9,
    )
    return fig
