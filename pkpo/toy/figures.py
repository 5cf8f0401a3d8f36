"""The numbers behind each toy figure (pure functions returning DataFrames) and the plots.

``*_table`` functions compute a figure's long-format table; ``plot_*`` functions draw it;
``save`` writes PNG, PDF and CSV side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pkpo import estimators as E

from . import gradients as G
from . import problem
from .style import ESTIMATOR_STYLE, K_COLORS, TRANSFORM_STYLE, TRANSFORM_TITLES, transform_style

# Rows of draws per estimator call: bounds memory at ~100 MB of float64 per array.
_CHUNK_SAMPLES = 1 << 20


# ------------------------------------------------------------------------ tables


def mc_gradient(
    advantages: G.Advantages,
    rng: np.random.Generator,
    theta: float,
    sigma: float,
    k: int,
    n: int,
    n_estimates: int,
) -> np.ndarray:
    """``n_estimates`` independent gradient estimates at theta, each from n fresh draws."""
    rows = max(1, _CHUNK_SAMPLES // n)
    out = []
    for start in range(0, n_estimates, rows):
        x = problem.sample(rng, theta, sigma, (min(rows, n_estimates - start), n))
        out.append(G.gradient_estimates(advantages, x, theta, sigma, k))
    return np.concatenate(out)


def maxg_table(
    thetas: np.ndarray,
    ks: Sequence[int],
    sigma: float,
    n: int,
    n_estimates: int,
    mc_every: int,
    rng: np.random.Generator,
    n_nodes: int,
) -> pd.DataFrame:
    """Figure 1: exact max_g@k and its derivative on the theta grid, plus the mean and
    standard error of the PKPO gradient estimator (n samples each) at every
    ``mc_every``-th theta (NaN elsewhere)."""
    rows = []
    for k in ks:
        exact = problem.maxg_at_k(thetas, k, sigma, n_nodes)
        dexact = problem.dmaxg_at_k(thetas, k, sigma, n_nodes)
        for j, theta in enumerate(thetas):
            mean = se = np.nan
            if j % mc_every == 0:
                est = mc_gradient(G.pkpo, rng, float(theta), sigma, k, n, n_estimates)
                mean, se = est.mean(), est.std(ddof=1) / np.sqrt(est.size)
            rows.append((theta, k, exact[j], dexact[j], mean, se))
    columns = ["theta", "k", "maxg_at_k", "dmaxg_numeric", "dmaxg_estimator"]
    return pd.DataFrame(rows, columns=[*columns, "dmaxg_estimator_se"])


def weights_table(n: int) -> pd.DataFrame:
    """Figure 2: the weight ``mu_i / C(n, k)`` (Eq. 12-13) of the i-th smallest of n rewards.

    Read off ``estimators.rho``: for the ascending 0/1 step vector with ones from sorted
    position i on, rho is the total weight of positions >= i, so consecutive differences
    are the individual weights.
    """
    steps = (np.arange(1, n + 1)[None, :] >= np.arange(1, n + 2)[:, None]).astype(float)
    rows = []
    for k in range(1, n + 1):
        tail = E.rho(steps, k)  # tail[i-1] = total weight of sorted positions >= i
        for i, w in enumerate(tail[:-1] - tail[1:], start=1):
            rows.append((n, k, i, w))
    return pd.DataFrame(rows, columns=["n", "k", "sort_index", "weight"])


def variance_table(
    ns: Sequence[int],
    theta: float,
    k: int,
    sigma: float,
    n_estimates: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Figure 4: variance (and mean) of ``n_estimates`` gradient estimates per estimator and n.

    All estimators at one n see the same draws, so their differences are not sampling noise
    of the draws alone. ``variance_se`` is the standard error of the sample variance,
    ``sqrt((m4 - var^2) / N)``; ``mean_se`` that of the mean. Estimators undefined at (n, k)
    are left out.
    """
    rows = []
    for n in ns:
        x = problem.sample(rng, theta, sigma, (n_estimates, n))
        for name, advantages in G.ESTIMATORS.items():
            if not G.defined(name, n, k):
                continue
            est = G.gradient_estimates(advantages, x, theta, sigma, k)
            var = est.var(ddof=1)
            m4 = np.mean((est - est.mean()) ** 4)
            var_se = np.sqrt(max(m4 - var**2, 0.0) / est.size)
            rows.append((n, name, var, est.mean(), var_se, np.sqrt(var / est.size)))
    columns = ["n", "estimator", "variance", "mean", "variance_se", "mean_se"]
    return pd.DataFrame(rows, columns=columns)


def effective_reward_table(
    n: int, ks: Sequence[int], n_draws: int, n_bins: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Figure 5: transformed reward against raw reward for ``n`` rewards ~ U[-1/2, 1/2],
    averaged within ``n_bins`` equal-width bins of the raw reward over ``n_draws`` groups."""
    g = rng.uniform(-0.5, 0.5, size=(n_draws, n))
    edges = np.linspace(-0.5, 0.5, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    which = np.clip(np.digitize(g, edges) - 1, 0, n_bins - 1).ravel()
    counts = np.bincount(which, minlength=n_bins)
    rows = []
    for name in TRANSFORM_TITLES:
        for k in ks:
            if not G.defined(name, n, k):
                continue
            adv = G.ESTIMATORS[name](g, k).ravel()
            sums = np.bincount(which, weights=adv, minlength=n_bins)
            with np.errstate(invalid="ignore"):
                means = sums / counts
            rows += [(name, k, c, m) for c, m in zip(centers, means, strict=True)]
    return pd.DataFrame(rows, columns=["estimator", "k", "bin_center", "effective_reward"])


# ------------------------------------------------------------------------ plots


def _k_label(k: int) -> str:
    return f"k = {k}"


def plot_maxg(df: pd.DataFrame, optimal: dict[int, float], sigma: float, n: int) -> Figure:
    """Figure 1: max_g@k (left) and its derivative (right) against theta, one colour per k."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k, d in df.groupby("k"):
        color = K_COLORS[k]
        left.plot(d.theta, d.maxg_at_k, color=color, label=_k_label(k))
        star = optimal[k]
        left.axvline(star, color=color, ls=":", lw=1)
        right.plot(d.theta, d.dmaxg_numeric, color=color, label=_k_label(k))
        mc = d.dropna(subset=["dmaxg_estimator"])
        right.errorbar(
            mc.theta, mc.dmaxg_estimator, yerr=2 * mc.dmaxg_estimator_se, fmt="o", ms=3.5,
            color=color, mfc="white", capsize=2, lw=1,
        )  # fmt: skip
    right.axhline(0.0, color="black", lw=0.8)
    left.set(
        xlabel=r"policy mean $\theta$",
        ylabel=r"$\mathrm{max}_g@k$ = E[max of k rewards]",
        title=r"$\mathrm{max}_g@k$ (dotted: optimal $\theta$ per k)",
    )
    right.set(
        xlabel=r"policy mean $\theta$",
        ylabel=r"$d\,\mathrm{max}_g@k\,/\,d\theta$",
        title=rf"derivative: lines exact, circles PKPO mean $\pm$ 2 SE (n = {n})",
    )
    left.legend(title=rf"$x\sim N(\theta, {sigma}^2)$", loc="upper left")
    right.legend(loc="lower left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(r"Figure 1: toy problem, $g(x) = x^2$ on $[0, 1]$, 0 elsewhere")
    return fig


def plot_weights(df: pd.DataFrame) -> Figure:
    """Figure 2: effective weight of each sorted sample for every k."""
    n = int(df.n.iloc[0])
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    for k, d in df.groupby("k"):
        ax.plot(d["sort_index"], d["weight"], "o-", color=K_COLORS[k], label=_k_label(k), ms=4)
    ax.set(
        xlabel="sort index i (rewards sorted ascending)",
        ylabel=r"effective weight $\mu_i / \binom{n}{k}$",
        title=f"Figure 2: weight of the i-th smallest of n = {n} rewards in Eq. 12",
        xticks=range(1, n + 1),
    )
    ax.legend(ncols=2)
    ax.grid(alpha=0.3)
    return fig


def plot_variance(df: pd.DataFrame, theta: float, k: int, n_estimates: int) -> Figure:
    """Figure 4: estimator variance against n on a log scale."""
    fig = Figure(figsize=(8.4, 6.6), layout="constrained")
    ax = fig.subplots()
    for name, style in ESTIMATOR_STYLE.items():
        d = df[df.estimator == name]
        if d.empty:
            continue
        ax.plot(
            d.n, d.variance, color=style["color"], marker=style["marker"], label=style["label"],
            ms=8 if style["marker"] == "*" else 5,
        )  # fmt: skip
    ax.set_yscale("log")
    ax.set(
        xlabel="samples per estimate n",
        ylabel=r"variance of the $d\,\mathrm{max}_g@k/d\theta$ estimate",
        title=rf"Figure 4: k = {k}, $\theta$ = {theta:g}, {n_estimates:,} estimates per point",
        xticks=sorted(df.n.unique()),
    )
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8.5)
    return fig


def plot_variance_all(df: pd.DataFrame, n_estimates: int) -> Figure:
    """Figure 4+: every registered transform's variance against n at one theta (one
    ``compare.estimator_table`` theta), raw (left) and over its target's scale squared (right).

    Every transform in ``df`` is drawn (one registered by a plugin too, in a style of its
    own: :func:`~pkpo.toy.style.transform_style`) except those skipped, which the title names
    with the reason; the legend names each target.
    """
    theta, k = float(df.theta.iloc[0]), int(df.k.iloc[0])
    fig = Figure(figsize=(13, 6.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    drawn = df[df.skipped.fillna("") == ""]
    names = set(drawn.estimator)
    others = sorted(names - set(TRANSFORM_STYLE))
    for name in [n for n in TRANSFORM_STYLE if n in names] + others:
        style = transform_style(name, others)
        d = drawn[drawn.estimator == name].sort_values("n")
        dashed = style["ls"] == "--"
        label = f"{name} (targets {d.target.iloc[0]})"
        for ax, column in zip(axes, ("variance", "scaled_variance"), strict=True):
            ax.plot(
                d.n, d[column], color=style["color"], marker=style["marker"], ls=style["ls"],
                mfc="none" if dashed else style["color"], ms=9 if dashed else 6,
                label=label if ax is axes[0] else None,
            )  # fmt: skip
    for ax, what in zip(axes, ("", " / target scale²"), strict=True):
        ax.set_yscale("log")
        ax.set(xlabel="samples per estimate n", ylabel=f"variance of the Eq. 18 estimate{what}")
        ax.set_xticks(sorted(drawn.n.unique()))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("as computed (scales differ: n, n−1, 1/sd(g) ...)")
    axes[1].set_title("each on the scale of the ∇max_g@j it targets")
    skipped = sorted(set(df.estimator[df.skipped.fillna("") != ""]))
    fig.suptitle(
        rf"Figure 4+: every registered transform, k = {k}, $\theta$ = {theta:.4g}, "
        f"{n_estimates:,} estimates per point"
        + (f"\nnot shown, they reject continuous rewards: {', '.join(skipped)}" if skipped else "")
    )
    fig.legend(loc="outside lower center", ncols=3, fontsize=8.5)
    return fig


def plot_effective_rewards(df: pd.DataFrame, n: int) -> Figure:
    """Figure 5: binned mean transformed reward against raw reward, one panel per transform."""
    fig = Figure(figsize=(14, 4.6), layout="constrained")
    # Own y-scale per panel: s's offsets (a) would flatten the baselined curves (b, c).
    axes = fig.subplots(1, len(TRANSFORM_TITLES))
    for ax, (name, title) in zip(axes, TRANSFORM_TITLES.items(), strict=True):
        for k, d in df[df.estimator == name].groupby("k"):
            ax.plot(d.bin_center, d.effective_reward, "o-", ms=3, color=K_COLORS[k])
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set(xlabel="raw reward g (bin centre)", title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean effective (transformed) reward in bin")
    handles = [
        Line2D([], [], color=K_COLORS[k], marker="o", ms=3, label=_k_label(k))
        for k in sorted(df.k.unique())
    ]
    fig.legend(handles=handles, loc="outside right center")
    fig.suptitle(f"Figure 5: effective rewards for n = {n} raw rewards ~ U[-1/2, 1/2]")
    return fig


def plot_training(df: pd.DataFrame, n: int) -> Figure:
    """theta during policy-gradient training for each k, with its k-optimal theta dashed."""
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    ax = fig.subplots()
    for k, d in df.groupby("k"):
        color = K_COLORS[k]
        ax.plot(d.step, d.theta, color=color, label=_k_label(k))
        ax.axhline(d.theta_star.iloc[0], color=color, ls="--", lw=1)
    ax.set(
        xlabel="training step",
        ylabel=r"policy mean $\theta$",
        title=rf"PKPO training of $\theta$ (n = {n}; dashed: argmax of $\mathrm{{max}}_g@k$)",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def save(fig: Figure, table: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem``.png (150 dpi), .pdf and .csv into out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in ("png", "pdf", "csv")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    table.to_csv(paths[2], index=False)
    return paths
