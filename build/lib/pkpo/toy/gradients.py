"""Policy-gradient estimators of d max_g@k / d theta for the toy problem.

Every estimator is an *advantage function* ``adv(g[..., n], k) -> [..., n]`` and the
gradient estimate is ``sum_i adv_i * d/dtheta log p(x_i | theta)`` (Eq. 18). They all share
one normalisation: the sum is an unbiased estimate of the gradient of max_g@k itself (``s``
carries the k/n factor of Eq. 19), so their variances are directly comparable (Figure 4).

The partitioned baselines of the paper's Figure 4 caption (Appendix C) split the n samples
into n/k disjoint sets of k (in draw order; the draws are i.i.d., so any fixed split is a
uniformly random one), estimate the gradient from each set and average the n/k estimates;
averaging is the k/n factor below.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pkpo import estimators as E

from . import problem

Advantages = Callable[[np.ndarray, int], np.ndarray]


def pkpo(g: np.ndarray, k: int) -> np.ndarray:
    """The paper's PKPO advantages: ``sloo_minus_one`` (Eq. 33) for k >= 2.

    For k = 1 the max_g@(k-1) baseline does not exist and the paper uses plain LOO
    (Eq. 26); here it is scaled by 1/n to keep the common normalisation, which is
    exactly ``sloo_centred(g, 1)``.
    """
    return E.sloo_centred(g, 1) if k == 1 else E.sloo_minus_one(g, k)


def _sets(g: np.ndarray, k: int) -> np.ndarray:
    """``[..., n]`` -> ``[..., n/k, k]``: consecutive samples form the disjoint sets."""
    n = g.shape[-1]
    if k < 1 or n % k:
        raise ValueError(f"partitioned estimators need n to be a multiple of k; got n={n}, k={k}")
    return g.reshape(*g.shape[:-1], n // k, k)


def _per_sample(set_values: np.ndarray, k: int) -> np.ndarray:
    """Give every sample of a set its set's value: ``[..., m]`` -> ``[..., m*k]``."""
    return np.repeat(set_values, k, axis=-1)


def naive_partitioned(g: np.ndarray, k: int) -> np.ndarray:
    """Every sample of a size-k set gets that set's max reward; sets averaged (Fig. 4)."""
    set_max = _sets(g, k).max(-1)
    return (k / g.shape[-1]) * _per_sample(set_max, k)


def naive_partitioned_baselined(g: np.ndarray, k: int) -> np.ndarray:
    """``naive_partitioned`` minus the mean max of the *other* sets (leave-one-set-out).

    The baseline of a sample depends only on samples outside its set, so the estimate stays
    unbiased (Corollary 1). Needs at least two sets (n >= 2k).
    """
    set_max = _sets(g, k).max(-1)
    m = set_max.shape[-1]
    if m < 2:
        raise ValueError(
            f"naive_partitioned_baselined: n={g.shape[-1]}, k={k} gives one set of k and no "
            f"other set to form the baseline; use n >= 2k"
        )
    others = (set_max.sum(-1, keepdims=True) - set_max) / (m - 1)
    return (k / g.shape[-1]) * _per_sample(set_max - others, k)


def sloo_minus_one_partitioned(g: np.ndarray, k: int) -> np.ndarray:
    """``sloo_minus_one`` with n = k inside each disjoint set (Tang et al.'s estimator),
    averaged over the n/k sets, with no baseline across sets (Fig. 4 caption)."""
    per_set = E.sloo_minus_one(_sets(g, k), k)
    return (k / g.shape[-1]) * per_set.reshape(g.shape)


ESTIMATORS: dict[str, Advantages] = {
    "s": E.s,
    "sloo": E.sloo,
    "sloo_minus_one": E.sloo_minus_one,
    "sloo_centred": E.sloo_centred,
    "naive_partitioned": naive_partitioned,
    "naive_partitioned_baselined": naive_partitioned_baselined,
    "sloo_minus_one_partitioned": sloo_minus_one_partitioned,
}


def defined(name: str, n: int, k: int) -> bool:
    """Whether estimator ``name`` exists for n samples and this k (no exception needed)."""
    if name in ("sloo", "sloo_centred"):
        return k < n
    if name == "sloo_minus_one":
        return 2 <= k <= n
    if name == "s":
        return 1 <= k <= n
    partitioned = n % k == 0
    if name == "naive_partitioned_baselined":
        return partitioned and n >= 2 * k
    if name == "sloo_minus_one_partitioned":
        return partitioned and k >= 2
    return partitioned


def gradient_estimates(
    advantages: Advantages, x: np.ndarray, theta: float | np.ndarray, sigma: float, k: int
) -> np.ndarray:
    """One gradient estimate (Eq. 18) per group of the draws ``x[..., n]``: shape ``[...]``.

    ``theta`` must broadcast against ``x[..., 0]``.
    """
    theta = np.asarray(theta, dtype=np.float64)[..., None]
    adv = advantages(problem.reward(x), k)
    return (adv * problem.score(x, theta, sigma)).sum(-1)
