"""Every registered reward transform (``pkpo.transforms``) on the toy problem of §5.1.

Each transform's advantages give the gradient estimate ``sum_i A_i d/dtheta log p(x_i)``
(Eq. 18). The transforms do not share one normalisation: the PKPO ones and MaxPO estimate
``d max_g@k / d theta`` itself (the ``k/n`` scale of Eq. 19), ``tang`` and ``grpo_passk``
(Eq. 33 at k = n) estimate ``d max_g@n / d theta``, and the pass@1 baselines estimate a
multiple of ``d max_g@1 / d theta`` (``raw`` and ``loo``: n times it, ``dr_grpo``: n - 1
times). Each transform's spec states what its mean estimates (``Spec.gradient``, read by
:func:`target`); the tables report the bias against that target *and* against
``d max_g@k / d theta``.

:func:`estimator_table` is the Monte Carlo of bias, variance and realised group sums behind
Figure 4+; :func:`training_table` is the theta each transform's policy gradient settles at.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, stats

from pkpo import transforms as T

from . import problem
from .train import train_theta


@dataclass(frozen=True)
class Target:
    """What an estimator's mean estimates: ``scale * d max_g@j / d theta``.

    ``unbiased`` says whether the mean equals it exactly at every n (else it is the
    large-n limit, and the measured bias is the finite-n departure from it).
    """

    label: str
    j: int
    scale: float
    unbiased: bool


NO_TARGET = Target("", 1, np.nan, False)
"""Stands in for the target of a transform whose spec states none: its target columns are
empty (NaN) and it is measured against ``d max_g@k / d theta`` only."""


def reward_sd(theta: float, sigma: float) -> float:
    """Standard deviation of the reward g(x) = x^2 on [0, 1] (Eq. 35) under N(theta, sigma^2)."""
    pdf = stats.norm(theta, sigma).pdf
    moments = [integrate.quad(lambda x, p=p: x**p * pdf(x), 0.0, 1.0)[0] for p in (2, 4)]
    return float(np.sqrt(moments[1] - moments[0] ** 2))


def target(name: str, n: int, k: int, theta: float, sigma: float) -> Target | None:
    """What transform ``name``'s Eq. 18 estimate is an (un)biased estimate of, from its
    spec (:class:`pkpo.transforms.Gradient`); None if the spec states nothing.

    E.g. ``pkpo_*`` and ``maxpo``: Eq. 19's k/n scale makes the sum unbiased for
    ``d max_g@k``; ``raw`` and ``loo`` (Eq. 26): ``E[sum_i g_i score_i] = n d E[g]``, and
    max_g@1 = E[g]; ``grpo`` divides by the group's sample std, so no multiple of a
    gradient is its exact mean: its large-n limit divides by the reward's true std instead.
    """
    gradient = T.spec(name).gradient
    if gradient is None:
        return None
    scale = gradient.scale(n)
    if gradient.per_reward_sd:
        scale /= reward_sd(theta, sigma)
    return Target(gradient.label, gradient.order(n, k), float(scale), gradient.exact)


def _theta_values(
    thetas: Sequence[float | str], k: int, sigma: float, bounds: tuple[float, float], n_nodes: int
) -> list[tuple[str, float]]:
    """``(label, theta)`` pairs; the entry ``"k_optimal"`` is the argmax of max_g@k."""
    out = []
    for t in thetas:
        if t == "k_optimal":
            out.append(("k_optimal", problem.optimal_theta(k, sigma, bounds, n_nodes)))
        elif isinstance(t, str):
            raise ValueError(f"theta entries are numbers or 'k_optimal', got {t!r}")
        else:
            out.append((f"{float(t):g}", float(t)))
    return out


def _moments(values: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, its s.e., variance, the s.e. of the variance ``sqrt((m4 - var^2) / N)``)."""
    mean, var = values.mean(), values.var(ddof=1)
    m4 = np.mean((values - mean) ** 4)
    size = values.size
    return mean, np.sqrt(var / size), var, np.sqrt(max(m4 - var**2, 0.0) / size)


def estimator_table(
    thetas: Sequence[float | str],
    ns: Sequence[int],
    k: int,
    sigma: float,
    n_estimates: int,
    z_significant: float,
    theta_bounds: tuple[float, float],
    n_nodes: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per (theta, n, registered transform): Monte Carlo bias, variance, group sums.

    All transforms at one (theta, n) see the same ``n_estimates`` groups of n draws.
    ``bias_maxg_k`` is the mean estimate minus the exact ``d max_g@k / d theta``,
    ``bias_target`` minus the transform's own :func:`target`; each with its z = bias / s.e.
    and ``*_significant`` when ``|z| > z_significant``. ``scaled_variance`` is the variance
    over ``target.scale^2``: every estimator on the scale of the gradient it targets.
    ``group_sum_*`` are the mean and s.d. over groups of ``sum_i A_i``. A transform that
    rejects the toy's continuous rewards gets a row with only ``skipped`` (its error).
    """
    rows = []
    for label, theta in _theta_values(thetas, k, sigma, theta_bounds, n_nodes):
        dmaxg = functools.partial(problem.dmaxg_at_k, theta, sigma=sigma, n_nodes=n_nodes)
        for n in ns:
            x = problem.sample(rng, theta, sigma, (n_estimates, n))
            g, score = problem.reward(x), problem.score(x, theta, sigma)
            for name in T.names():
                row = {"theta_label": label, "theta": theta, "n": n, "k": k, "estimator": name}
                try:
                    adv = T.transform(name, g, k)
                except ValueError as err:  # e.g. binary-only transforms on continuous rewards
                    rows.append(row | {"skipped": str(err)})
                    continue
                tgt = target(name, n, k, theta, sigma) or NO_TARGET
                truth_k = float(dmaxg(k))
                want = np.nan if tgt is NO_TARGET else tgt.scale * float(dmaxg(tgt.j))
                mean, mean_se, var, var_se = _moments((adv * score).sum(-1))
                sums = adv.sum(-1)
                row |= {
                    "target": tgt.label,
                    "target_unbiased": tgt.unbiased,
                    "target_scale": tgt.scale,
                    "dmaxg_k": truth_k,
                    "target_value": want,
                    "mean": mean,
                    "mean_se": mean_se,
                    "bias_maxg_k": mean - truth_k,
                    "z_maxg_k": (mean - truth_k) / mean_se,
                    "bias_target": mean - want,
                    "z_target": (mean - want) / mean_se,
                    "variance": var,
                    "variance_se": var_se,
                    "scaled_variance": var / tgt.scale**2,
                    "group_sum_mean": sums.mean(),
                    "group_sum_sd": sums.std(ddof=1),
                    "skipped": "",
                }
                for kind in ("maxg_k", "target"):
                    row[f"{kind}_significant"] = bool(abs(row[f"z_{kind}"]) > z_significant)
                rows.append(row)
    return pd.DataFrame(rows)


def training_table(
    ks: Sequence[int],
    n: int,
    groups: int,
    steps: int,
    lr: float,
    theta0: float,
    repeats: int,
    sigma: float,
    theta_bounds: tuple[float, float],
    n_nodes: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per (registered transform, k): the theta ``train_theta`` ends at.

    ``theta_mean`` and ``theta_sd`` are over ``repeats`` independent runs; ``theta_target``
    is the exact argmax of the max_g@j the transform targets (:func:`target`; for ``grpo``
    that of its large-n limit, max_g@1) and ``theta_star_k`` that of max_g@k. Transforms
    that reject the toy's rewards are skipped with the reason.
    """
    optimum = functools.cache(lambda j: problem.optimal_theta(j, sigma, theta_bounds, n_nodes))
    probe = problem.reward(problem.sample(np.random.default_rng(0), theta0, sigma, (1, n)))
    rows = []
    for name in T.names():
        for k in ks:
            row = {"estimator": name, "k": k, "n": n, "theta_star_k": optimum(k)}
            try:
                T.transform(name, probe, k)
            except ValueError as err:
                rows.append(row | {"skipped": str(err)})
                continue
            tgt = target(name, n, k, theta0, sigma) or NO_TARGET
            advantages = functools.partial(T.transform, name)
            ends = [
                train_theta(k, n, groups, steps, lr, theta0, sigma, rng, advantages)[-1]
                for _ in range(repeats)
            ]
            rows.append(
                row
                | {
                    "target": ""
                    if tgt is NO_TARGET
                    else f"max_g@{tgt.j}" + ("" if tgt.unbiased else ", large-n limit"),
                    "theta_target": np.nan if tgt is NO_TARGET else optimum(tgt.j),
                    "theta_mean": float(np.mean(ends)),
                    "theta_sd": float(np.std(ends, ddof=1)) if repeats > 1 else np.nan,
                    "repeats": repeats,
                    "skipped": "",
                }
            )
    return pd.DataFrame(rows)
