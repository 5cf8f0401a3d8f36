"""Figures 3, 6, 7 and 8 of the paper: RL training curves per arm, mean ± s.e. over seeds.

Each ``fig_*`` function takes the long runs frame of one (model, task, n) setting
(:func:`pkpo.analysis.runs.load_runs`) and returns a matplotlib ``Figure``, or raises
:class:`NoDataError` when the runs hold nothing to show. :func:`seed_curves` is the
per-arm mean curve behind them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats as scipy_stats

from pkpo.arms import ANNEALED, TANG, ArmConfig

from .errors import NoDataError
from .runs import arms_in
from .style import ARM_COLORS, arm_style, display_model, display_task
from .tables import best_entropy_arm, final_metrics, held_out

TRAIN_K_EVALS = (1, 2, 4, 8, 12, 16)
"""k_eval values the loop logs at every step (Section 5.2); Figure 7 has one panel each."""

PANEL_WIDTH, PANEL_HEIGHT = 3.6, 2.9


def _figure(rows: int, cols: int, **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A grid of panels against the training step, ``axes[row, col]``."""
    fig = Figure(figsize=(PANEL_WIDTH * cols, PANEL_HEIGHT * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **subplot_kw)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # x: the step
    return fig, axes


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend below the panels, with every labelled line of any panel once."""
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        # as many columns as fit the figure's width at ~5 pt per character of label
        width_pt = 72 * fig.get_size_inches()[0]
        fit = int(width_pt // (5 * max(map(len, labels)) + 40))
        fig.legend(
            [handles[label] for label in labels],
            labels,
            loc="outside lower center",
            ncols=max(1, min(len(labels), fit)),
            fontsize=8,
            frameon=False,
        )


def seed_curves(
    df: pd.DataFrame,
    metric: str,
    *,
    event: str = "train",
    split: str | None = None,
    window: int | None = None,
    scale: float = 1.0,
) -> pd.DataFrame:
    """Mean and s.e. over seeds of ``metric`` against step, per arm.

    ``event="eval"`` reads each run's held-out split (:func:`held_out`). ``window``: a
    trailing rolling mean over the last ``window`` logged steps of each run is taken first
    (the paper's "rolling pass@k"). Returns arm, step, mean, se, ci95 (the half-width of
    the 95 % t interval over seeds), n_seeds.
    """
    rows = held_out(df, split) if event == "eval" else df[df["event"] == event]
    sub = rows[rows["metric"] == metric][["run", "arm", "seed", "step", "value"]]
    sub = sub.astype({"run": str, "arm": str})
    sub = sub.sort_values(["run", "step"])
    if window and window > 1:
        rolled = sub.groupby("run")["value"].rolling(window, min_periods=1).mean()
        sub["value"] = rolled.reset_index(level=0, drop=True)
    sub["value"] = scale * sub["value"]
    stats = sub.groupby(["arm", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["se"] = stats["std"] / np.sqrt(stats["count"])
    dof = (stats["count"] - 1).where(stats["count"] > 1)
    stats["ci95"] = stats["se"] * scipy_stats.t.ppf(0.975, dof)
    columns = ["arm", "step", "mean", "se", "ci95", "n_seeds"]
    return stats.rename(columns={"count": "n_seeds"})[columns]


def _plot_arms(
    ax: Any,
    curves: pd.DataFrame,
    arms: Sequence[ArmConfig],
    seeds: dict[str, str],
    band: str = "se",
    **line: Any,
) -> None:
    """Each arm's mean curve in its colour (:func:`arm_style`), a band (``se``: ± s.e.;
    ``ci95``: the 95 % t interval) where there are two or more seeds, labelled with its
    number of seeds."""
    for arm in arms:
        curve = curves[curves["arm"] == arm.label]
        if curve.empty:
            continue
        style = arm_style(arm)
        label = f"{arm.label} ({seeds.get(arm.label, '0 seeds')})"
        # short runs get markers: a lone point would not show as a line
        dots = {"marker": "o", "markersize": 3} if len(curve) < 30 else {}
        ax.plot(curve["step"], curve["mean"], label=label, linewidth=1.4, **style, **dots | line)
        width = curve[band]
        shown = width.notna()
        if shown.any():
            ax.fill_between(
                curve["step"][shown],
                (curve["mean"] - width)[shown],
                (curve["mean"] + width)[shown],
                color=style["color"],
                alpha=0.18,
                linewidth=0,
            )


def _seed_counts(df: pd.DataFrame) -> dict[str, str]:
    """Legend text per arm: its number of seeds, and how many of them stopped early.

    A seed that crashed still draws its early steps, so the band there averages more
    seeds than at the end; the legend says so instead of claiming every seed throughout.
    """
    reach = df.groupby(["arm", "seed"], observed=True)["step"].max().reset_index()
    labels = {}
    for arm, seeds in reach.groupby("arm", observed=True):
        total = len(seeds)
        full = int((seeds["step"] == seeds["step"].max()).sum())
        text = f"{total} seed{'s' if total != 1 else ''}"
        if full < total:
            text = f"{full} of {text}; {total - full} stopped early"
        labels[str(arm)] = text
    return labels


def _arms_for_progress(df: pd.DataFrame, split: str | None) -> list[ArmConfig]:
    """Arms of Figures 6-8: the paper's (every constant k_opt, tang, EntropyReg at its best
    coefficient), not annealed ones and not the k-free estimators of the zoo (grpo, maxrl,
    ...): those would share one colour here, and the tables and claims list them."""
    best, _ = best_entropy_arm(final_metrics(df, split))
    arms = arms_in(df).values()
    keep = [a for a in arms if a.shown.k is not None or a.shown.kind == TANG or a.label == best]
    return sorted(keep, key=ArmConfig.sort_key)


def _train_k_evals(df: pd.DataFrame, k_evals: Sequence[int] | None) -> list[int]:
    logged = {m for m in df.loc[df["event"] == "train", "metric"].unique()}
    wanted = TRAIN_K_EVALS if k_evals is None else k_evals
    return [k for k in wanted if f"pass@{k}" in logged]


def _setting_title(model: str, task: str, n: int | None) -> str:
    return f"{display_model(model)} on {display_task(task)}" + ("" if n is None else f", n={n}")


def _window_text(window: int | None) -> str:
    return f"rolling mean over {window} steps" if window and window > 1 else "no smoothing"


def fig_annealing(
    df: pd.DataFrame,
    *,
    k_evals: Sequence[int] = (1, 4, 16),
    window: int = 20,
    split: str | None = None,
) -> Figure:
    """Figure 3: annealed k_opt vs constant k_opt; held-out (top) and training (bottom)
    pass@k_eval against step, one column per k_eval, mean ± s.e. over seeds."""
    arms = sorted(arms_in(df).values(), key=ArmConfig.sort_key)
    annealed = [a for a in arms if a.shown.kind == ANNEALED]
    if not annealed:
        raise NoDataError(
            "Figure 3 needs runs with an annealed k_opt schedule (schedule != constant)"
        )
    arms = annealed + [a for a in arms if a.shown.k is not None and not a.shown.dashed]
    k_evals = _train_k_evals(df, k_evals)
    if not k_evals:
        raise NoDataError("Figure 3: the runs log no training pass@k")
    seeds = _seed_counts(df)
    fig, axes = _figure(2, len(k_evals), sharex=True)
    for col, k in enumerate(k_evals):
        held_out = seed_curves(df, f"pass@{k}", event="eval", split=split, scale=100)
        training = seed_curves(df, f"pass@{k}", window=window, scale=100)
        panels = (
            (held_out, "held-out", {"marker": "o", "markersize": 3}),
            (training, "training", {}),
        )
        for row, (curves, what, line) in enumerate(panels):
            ax = axes[row, col]
            _plot_arms(ax, curves, arms, seeds, **line)
            ax.set_title(f"{what} pass@{k}", fontsize=9)
            ax.set_ylabel(f"{what} pass@{k} (%)", fontsize=8)
        axes[1, col].set_xlabel("training step", fontsize=8)
    annealed_runs = df["arm"].isin([a.label for a in annealed])
    for switch in df.loc[annealed_runs, "switch_step"].dropna().unique():
        for ax in axes.flat:
            ax.axvline(float(switch), color=ARM_COLORS[ANNEALED], linewidth=0.8, linestyle=":")
    fig.suptitle(
        f"Figure 3: annealing k_opt vs constant k_opt — {_setting_title(*_setting(df))}\n"
        f"held-out: every eval; training: {_window_text(window)}; "
        "dotted: k_opt switch; band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def _setting(df: pd.DataFrame) -> tuple[str, str, int | None]:
    first = df.iloc[0]
    ns = df["n"].dropna().unique()
    return str(first["model"]), str(first["task"]), int(ns[0]) if len(ns) == 1 else None


def fig_solve_rate_entropy(
    df: pd.DataFrame, *, window: int = 20, split: str | None = None
) -> Figure:
    """Figure 6: (a) cumulative solve rate and (b) policy entropy against step, per arm."""
    if df.empty or not df["metric"].isin(["cumulative_solve_rate", "entropy"]).any():
        raise NoDataError("Figure 6: no cumulative_solve_rate or entropy logged")
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    fig, axes = _figure(1, 2)
    solve = seed_curves(df, "cumulative_solve_rate", scale=100)
    entropy = seed_curves(df, "entropy", window=window)
    _plot_arms(axes[0, 0], solve, arms, seeds)
    _plot_arms(axes[0, 1], entropy, arms, seeds)
    axes[0, 0].set(xlabel="training step", ylabel="cumulative solve rate (%)")
    axes[0, 1].set(xlabel="training step", ylabel="entropy (nats per token)")
    axes[0, 0].set_title("(a) cumulative solve rate (train set)", fontsize=9)
    axes[0, 1].set_title(f"(b) entropy, {_window_text(window)}", fontsize=9)
    for ax in axes.flat:
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
    fig.suptitle(
        f"Figure 6: solve rate and entropy per k_opt — {_setting_title(*_setting(df))}\n"
        "band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def fig_rolling_pass_at_k(
    df: pd.DataFrame,
    *,
    k_evals: Sequence[int] | None = None,
    window: int = 20,
    split: str | None = None,
) -> Figure:
    """Figure 7: rolling training pass@k_eval against step per arm, one panel per k_eval."""
    k_evals = _train_k_evals(df, k_evals)
    if not k_evals:
        raise NoDataError("Figure 7: the runs log no training pass@k")
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    rows = math.ceil(len(k_evals) / 3)
    cols = math.ceil(len(k_evals) / rows)
    fig, axes = _figure(rows, cols, sharex=True)
    for ax, k in zip(axes.flat, k_evals, strict=False):
        _plot_arms(ax, seed_curves(df, f"pass@{k}", window=window, scale=100), arms, seeds)
        ax.set_title(f"pass@{k} (k_eval={k})", fontsize=9)
        ax.set_ylabel(f"rolling pass@{k} (%)", fontsize=8)
    for i, ax in enumerate(axes.flat):
        if i >= len(k_evals):
            ax.set_visible(False)
        elif i + cols >= len(k_evals):  # nothing below it: label the shared step axis
            ax.set_xlabel("training step", fontsize=8)
            ax.tick_params(labelbottom=True)
    fig.suptitle(
        f"Figure 7: rolling training pass@k_eval per k_opt — {_setting_title(*_setting(df))}\n"
        f"{_window_text(window)} of each run's per-step pass@k, then mean ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def fig_arc_progress(df: pd.DataFrame, *, window: int = 20, split: str | None = None) -> Figure:
    """Figure 8: progress per k_opt on a hard task (ARC, or a ``*_hard`` split where base
    pass@1 is near 0): cumulative solve rate and rolling pass@1 / pass@k_max."""
    if df.empty:
        raise NoDataError("Figure 8 needs runs on a hard task (task=arc or a *_hard split)")
    k_evals = _train_k_evals(df, None)
    if not k_evals:
        raise NoDataError("Figure 8: the hard-task runs log no training pass@k")
    shown = [1, k_evals[-1]] if k_evals[-1] != 1 else [1]
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    fig, axes = _figure(1, 1 + len(shown))
    _plot_arms(axes[0, 0], seed_curves(df, "cumulative_solve_rate", scale=100), arms, seeds)
    axes[0, 0].set_title("cumulative solve rate (train set)", fontsize=9)
    axes[0, 0].set_ylabel("cumulative solve rate (%)", fontsize=8)
    for ax, k in zip(axes[0, 1:], shown, strict=True):
        _plot_arms(ax, seed_curves(df, f"pass@{k}", window=window, scale=100), arms, seeds)
        ax.set_title(f"training pass@{k}", fontsize=9)
        ax.set_ylabel(f"rolling pass@{k} (%)", fontsize=8)
    for ax in axes.flat:
        ax.set_xlabel("training step", fontsize=8)
    fig.suptitle(
        f"Figure 8: hard-task progress per k_opt — {_setting_title(*_setting(df))}\n"
        f"pass@k: {_window_text(window)}; band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def fig_held_out_progress(
    df: pd.DataFrame,
    arms: Sequence[str],
    title: str,
    *,
    k_evals: Sequence[int] = (1, 4, 16),
    split: str | None = None,
) -> Figure:
    """Held-out pass@k against step per arm (``arms``: labels, in legend order), mean over
    seeds with its 95 % t interval; a last panel with the cumulative solve rate. The
    confirmatory studies' figure, and Figure 8's analogue on a hard split."""
    if df.empty or held_out(df, split).empty:
        raise NoDataError(f"{title}: no held-out evaluations")
    configs = arms_in(df)
    arms = [configs[a] for a in arms if a in configs]
    seeds = _seed_counts(df)
    fig, axes = _figure(1, len(k_evals) + 1)
    for ax, k in zip(axes[0], k_evals, strict=False):
        curves = seed_curves(df, f"pass@{k}", event="eval", split=split, scale=100)
        _plot_arms(ax, curves, arms, seeds, band="ci95")
        ax.set_title(f"held-out pass@{k}", fontsize=9)
        ax.set_ylabel(f"pass@{k} (%)", fontsize=8)
    solve = seed_curves(df, "cumulative_solve_rate", scale=100)
    _plot_arms(axes[0, -1], solve, arms, seeds, band="ci95")
    axes[0, -1].set_title("cumulative solve rate (train set)", fontsize=9)
    axes[0, -1].set_ylabel("solve rate (%)", fontsize=8)
    for ax in axes.flat:
        ax.set_xlabel("training step", fontsize=8)
    fig.suptitle(f"{title}\nmean over seeds; band: 95 % t interval over seeds", fontsize=9)
    _legend(fig, axes)
    return fig
