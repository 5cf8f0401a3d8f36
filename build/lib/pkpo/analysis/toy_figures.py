"""Figures 1, 2, 4 and 5 of the paper (and the toy's training run) from a toy output folder.

``pkpo-toy`` writes each figure's numbers as CSV beside its ``summary.json``;
:func:`find_toy_dirs` finds such folders and the ``fig_toy_*`` functions draw them with the
toy's own plotting code (:mod:`pkpo.toy.figures`), raising :class:`NoDataError` when a
file is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from matplotlib.figure import Figure

from pkpo.toy import figures as toy_plots

from .errors import NoDataError, warn


def find_toy_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Folders (the paths themselves or below them) holding the toy experiment's CSVs."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if root.is_dir():
            found.update(p.parent.resolve() for p in root.rglob("fig1_maxg_at_k.csv"))
    return sorted(found)


def _read_toy_csv(toy_dir: str | Path, name: str) -> pd.DataFrame:
    path = Path(toy_dir) / name
    if not path.is_file():
        raise NoDataError(f"{path} does not exist")
    return pd.read_csv(path)


def toy_settings(toy_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``summary.json``, the config) of a toy run, for the figures' titles and markers.

    The config is the one Hydra saved beside the outputs (``.hydra/<time>/config.yaml``,
    the latest); without it, ``conf/toy.yaml``'s defaults (installed as ``pkpo.conf``) with
    a warning.
    """
    toy_dir = Path(toy_dir)
    summary_path = toy_dir / "summary.json"
    if not summary_path.is_file():
        raise NoDataError(f"{summary_path} does not exist (toy run unfinished?)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    saved = sorted(toy_dir.glob(".hydra/*/config.yaml"))
    if saved:
        config_path = saved[-1]
    else:
        config_path = files("pkpo.conf") / "toy.yaml"
        warn(f"{toy_dir}: no saved toy config; titles use the defaults of {config_path}")
    return summary, yaml.safe_load(config_path.read_text(encoding="utf-8"))


def fig_toy_maxg(toy_dir: str | Path) -> Figure:
    """Figure 1: max_g@k (Eq. 11) and its derivative against θ per k (the toy's own plot)."""
    curves = _read_toy_csv(toy_dir, "fig1_maxg_at_k.csv")
    summary, config = toy_settings(toy_dir)
    optimal = {int(k): float(v) for k, v in summary["optimal_theta"].items()}
    return toy_plots.plot_maxg(curves, optimal, summary["sigma"], config["fig1"]["n"])


def fig_toy_weights(toy_dir: str | Path) -> Figure:
    """Figure 2: the effective weight μ_i / C(n, k) (Eq. 12) of each sorted sample, per k."""
    return toy_plots.plot_weights(_read_toy_csv(toy_dir, "fig2_weights.csv"))


def fig_toy_variance(toy_dir: str | Path) -> Figure:
    """Figure 4: variance of gradient estimators of max_g@k against n."""
    variance = _read_toy_csv(toy_dir, "fig4_variance.csv")
    setting = toy_settings(toy_dir)[0]["fig4"]
    return toy_plots.plot_variance(variance, setting["theta"], setting["k"], setting["n_estimates"])


def fig_toy_effective_rewards(toy_dir: str | Path) -> Figure:
    """Figure 5: binned mean transformed reward against raw reward, per estimator and k."""
    rewards = _read_toy_csv(toy_dir, "fig5_effective_rewards.csv")
    return toy_plots.plot_effective_rewards(rewards, toy_settings(toy_dir)[1]["fig5"]["n"])


def fig_toy_training(toy_dir: str | Path) -> Figure:
    """θ during PKPO policy-gradient training per k, against each k's optimal θ."""
    training = _read_toy_csv(toy_dir, "train_theta.csv")
    return toy_plots.plot_training(training, toy_settings(toy_dir)[1]["train"]["n"])
