"""The toy experiment's comparison of every registered transform, as report tables.

``pkpo-toy``'s ``estimators`` stage writes ``estimators_bias_variance.csv`` (bias, variance
and group sums per theta, n and transform; :func:`pkpo.toy.compare.estimator_table`) and
its ``train_estimators`` stage ``train_estimators.csv`` (the theta each transform's policy
gradient settles at; :func:`pkpo.toy.compare.training_table`). :func:`toy_estimator_grids`
and :func:`toy_training_grid` lay them out as :class:`~pkpo.analysis.render.Grid` tables;
:func:`fig_toy_variance_all` draws Figure 4+ with the toy's own plotting code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from pkpo.toy import figures as toy_plots
from pkpo.toy.style import TRANSFORM_STYLE

from .render import Grid
from .toy_figures import _read_toy_csv, toy_settings

ESTIMATORS_CSV = "estimators_bias_variance.csv"
TRAINING_CSV = "train_estimators.csv"


def _order(names: Sequence[str]) -> list[str]:
    """Figure 4+'s order (the PKPO family first), then any others alphabetically."""
    known = [n for n in TRANSFORM_STYLE if n in set(names)]
    return known + sorted(set(names) - set(known))


def _skipped(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the rows that were computed, one note per skipped transform with its error)."""
    skipped = df.skipped.fillna("") != ""
    first = df[skipped].drop_duplicates("estimator")
    notes = [f"{r.estimator} not run: {r.skipped}" for r in first.itertuples()]
    return df[~skipped], notes


def _with_se(value: float, se: float, significant: bool) -> str:
    return f"{value:+.3g} ± {se:.2g}" + (" *" if significant else "")


def fig_toy_variance_all(toy_dir: str | Path) -> Figure:
    """Figure 4+: every registered transform's gradient variance against n (first theta)."""
    df = _read_toy_csv(toy_dir, "fig4plus_variance.csv")
    n_estimates = toy_settings(toy_dir)[0]["estimators"]["n_estimates"]
    return toy_plots.plot_variance_all(df, n_estimates)


def toy_estimator_grids(toy_dir: str | Path, ns: Sequence[int] | None = None) -> list[Grid]:
    """One table per theta: per transform and n, the bias of its Eq. 18 estimate against
    ``d max_g@k / d theta`` and against its own target, the variance (raw and over the
    target's scale squared) and the realised group sum ``sum_i A_i``. ``ns`` keeps only
    those n."""
    df = _read_toy_csv(toy_dir, ESTIMATORS_CSV)
    z = toy_settings(toy_dir)[0]["estimators"]["z_significant"]
    if ns is not None:
        df = df[df.n.isin(ns)]
    grids = []
    for label, at_theta in df.groupby("theta_label", sort=False):
        done, notes = _skipped(at_theta)
        k = int(at_theta.k.iloc[0])
        theta = float(at_theta.theta.iloc[0])
        body = []
        for name in _order(list(done.estimator.unique())):
            for r in done[done.estimator == name].sort_values("n").itertuples():
                body.append(
                    [
                        name,
                        str(r.n),
                        r.target + ("" if r.target_unbiased else " (large-n limit)"),
                        _with_se(r.bias_maxg_k, r.mean_se, r.maxg_k_significant),
                        _with_se(r.bias_target, r.mean_se, r.target_significant),
                        f"{r.variance:.3g} ± {r.variance_se:.2g}",
                        f"{r.scaled_variance:.3g}",
                        f"{r.group_sum_mean:+.3g} ± {r.group_sum_sd:.2g}",
                    ]
                )
        notes = [
            f"bias ± its standard error; * marks |bias| > {z:g} s.e.",
            "target: what the transform's mean estimate equals exactly (or, for grpo, in the "
            "large-n limit); the 'bias vs target' column measures the departure from it",
            "variance / scale²: the variance on the scale of the ∇max_g@j the transform "
            "targets (n ∇max_g@1 → divided by n², ...)",
            "Σ A: mean ± s.d. over groups of the sum of a group's advantages",
            *notes,
        ]
        header = [
            "transform", "n", "target", f"bias vs ∇max_g@{k}", "bias vs target",
            "variance", "variance / scale²", "Σ A (mean ± sd)",
        ]  # fmt: skip
        where = "k-optimal θ" if label == "k_optimal" else "θ"
        title = f"Every registered transform on the toy problem: k = {k}, {where} = {theta:.4g}"
        grids.append(Grid(title, header, body, notes))
    return grids


def toy_training_grid(toy_dir: str | Path) -> Grid:
    """The theta each transform's policy-gradient training settles at, per k, against the
    exact argmax of max_g@k (first row) and of the objective the transform targets."""
    df = _read_toy_csv(toy_dir, TRAINING_CSV)
    done, notes = _skipped(df)
    ks = sorted(df.k.unique())
    stars = df.drop_duplicates("k").set_index("k").theta_star_k
    body = [["exact argmax of max_g@k", "", *(f"{stars[k]:.4f}" for k in ks)]]
    for name in _order(list(done.estimator.unique())):
        rows = done[done.estimator == name].set_index("k")
        targets = rows.target.unique()
        if len(targets) == 1:  # ignores k: one objective, one optimum
            aim = f"{targets[0]} (argmax {rows.theta_target.iloc[0]:.4f})"
        else:
            aim = "max_g@k"
        cells = [f"{rows.theta_mean[k]:.4f} ± {rows.theta_sd[k]:.4f}" for k in ks]
        body.append([name, aim, *cells])
    first = df.dropna(subset=["repeats"]).iloc[0]
    notes = [
        f"θ after training (mean ± s.d. over {int(first.repeats)} runs, n = {int(first.n)} "
        "samples per group)",
        *notes,
    ]
    title = "θ the toy policy settles at when trained with each registered transform"
    return Grid(title, ["transform", "targets", *(f"k = {k}" for k in ks)], body, notes)
