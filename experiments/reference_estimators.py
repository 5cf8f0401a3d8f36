"""A direct, per-group O(n k) implementation of the estimators, for benchmarking only.

The naive baseline that ``pkpo.estimators`` is timed against (``bench_estimators``), written
straight from the paper's equations: one group at a time in plain Python, the weights of
each group rebuilt as a product of k ratios per index (Eq. 14, 20-21), then one running sum
over the sorted group (Eq. 19/49 for ``s``, Eq. 30-32 for the leave-one-out baselines).
No weight caching, no vectorisation across groups: O(n k) per group by design.

Every function takes rewards as a 2-D float array ``[B, n]`` (one group per row) and
returns float64 numpy arrays, like the batched implementation on numpy input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------- weights, 1-based


def max_weight(n: int, k: int, i: int) -> float:
    """``mu_i / C(n, k)`` (Eq. 13) as Eq. 14's product of k ratios; zero for i < k."""
    if i < k:
        return 0.0
    return k / (n - k + 1) * math.prod((i - j) / (n - j + 1) for j in range(1, k))


def offdiag_weight(n: int, k: int, j: int) -> float:
    """``m_ij / C(n, k)`` for any i < j (Eq. 21), i.e. ``C(j-2, k-2) / C(n, k)``.

    Cancelling factors as in Eq. 14: ``k(k-1)/(n(n-1)) * prod_{t=1}^{k-2} (j-1-t)/(n-1-t)``.
    """
    if k < 2 or j < k:
        return 0.0
    return (
        k * (k - 1) / (n * (n - 1)) * math.prod((j - 1 - t) / (n - 1 - t) for t in range(1, k - 1))
    )


# ----------------------------------------------------------- one sorted group


def _rho_sorted(gs: Sequence[float], k: int) -> float:
    """Eq. 14 on an ascending group."""
    n = len(gs)
    return sum(max_weight(n, k, i) * gs[i - 1] for i in range(1, n + 1))


def _s_sorted(gs: Sequence[float], k: int) -> list[float]:
    """Eq. 19-21 on an ascending group, right to left as in Eq. 48-49."""
    n = len(gs)
    out = [0.0] * n
    tail = 0.0  # sum_{j > i} m_ij g_j / C(n, k): m_ij does not depend on i (Eq. 21)
    for i in range(n, 0, -1):
        out[i - 1] = max_weight(n, k, i) * gs[i - 1] + tail
        tail += offdiag_weight(n, k, i) * gs[i - 1]
    return out


def _loo_sum_sorted(gs: Sequence[float], k: int) -> list[float]:
    """``b_i^(k)`` of Eq. 30 for every i of an ascending group: ``k * rho(g without i, k)``.

    Dropping the i-th smallest keeps the samples below it in place and moves the ones above
    down one position of the remaining n-1; ``w[p-1]`` is k times the weight of position p.
    """
    n = len(gs)
    w = [k * max_weight(n - 1, k, p) for p in range(1, n)]
    b = [0.0] * n
    b[0] = sum(w[j - 2] * gs[j - 1] for j in range(2, n + 1))  # Eq. 31
    for i in range(1, n):  # Eq. 32: sample i moves back in, sample i+1 moves out
        b[i] = b[i - 1] + w[i - 1] * (gs[i - 1] - gs[i])
    return b


# ------------------------------------------------------------ per-group driver


def _per_group(rewards: np.ndarray, on_sorted: Callable[[list[float]], list[float]]) -> np.ndarray:
    """Sort each row, apply ``on_sorted`` to it, put the results back in the row's order."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(rewards)
    for row, g in enumerate(rewards):
        order = np.argsort(g, kind="stable")
        out[row, order] = on_sorted(g[order].tolist())
    return out


def rho(g: np.ndarray, k: int) -> np.ndarray:
    """Unbiased max_g@k of every row (Eq. 14), shape ``[B]``."""
    return np.array([_rho_sorted(sorted(row.tolist()), k) for row in np.asarray(g, float)])


def s(g: np.ndarray, k: int) -> np.ndarray:
    """Per-sample gradient weights without baseline (Eq. 19)."""
    return _per_group(g, lambda gs: _s_sorted(gs, k))


def _baselined(g: np.ndarray, k: int, k_base: int, scale: float) -> np.ndarray:
    """``s_i - scale * b_i^(k_base)`` for every row."""

    def on_sorted(gs: list[float]) -> list[float]:
        base = _loo_sum_sorted(gs, k_base)
        return [si - scale * bi for si, bi in zip(_s_sorted(gs, k), base, strict=True)]

    return _per_group(g, on_sorted)


def sloo(g: np.ndarray, k: int) -> np.ndarray:
    """Eq. 29: ``s_i - b_i^(k) / (n-1)``."""
    return _baselined(g, k, k, 1.0 / (np.shape(g)[-1] - 1))


def sloo_centred(g: np.ndarray, k: int) -> np.ndarray:
    """``s_i - b_i^(k) / n``: Eq. 29 with the baseline rescaled to s's k/n."""
    return _baselined(g, k, k, 1.0 / np.shape(g)[-1])


def sloo_minus_one(g: np.ndarray, k: int) -> np.ndarray:
    """Eq. 33-34: ``s_i - k / (n (k-1)) * b_i^(k-1)``; needs k >= 2."""
    return _baselined(g, k, k - 1, k / (np.shape(g)[-1] * (k - 1)))


def binary_weights(f: np.ndarray, k: int) -> np.ndarray:
    """Eq. 8 for 0/1 rewards: k/n if correct, else ``k/n * rho(n-1, c, k-1)`` (Eq. 47)."""
    f = np.asarray(f, dtype=np.float64)
    n = f.shape[-1]
    out = np.empty_like(f)
    for row, fr in enumerate(f):
        c = int(fr.sum())
        wrong = _rho_sorted([0.0] * (n - 1 - c) + [1.0] * c, k - 1) if k >= 2 else 0.0
        out[row] = np.where(fr == 1, k / n, k / n * wrong)
    return out


def pass_at_k(n: int, c: np.ndarray, k: int) -> np.ndarray:
    """Eq. 3 for each count in ``c``, as Eq. 14 on n sorted 0/1 rewards (Theorems 1, 3)."""
    return np.array([_rho_sorted([0.0] * (n - ci) + [1.0] * ci, k) for ci in np.asarray(c)])


# ------------------------------------------------------------------- MaxPO, O(n^2)


def _pkpo_sorted(gs: np.ndarray, k: int, a: np.ndarray, d: np.ndarray, w: np.ndarray):
    """PKPO's advantages (Eq. 33) on one ascending group of m rewards, s for k = 1.

    ``a``, ``d``: Eq. 13 and 21 weights for (m, k); ``w``: Eq. 13 weights for (m-1, k-1).
    ``s_i = a_i g_i + sum_{j>i} d_j g_j`` (Eq. 19) and the baseline ``k/m rho(g_{-i}, k-1)``
    from a prefix and a suffix sum (the samples above i move down one position).
    """
    m = len(gs)
    s = a * gs
    s[:-1] += np.cumsum((d * gs)[::-1])[::-1][1:]
    if k == 1:
        return s
    rho_without = np.zeros(m)
    rho_without[1:] += np.cumsum(gs[:-1] * w)
    rho_without[:-1] += np.cumsum((gs[1:] * w)[::-1])[::-1]
    return s - k / m * rho_without


def maxpo(g: np.ndarray, k: int) -> np.ndarray:
    """MaxPO's leave-two-out advantages by their definition, O(n^2) per group (k < n).

    ``A_i = a_i(g) - 1/n * sum_{j != i} a_j(g without i)`` with ``a`` PKPO's advantages:
    for each i, PKPO is recomputed on the n-1 other rewards (O(n) each, weights built once
    per group as products of k ratios) and summed.
    """
    g = np.asarray(g, dtype=np.float64)
    n = g.shape[-1]
    full = s(g, 1) if k == 1 else sloo_minus_one(g, k)

    def weights(m: int, kk: int, fn) -> np.ndarray:
        return np.array([fn(m, kk, p) for p in range(1, m + 1)]) if kk >= 1 else np.zeros(m)

    a = weights(n - 1, k, max_weight)
    d = weights(n - 1, k, offdiag_weight)
    w = weights(n - 2, k - 1, max_weight)

    def on_sorted(gs: list[float]) -> list[float]:
        gs = np.array(gs)
        base = [_pkpo_sorted(np.delete(gs, p), k, a, d, w).sum() / n for p in range(n)]
        return (-np.array(base)).tolist()

    return full + _per_group(g, on_sorted)
