"""``pkpo-toy`` / ``python -m pkpo.toy``: regenerate the toy figures into out_dir.

Writes fig1_maxg_at_k, fig2_weights, fig4_variance, fig5_effective_rewards, train_theta and
fig4plus_variance (each .png, .pdf, .csv), the tables estimators_bias_variance.csv and
train_estimators.csv (every registered transform, :mod:`pkpo.toy.compare`) and
summary.json. Settings: conf/toy.yaml, read as the package data ``pkpo.conf`` (Hydra
overrides work).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import psutil
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from pkpo import plugins

from . import compare, problem
from . import figures as F
from .train import train_theta

log = logging.getLogger("toy")


def _figure1(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c = cfg.fig1
    thetas = np.linspace(c.thetas.start, c.thetas.stop, c.thetas.num)
    df = F.maxg_table(thetas, c.ks, cfg.sigma, c.n, c.n_estimates, c.mc_every, rng, cfg.quad_nodes)
    optimal = _optimal_thetas(cfg, c.ks)
    F.save(F.plot_maxg(df, optimal, cfg.sigma, c.n), df, out, "fig1_maxg_at_k")
    mc = df.dropna(subset=["dmaxg_estimator"])
    z = (mc.dmaxg_estimator - mc.dmaxg_numeric) / mc.dmaxg_estimator_se
    return {"fig1_estimator_max_abs_z": float(np.abs(z).max())}


def _figure2(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    df = F.weights_table(cfg.fig2.n)
    F.save(F.plot_weights(df), df, out, "fig2_weights")
    return {}


def _figure4(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c = cfg.fig4
    df = F.variance_table(c.ns, c.theta, c.k, cfg.sigma, c.n_estimates, rng)
    F.save(F.plot_variance(df, c.theta, c.k, c.n_estimates), df, out, "fig4_variance")
    truth = float(problem.dmaxg_at_k(c.theta, c.k, cfg.sigma, cfg.quad_nodes))
    z = (df["mean"] - truth) / df.mean_se
    table = df.pivot(index="estimator", columns="n", values="variance")
    return {
        "fig4": {
            "theta": c.theta,
            "k": c.k,
            "n_estimates": c.n_estimates,
            "dmaxg_exact": truth,
            "max_abs_z_of_means": float(np.abs(z).max()),
            "variance": {
                name: {int(n): float(v) for n, v in row.dropna().items()}
                for name, row in table.iterrows()
            },
        }
    }


def _figure5(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c = cfg.fig5
    df = F.effective_reward_table(c.n, c.ks, c.n_draws, c.n_bins, rng)
    F.save(F.plot_effective_rewards(df, c.n), df, out, "fig5_effective_rewards")
    return {}


def _training(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c = cfg.train
    optimal = _optimal_thetas(cfg, c.ks)
    frames = []
    for k in c.ks:
        path = train_theta(k, c.n, c.groups_per_step, c.steps, c.lr, c.theta0, cfg.sigma, rng)
        frames.append(
            pd.DataFrame(
                {"k": k, "step": np.arange(path.size), "theta": path, "theta_star": optimal[k]}
            )
        )
    df = pd.concat(frames, ignore_index=True)
    F.save(F.plot_training(df, c.n), df, out, "train_theta")
    return {"trained_theta": {int(k): float(p.theta.iloc[-1]) for k, p in df.groupby("k")}}


def _estimators(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c = cfg.estimators
    df = compare.estimator_table(
        list(c.thetas), c.ns, c.k, cfg.sigma, c.n_estimates, c.z_significant,
        tuple(cfg.theta_star_bounds), cfg.quad_nodes, rng,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "estimators_bias_variance.csv", index=False)
    shown = df[df.theta_label == df.theta_label.iloc[0]]
    F.save(F.plot_variance_all(shown, c.n_estimates), shown, out, "fig4plus_variance")
    skipped = df[df.skipped.fillna("") != ""].drop_duplicates("estimator")
    return {
        "estimators": {
            "k": c.k,
            "n_estimates": c.n_estimates,
            "z_significant": c.z_significant,
            "skipped": dict(zip(skipped.estimator, skipped.skipped, strict=True)),
        }
    }


def _train_estimators(cfg: DictConfig, rng: np.random.Generator, out: Path) -> dict[str, Any]:
    c, t = cfg.train_estimators, cfg.train
    df = compare.training_table(
        c.ks, t.n, t.groups_per_step, t.steps, t.lr, t.theta0, c.repeats, cfg.sigma,
        tuple(cfg.theta_star_bounds), cfg.quad_nodes, rng,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "train_estimators.csv", index=False)
    return {}


def _optimal_thetas(cfg: DictConfig, ks: list[int]) -> dict[int, float]:
    bounds = tuple(cfg.theta_star_bounds)
    return {int(k): problem.optimal_theta(k, cfg.sigma, bounds, cfg.quad_nodes) for k in ks}


STAGES: dict[str, Callable[[DictConfig, np.random.Generator, Path], dict[str, Any]]] = {
    "fig1_maxg_at_k": _figure1,
    "fig2_weights": _figure2,
    "fig4_variance": _figure4,
    "fig5_effective_rewards": _figure5,
    "train_theta": _training,
    "estimators": _estimators,
    "train_estimators": _train_estimators,
}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every stage in order, each with its own seeded generator; returns the summary."""
    out = Path(to_absolute_path(cfg.out_dir))
    torch.set_num_threads(cfg.torch_threads)
    start = time.perf_counter()
    ks = sorted({*cfg.fig1.ks, *cfg.train.ks})
    summary: dict[str, Any] = {
        "sigma": cfg.sigma,
        "seed": cfg.seed,
        "optimal_theta": {str(k): v for k, v in _optimal_thetas(cfg, ks).items()},
    }
    # One child seed per stage: changing one stage's settings leaves the others' draws alone.
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(STAGES))
    log.info(f"toy experiment: {len(STAGES)} stages into {out}")
    for i, (name, stage) in enumerate(STAGES.items(), start=1):
        t0 = time.perf_counter()
        summary |= stage(cfg, np.random.default_rng(seeds[i - 1]), out)
        log.info(f"[{i}/{len(STAGES)}] {name:<24} {time.perf_counter() - t0:6.1f} s")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    # including interpreter start-up and imports, which dominate small runs
    summary["process_time_s"] = round(time.time() - psutil.Process().create_time(), 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        f"done in {summary['wall_time_s']:.1f} s ({summary['process_time_s']:.1f} s since "
        f"start-up); figures and summary.json in {out}"
    )
    return summary


@hydra.main(config_path="pkg://pkpo.conf", config_name="toy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    plugins.load()  # their transforms join the estimator tables
    run(cfg)


if __name__ == "__main__":
    main()
