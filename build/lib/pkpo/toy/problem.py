"""The toy problem of §5.1 and its exact max_g@k, by one-dimensional quadrature.

Policy ``x ~ N(theta, sigma^2)``, reward ``g(x) = x^2`` on [0, 1] and 0 elsewhere (Eq. 35).
With ``F`` the CDF of the reward ``Y = g(x)``, the maximum of k independent rewards has CDF
``F^k``, so ``max_g@k = E[max] = int_0^1 (1 - F(y)^k) dy`` (Y lies in [0, 1]). Substituting
``y = u^2`` makes the integrand smooth, and for u in [0, 1)

    F(u^2) = P(x < 0) + P(0 <= x <= u) + P(x > 1) = Phi((u - theta)/sigma) + Phi((theta - 1)/sigma).

The theta-derivative is taken under the integral sign (analytically), so Figure 1's
"numeric" curves need no finite differences.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import optimize, stats


def reward(x: np.ndarray) -> np.ndarray:
    """Eq. 35: ``x^2`` for x in [0, 1], else 0."""
    x = np.asarray(x, dtype=np.float64)
    return np.where((x >= 0.0) & (x <= 1.0), x * x, 0.0)


def score(x: np.ndarray, theta: float | np.ndarray, sigma: float) -> np.ndarray:
    """``d/dtheta log N(x; theta, sigma^2) = (x - theta) / sigma^2`` (the score in Eq. 18)."""
    return (x - theta) / sigma**2


def sample(
    rng: np.random.Generator, theta: float | np.ndarray, sigma: float, shape: tuple[int, ...]
) -> np.ndarray:
    """Policy draws of the given shape; an array ``theta`` must broadcast against it."""
    return theta + sigma * rng.standard_normal(shape)


@functools.lru_cache(maxsize=8)
def _nodes(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    u, w = np.polynomial.legendre.leggauss(n_nodes)
    return (u + 1.0) / 2.0, w / 2.0


def _check(k: int, sigma: float, n_nodes: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if n_nodes < 16:
        raise ValueError(f"n_nodes={n_nodes} is too few quadrature nodes (use >= 16)")


def _cdf_terms(
    theta: np.ndarray, sigma: float, n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F at the nodes, dF/dtheta at the nodes, quadrature weights times dy/du = 2u)."""
    u, w = _nodes(n_nodes)
    z = (u - theta[..., None]) / sigma
    z1 = (theta[..., None] - 1.0) / sigma
    cdf = stats.norm.cdf(z) + stats.norm.cdf(z1)
    dcdf = (stats.norm.pdf(z1) - stats.norm.pdf(z)) / sigma
    return cdf, dcdf, w * 2.0 * u


def maxg_at_k(theta: float | np.ndarray, k: int, sigma: float, n_nodes: int = 512) -> np.ndarray:
    """Exact ``max_g@k`` (Eq. 11) of the toy problem at each theta (quadrature)."""
    _check(k, sigma, n_nodes)
    cdf, _, w = _cdf_terms(np.asarray(theta, dtype=np.float64), sigma, n_nodes)
    return (1.0 - cdf**k) @ w


def dmaxg_at_k(theta: float | np.ndarray, k: int, sigma: float, n_nodes: int = 512) -> np.ndarray:
    """Exact ``d max_g@k / d theta = -int k F^(k-1) dF/dtheta dy`` at each theta."""
    _check(k, sigma, n_nodes)
    cdf, dcdf, w = _cdf_terms(np.asarray(theta, dtype=np.float64), sigma, n_nodes)
    return -(k * cdf ** (k - 1) * dcdf) @ w


def optimal_theta(k: int, sigma: float, bounds: tuple[float, float], n_nodes: int = 512) -> float:
    """The theta maximising max_g@k (Figure 1's k-optimal policy), by bounded Brent search."""
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"optimal_theta: bounds must be (low, high) with low < high, got {bounds}")
    res = optimize.minimize_scalar(
        lambda t: -float(maxg_at_k(t, k, sigma, n_nodes)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-8},
    )
    if not res.success:
        raise RuntimeError(f"optimal_theta: search failed for k={k}: {res.message}")
    return float(res.x)
