"""Unbiased estimators of pass@k / max_g@k and of their policy gradients.

Pure math, no I/O. Every public function takes rewards whose last axis holds one group of
``n`` samples of the same prompt, with any leading batch shape ``[..., n]``: a numpy array
(or a list of numbers), computed with numpy, or a torch tensor, computed with torch on its
device. The result is of the same kind. torch is never required (:mod:`pkpo.arrays`).

Notation (paper §3): sort a group ascending, ``g_1 <= ... <= g_n`` (1-based), and let
``a_p = C(p-1, k-1) / C(n, k)`` be the weight of the p-th smallest reward in the
max_g@k estimator (Eq. 12-14). Everything below is a handful of weighted cumulative
sums over the sorted rewards, so each call costs one sort plus O(n) per group
(Theorems 5-7); the weight vectors depend on (n, k) only and are built once.

Conventions and decisions:

* Integer and boolean rewards are computed in float64 (the paper's Listing 1 would
  truncate them); half precision is computed in float32 and the result cast back, so a
  floating input's dtype is the output's.
* Equal rewards get bit-identical outputs: every tied run takes the value computed at
  the run's last sorted position, so the result never depends on how ties are ordered.
* ``k`` must satisfy 1 <= k <= n: for k > n no unbiased estimator exists (Corollary 2).
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from pkpo import arrays
from pkpo.arrays import Array

__all__ = [
    "as_float",
    "binary_weights",
    "check_binary",
    "check_k",
    "pass_at_k",
    "restore",
    "rho",
    "s",
    "sloo",
    "sloo_centred",
    "sloo_minus_one",
]


# --------------------------------------------------------------------------- weights


@functools.lru_cache(maxsize=256)
def _max_weights(n: int, k: int) -> np.ndarray:
    """``a_p = C(p-1, k-1) / C(n, k)`` for p = 1..n (Eq. 13-14), float64.

    Built top-down from ``a_n = k/n`` with the ratio ``a_{p-1}/a_p = (p-k)/(p-1)``, so no
    binomial coefficient is ever formed (C(4096, 2048) overflows float64); small weights
    underflow gracefully to zero instead of producing inf/inf.
    """
    a = np.zeros(n)
    if k == 1:
        a[:] = 1.0 / n
        return a
    p = np.arange(n, k, -1, dtype=np.float64)  # p = n, n-1, ..., k+1
    ratios = (p - k) / (p - 1)
    a[k - 1 :] = (k / n) * np.concatenate(([1.0], np.cumprod(ratios)))[::-1]
    return a


@functools.lru_cache(maxsize=256)
def _offdiag_weights(n: int, k: int) -> np.ndarray:
    """``d_j = C(j-2, k-2) / C(n, k)`` for j = 1..n (Eq. 21 over C(n, k)); zero if k = 1.

    Uses ``C(j-2, k-2) = C(j-1, k-1) (k-1)/(j-1)``, i.e. ``d_j = a_j (k-1)/(j-1)``.
    """
    d = np.zeros(n)
    if k >= 2:
        j = np.arange(2, n + 1, dtype=np.float64)
        d[1:] = _max_weights(n, k)[1:] * (k - 1) / (j - 1)
    return d


@functools.lru_cache(maxsize=64)
def _log_fail_products(n_max: int, k: int) -> np.ndarray:
    """Extended-precision ``L[m] = sum_{i=k+1}^{m} log(1 - k/i)`` for m = 0..n_max, so that
    ``C(n-c, k)/C(n, k) = exp(L[n] - L[n-c])`` (Eq. 3 in product form) when n - c >= k.

    Kept in extended precision: for c << n the difference of two float64 prefix sums
    would lose ~|L| * eps of absolute accuracy in a quantity of size ~c*k/n.
    """
    i = np.arange(1, n_max + 1, dtype=np.longdouble)
    terms = np.where(i > k, np.log1p(-k / np.maximum(i, k + 1)), 0)
    return np.concatenate(([0], np.cumsum(terms)))


_TABLES = {"max": _max_weights, "offdiag": _offdiag_weights}


def _weights(kind: str, n: int, k: int, like: Array) -> Array:
    """A weight vector in ``like``'s library, dtype and device, built once per (n, k)."""
    return arrays.constant(_TABLES[kind], (n, k), like)


# ----------------------------------------------------------------- input handling


def check_k(k: object, n: int, name: str) -> int:
    """``k`` as an int if it is an integer in ``[1, n]``, else a ValueError naming ``name``
    (the one home of this check: estimators, transforms, schedules and the adapters)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"{name}: k must be an integer, got {k!r} ({type(k).__name__})")
    k = int(k)
    if k < 1:
        raise ValueError(f"{name}: k must be >= 1, got k={k}")
    if k > n:
        raise ValueError(
            f"{name}: k={k} > n={n}: no unbiased estimator of pass@k exists with fewer "
            f"than k samples (Corollary 2); sample at least k per group or lower k"
        )
    return k


def as_float(g: Array, name: str, check_finite: bool = True) -> tuple[Array, object]:
    """Validate rewards ``g`` (``[..., n]``, numeric: a numpy array, a list of numbers or a
    torch tensor) and return (``g`` as floats to compute with, the dtype of the result for
    :func:`restore`); errors name ``name`` and, for a non-finite reward, its group.

    Integers and bools are computed in float64; half precision is computed in float32 and
    its result cast back. ``check_finite=False`` is for callers that sort first: ``_Sorted``
    then only needs to look at the two ends of each sorted group (NaN and +inf sort last,
    -inf first).
    """
    if arrays.is_tensor(g):
        t, numeric = g, not g.is_complex()
    elif isinstance(g, np.ndarray | list | tuple):
        t = np.asarray(g)
        numeric = t.dtype.kind in "biuf"
    else:
        raise ValueError(
            f"{name}: rewards must be a numpy array, a list of numbers or a torch tensor, "
            f"got {type(g).__name__}"
        )
    if not numeric:
        raise ValueError(
            f"{name}: rewards must be numeric (bool, int or float), got dtype {t.dtype}"
        )
    if t.ndim == 0:
        raise ValueError(f"{name}: rewards must have shape [..., n]; got a scalar")
    if t.shape[-1] == 0:
        raise ValueError(f"{name}: the last axis (one group of n samples) is empty")
    xp = arrays.namespace(t)
    dtype = arrays.float_dtype_of(t)
    if dtype is None:  # bool or integer
        dtype = xp.float64
    compute = dtype if dtype in (xp.float64, xp.float32) else xp.float32  # half: float32
    t = arrays.cast(t, compute)
    if check_finite:
        _check_finite(t, name)
    return t, dtype


def restore(out: Array, dtype: object) -> Array:
    """``out`` as the result dtype that :func:`as_float` returned with its input."""
    return arrays.cast(out, dtype)


def _prepare(g: Array, k: object, name: str, check_finite: bool = False):
    t, dtype = as_float(g, name, check_finite)
    return t, dtype, check_k(k, t.shape[-1], name)


def _require_subsets_without_i(k: int, n: int, name: str) -> None:
    if k == n:
        raise ValueError(
            f"{name}: k=n={n} leaves no size-k subset without sample i to form the "
            f"leave-one-out baseline; use k < n or sloo_minus_one (which covers k = n)"
        )


def _check_finite(t: Array, name: str) -> None:
    bad = ~arrays.namespace(t).isfinite(t)
    if bool(bad.any()):
        flat = arrays.first_true(bad)
        where = np.unravel_index(flat, tuple(t.shape))
        group = tuple(int(i) for i in where[:-1])
        value = t.reshape(-1)[flat].item()
        raise ValueError(
            f"{name}: reward {value} at group index {group}, sample {int(where[-1])} is not "
            f"finite; score failed samples as 0 (or any finite value) before transforming"
        )


# Up to this group size the sorted-space maps run as one cached n x n matmul and ties are
# found with a batched binary search (torch): fewer kernel launches win while O(n^2) per
# group is small.
_DENSE_MAX_N = 128


class _Sorted:
    """One group-wise ascending sort, shared by everything computed from it."""

    def __init__(self, t: Array, name: str):
        self.input = t
        # Unstable is fine: ``unsort`` makes tied values bit-identical anyway.
        self.values, self.order = arrays.sort(t)
        # NaN and +inf sort last and -inf first, so the ends tell whether a group has a
        # non-finite reward (a finite difference that overflows only costs a full scan).
        spread = self.values[..., -1] - self.values[..., 0]
        if not bool(arrays.namespace(t).isfinite(spread).all()):
            _check_finite(t, name)  # raises, naming the first offending group

    def unsort(self, v: Array) -> Array:
        """Map values at sorted positions back to the caller's order.

        Every member of a run of equal rewards takes the value at the run's last sorted
        position (the rank of ``<=``), so ties never depend on the order they came in.
        """
        n = v.shape[-1]
        differs = self.values[..., 1:] != self.values[..., :-1]
        if bool(differs.all()):  # no ties (continuous rewards): a plain inverse permutation
            return arrays.scatter(self.order, v)
        if n <= _DENSE_MAX_N:
            last = arrays.last_of_run(self.values, self.input)
            if last is not None:
                return arrays.gather(v, last)
        xp = arrays.namespace(v)
        is_last = xp.concatenate([differs, xp.ones_like(differs[..., :1])], -1)
        run_end = arrays.suffix_min(xp.where(is_last, arrays.positions(v), n))
        return arrays.scatter(self.order, arrays.gather(v, run_end))


# ----------------------------------------------------------------- computations


def _rho_sorted(gs: Array, k: int) -> Array:
    """Eq. 12/14 on ascending-sorted rewards."""
    return gs @ _weights("max", gs.shape[-1], k, gs)


def _s_sorted(gs: Array, k: int) -> Array:
    """Eq. 19 on ascending-sorted rewards: ``s_i = a_i g_i + sum_{j>i} d_j g_j``."""
    n = gs.shape[-1]
    a = _weights("max", n, k, gs)
    d = _weights("offdiag", n, k, gs)
    suffix = arrays.suffix_sum(gs * d)  # sum_{j>=i} d_j g_j
    out = gs * a
    out[..., :-1] += suffix[..., 1:]
    return out


def _loo_rho_sorted(gs: Array, k: int) -> Array:
    """``rho(g without sample i, k)`` for every sorted position i, in O(n) per group.

    Removing the i-th smallest leaves the samples below it at their sorted positions and
    shifts the ones above it down by one, so with the (n-1)-sample weights ``a'``:
    ``rho_{-i} = sum_{j<i} a'_j g_j + sum_{j>i} a'_{j-1} g_j`` (a prefix and a suffix sum).
    """
    n = gs.shape[-1]
    w = _weights("max", n - 1, k, gs)
    below = (gs[..., :-1] * w).cumsum(-1)  # below[..., m] = sum_{j<=m} a'_j g_j
    above = arrays.suffix_sum(gs[..., 1:] * w)  # above[..., m] = sum_{j>m} ...
    out = arrays.namespace(gs).zeros_like(gs)
    out[..., 1:] += below
    out[..., :-1] += above
    return out


def _transform_sorted(gs: Array, k: int, k_base: int | None, scale: float) -> Array:
    """``s(g, k) - scale * rho(g without i, k_base)`` on sorted rewards (``s`` alone if
    ``k_base`` is None). Linear in ``gs``: small groups use its matrix, built once."""
    n = gs.shape[-1]
    if n <= _DENSE_MAX_N:
        return gs @ arrays.constant(_dense_map, (n, k, k_base, scale), gs)
    out = _s_sorted(gs, k)
    return out if k_base is None else out - scale * _loo_rho_sorted(gs, k_base)


def _dense_map(n: int, k: int, k_base: int | None, scale: float) -> np.ndarray:
    """The n x n matrix M with ``_transform_sorted(g) = g @ M``: the cumulative-sum path
    applied to the unit vectors (float64), so both paths compute the same function."""
    eye = np.eye(n)
    out = _s_sorted(eye, k)
    if k_base is not None:
        out = out - scale * _loo_rho_sorted(eye, k_base)
    return out


# ----------------------------------------------------------------- public API


def pass_at_k(n: Array | int, c: Array | int, k: int) -> Array:
    """Unbiased pass@k from c correct out of n samples (Eq. 3): ``1 - C(n-c, k) / C(n, k)``.

    Uses the product form ``C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)`` as a difference
    of prefix sums of ``log(1 - k/i)`` in extended precision, finished with ``expm1``: no
    binomial is formed and small pass rates keep full relative precision. ``n`` and ``c``
    broadcast against each other (numpy, or torch: the result is on their device); ``k``
    is one integer. Computed on the CPU (this is a metric, not a hot path).
    Raises ValueError for n < 1, c < 0, c > n, non-integer counts, or k > n.
    """
    tensor = next((x for x in (n, c) if arrays.is_tensor(x)), None)
    counts = []
    for label, x in (("n", n), ("c", c)):
        arr = arrays.to_numpy(x)
        if arr.dtype.kind not in "iuf" or not np.all(arr == np.round(arr)):
            raise ValueError(f"pass_at_k: {label} must hold whole numbers, got {arr!r}")
        counts.append(arr.astype(np.int64))
    nn, cc = np.broadcast_arrays(*counts)
    bad = (nn < 1) | (cc < 0) | (cc > nn)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pass_at_k: need n >= 1 and 0 <= c <= n; at index {i} n={nn.flat[i]}, c={cc.flat[i]}"
        )
    n_max = int(nn.max()) if nn.size else 1
    k = check_k(k, int(nn.min()) if nn.size else n_max, "pass_at_k")
    log_prod = _log_fail_products(n_max, k)
    log_ratio = (log_prod[nn] - log_prod[nn - cc]).astype(np.float64)
    out = np.where(nn - cc < k, 1.0, -np.expm1(log_ratio)) + 0.0  # + 0.0: no -0.0
    if tensor is None:
        return out
    return arrays.namespace(tensor).as_tensor(out, device=tensor.device)


def rho(g: Array, k: int) -> Array:
    """Unbiased max_g@k from one group of n rewards (Eq. 12/14), shape ``[...]``.

    ``rho = sum_p C(p-1, k-1)/C(n, k) g_(p)`` over the ascending order statistics: the
    average over all C(n, k) subsets of their maximum (Theorem 3). For 0/1 rewards this is
    the Codex estimator ``1 - C(n-c, k)/C(n, k)`` of Eq. 3. k = 1 gives the mean; k = n the
    maximum; n = 1 (with k = 1) returns the reward itself.
    """
    t, dtype, k = _prepare(g, k, "rho")
    return restore(_rho_sorted(_Sorted(t, "rho").values, k), dtype)


def s(g: Array, k: int) -> Array:
    """Per-sample rewards of the unbiased max_g@k gradient, no baseline (Eq. 18-21).

    ``s_i = (1/C(n,k)) * sum over size-k subsets containing i of their maximum`` (Eq. 27),
    computed in sorted order as ``s_i = a_i g_i + sum_{j>i} d_j g_j`` (Theorem 5).
    k = 1 reduces to ``g_i / n`` (plain REINFORCE, scaled by 1/n); k = n gives every sample
    ``max(g)``. For 0/1 rewards this equals ``binary_weights`` (Eq. 8).
    """
    t, dtype, k = _prepare(g, k, "s")
    return restore(_apply(t, "s", k, None, 0.0), dtype)


def sloo(g: Array, k: int) -> Array:
    """``s`` with the paper's leave-one-out baseline over subsets without i (Eq. 29-32).

    ``s_i^(loo) = s_i - 1/(n-1) * sum_{j != i} S(j, k, [n] \\ {i})``; the sum is
    ``k * rho(g without i, k)``, so the baseline is ``k/(n-1) * rho(g_{-i}, k)``. It does not
    depend on sample i, hence the estimator stays unbiased (Corollary 1). Note it is not
    centred: its scale k/(n-1) differs from s's k/n (see ``sloo_centred``).
    k = 1 reduces to ``g_i/n - mean_{j != i}(g_j)/(n-1)``.

    Raises ValueError for k = n: no size-k subset excludes i, so there is no baseline
    (use ``sloo_minus_one``, which covers k = n).
    """
    t, dtype, k = _prepare(g, k, "sloo")
    n = t.shape[-1]
    _require_subsets_without_i(k, n, "sloo")
    return restore(_apply(t, "sloo", k, k, k / (n - 1)), dtype)


def sloo_centred(g: Array, k: int) -> Array:
    """``s`` minus ``k/n * rho(g without i, k)``: Eq. 29's baseline rescaled to be centred.

    Beyond the paper. Each size-k subset containing i is centred on the max_g@k estimate
    from the other samples, so the baseline has the same k/n scale as ``s`` (unlike
    ``sloo``'s k/(n-1)) and still does not depend on sample i (unbiased by Corollary 1).
    k = 1 is exactly ``(g_i - mean_{j != i} g_j) / n``, the RLOO advantage over n.
    Raises ValueError for k = n, as ``sloo`` does.
    """
    t, dtype, k = _prepare(g, k, "sloo_centred")
    n = t.shape[-1]
    _require_subsets_without_i(k, n, "sloo_centred")
    return restore(_apply(t, "sloo_centred", k, k, k / n), dtype)


def sloo_minus_one(g: Array, k: int) -> Array:
    """``s`` with the max_g@(k-1) leave-one-out baseline (Eq. 33-34): the paper's PKPO.

    ``s_i^(loo-1) = 1/C(n,k) * sum over size-k subsets I containing i of
    (max_I g - max_{I \\ i} g)`` ``= s_i - k/n * rho(g without i, k-1)``. k = n is the
    estimator of Tang et al. (2025). Defined for k >= 2.

    Raises ValueError for k = 1: the baseline would be a maximum over k-1 = 0 samples.
    """
    t, dtype, k = _prepare(g, k, "sloo_minus_one")
    if k == 1:
        raise ValueError(
            "sloo_minus_one: k=1 leaves a max over k-1=0 samples as baseline; for k=1 use "
            "sloo(g, 1), sloo_centred(g, 1) or the 'loo' transform (Eq. 26), which the paper "
            "uses for k_opt=1"
        )
    return restore(_apply(t, "sloo_minus_one", k, k - 1, k / t.shape[-1]), dtype)


def check_binary(t: Array, name: str, hint: str) -> None:
    """Raise a ValueError naming the first reward of ``t`` (``[..., n]``) that is not 0 or 1
    (NaN and inf included), its group index and sample, and ``hint``."""
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        flat = arrays.first_true(bad)
        where = np.unravel_index(flat, tuple(t.shape))
        raise ValueError(
            f"{name}: reward {t.reshape(-1)[flat].item()} at group index "
            f"{tuple(int(i) for i in where[:-1])} is not 0 or 1 (sample {int(where[-1])}); "
            f"{hint}"
        )


@functools.lru_cache(maxsize=256)
def _wrong_weights(n: int, k: int) -> np.ndarray:
    """``[n + 1]``: Eq. 47's ``k/n * rho(n-1, c, k-1)`` of an incorrect sample, by c = 0..n
    (an incorrect sample sees the c correct ones among the other n-1; c = n has none)."""
    c = np.minimum(np.arange(n + 1), n - 1)
    return (k / n) * pass_at_k(n - 1, c, k - 1)


def binary_weights(f: Array, k: int) -> Array:
    """Per-sample rewards of the unbiased pass@k gradient for 0/1 correctness (Eq. 8).

    ``r_i = k/n`` if sample i is correct, else ``k/n * rho(n-1, c, k-1)`` with c the number
    of correct samples (Eq. 46-47). For k = 1, ``rho(., ., 0) = 0`` and ``r_i = f_i / n``.
    Raises ValueError if any reward is not 0 or 1.
    """
    t, dtype, k = _prepare(f, k, "binary_weights", check_finite=True)
    n = t.shape[-1]
    check_binary(t, "binary_weights", "use s() for continuous rewards")
    xp = arrays.namespace(t)
    if k >= 2:
        wrong = arrays.constant(_wrong_weights, (n, k), t)[arrays.counts(t)][..., None]
    else:
        wrong = xp.zeros_like(t)
    out = xp.where(t == 1, k / n, wrong)
    return restore(out, dtype)


def _apply(t: Array, name: str, k: int, k_base: int | None, scale: float) -> Array:
    """Sort, transform in sorted order (``_transform_sorted``), and map back."""
    srt = _Sorted(t, name)
    return srt.unsort(_transform_sorted(srt.values, k, k_base, scale))
