"""Estimators against an exact all-subsets oracle, plus edge cases, stability and errors.

The oracle enumerates every size-k subset with ``itertools.combinations`` and does exact
rational arithmetic with ``fractions.Fraction``; it follows the paper's subset definitions
(Eq. 5, 15, 27, 29, 33) and shares no code with ``pkpo.estimators``.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from pkpo import estimators as E

# ----------------------------------------------------------------------------- oracle


def _subsets(idx, k):
    return list(itertools.combinations(idx, k))


def oracle_rho(g, k):
    n = len(g)
    subs = _subsets(range(n), k)
    return sum(max(g[j] for j in sub) for sub in subs) / Fraction(len(subs))


def oracle_S(g, i, k, universe):
    """Eq. 27 on ``universe``: 1/C(|U|,k) * sum over size-k subsets of U containing i."""
    total = sum(max(g[j] for j in sub) for sub in _subsets(universe, k) if i in sub)
    return total / Fraction(math.comb(len(universe), k))


def oracle_s(g, k):
    return [oracle_S(g, i, k, range(len(g))) for i in range(len(g))]


def oracle_sloo(g, k):
    n = len(g)
    out = []
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        base = sum(oracle_S(g, j, k, rest) for j in rest) / Fraction(n - 1)
        out.append(oracle_S(g, i, k, range(n)) - base)
    return out


def oracle_sloo_minus_one(g, k):
    n = len(g)
    out = []
    for i in range(n):
        subs = [sub for sub in _subsets(range(n), k) if i in sub]
        total = sum(max(g[j] for j in sub) - max(g[j] for j in sub if j != i) for sub in subs)
        out.append(total / Fraction(math.comb(n, k)))
    return out


def oracle_sloo_centred(g, k):
    """Each subset containing i centred on rho of the rewards without i."""
    n = len(g)
    out = []
    for i in range(n):
        rest = [g[j] for j in range(n) if j != i]
        out.append(oracle_S(g, i, k, range(n)) - Fraction(k, n) * oracle_rho(rest, k))
    return out


def oracle_binary(f, k):
    """Eq. 8 through the subset count of its proof (A.3): m_i / C(n, k)."""
    n = len(f)
    return [
        Fraction(
            sum(1 for sub in _subsets(range(n), k) if i in sub and any(f[j] for j in sub)),
            math.comb(n, k),
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------- test data

_rng = np.random.default_rng(1234)


def _reward_cases():
    """(label, rewards) pairs for n = 1..10 covering every reward kind the estimators accept."""
    cases = []
    for n in range(1, 11):
        cases.append((f"cont{n}", _rng.normal(size=n)))
        cases.append((f"int01_{n}", _rng.integers(0, 2, size=n)))
        cases.append((f"bool{n}", _rng.integers(0, 2, size=n).astype(bool)))
        cases.append((f"float01_{n}", _rng.integers(0, 2, size=n).astype(np.float64)))
        cases.append((f"ties{n}", _rng.integers(0, 3, size=n) * 0.25))
        cases.append((f"const{n}", np.full(n, 0.7)))
        cases.append((f"neg{n}", -np.abs(_rng.normal(size=n)) - 3.0))
        cases.append((f"offset{n}", 1e6 + _rng.uniform(size=n)))
    return cases


CASES = _reward_cases()


def _exact(g):
    return [Fraction(float(x)) for x in np.asarray(g, dtype=np.float64)]


def _assert_close(got, want, g):
    """1e-12 relative to the rewards' scale (values near zero make pure relative moot)."""
    scale = max(1.0, float(np.max(np.abs(np.asarray(g, dtype=np.float64)))))
    want = np.array([float(w) for w in want])
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=0, atol=1e-12 * scale)


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize("label,g", CASES, ids=[c[0] for c in CASES])
def test_all_functions_match_all_subsets_oracle(label, g):
    n = len(g)
    ge = _exact(g)
    for k in range(1, n + 1):
        _assert_close(E.rho(g, k), [oracle_rho(ge, k)], g)
        _assert_close(E.s(g, k), oracle_s(ge, k), g)
        if k < n:
            _assert_close(E.sloo(g, k), oracle_sloo(ge, k), g)
            _assert_close(E.sloo_centred(g, k), oracle_sloo_centred(ge, k), g)
        if k >= 2:
            _assert_close(E.sloo_minus_one(g, k), oracle_sloo_minus_one(ge, k), g)
        if label.startswith(("int01", "bool", "float01")):
            _assert_close(E.binary_weights(g, k), oracle_binary([int(x) for x in g], k), g)
            c = int(np.sum(g))
            codex = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            _assert_close(E.pass_at_k(n, c, k), [codex], g)
            _assert_close(E.rho(g, k), [codex], g)


def test_integer_rewards_are_not_truncated():
    g = np.array([0, 1, 2], dtype=np.int64)
    out = E.sloo(g, 2)
    assert out.dtype == np.float64
    # A worked example: [-1, -1, 1/3].
    np.testing.assert_allclose(out, [-1.0, -1.0, 1.0 / 3.0], rtol=0, atol=1e-15)


# ---------------------------------------------------------------------- edge cases


def test_k1_reductions():
    g = np.array([0.3, -1.0, 2.5, 0.0])
    n = len(g)
    others = (g.sum() - g) / (n - 1)
    np.testing.assert_allclose(E.rho(g, 1), g.mean(), rtol=1e-15)
    np.testing.assert_allclose(E.s(g, 1), g / n, rtol=1e-15)
    np.testing.assert_allclose(E.sloo(g, 1), g / n - others / (n - 1), rtol=1e-14)
    np.testing.assert_allclose(E.sloo_centred(g, 1), (g - others) / n, rtol=1e-14)
    np.testing.assert_allclose(E.binary_weights(np.array([1, 0, 1]), 1), [1 / 3, 0, 1 / 3])


def test_k_equals_n():
    g = np.array([0.2, 0.9, -0.4])
    np.testing.assert_allclose(E.rho(g, 3), 0.9)
    np.testing.assert_allclose(E.s(g, 3), [0.9, 0.9, 0.9])
    # Tang et al.: max minus max of the others.
    np.testing.assert_allclose(E.sloo_minus_one(g, 3), [0.0, 0.9 - 0.2, 0.0])
    for fn in (E.sloo, E.sloo_centred):
        with pytest.raises(ValueError, match="no size-k subset without sample i"):
            fn(g, 3)


def test_n_equals_one():
    g = np.array([[0.5], [2.0]])
    np.testing.assert_array_equal(E.rho(g, 1), [0.5, 2.0])
    np.testing.assert_array_equal(E.s(g, 1), g)
    with pytest.raises(ValueError, match="k=n=1"):
        E.sloo(g, 1)
    with pytest.raises(ValueError, match="k=2 > n=1"):
        E.sloo_minus_one(g, 2)


def test_sloo_minus_one_k1_names_alternatives():
    with pytest.raises(ValueError, match=r"sloo\(g, 1\).*'loo'"):
        E.sloo_minus_one(np.zeros(4), 1)


# ----------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    "fn", [E.s, E.sloo, E.sloo_centred, E.sloo_minus_one, E.rho], ids=lambda f: f.__name__
)
def test_batched_equals_per_group_and_keeps_shape(fn):
    g = _rng.normal(size=(3, 4, 7))
    out = fn(g, 3)
    assert out.shape == g.shape[:-1] if fn is E.rho else out.shape == g.shape
    for a, b in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(out[a, b], fn(g[a, b], 3), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bool])
def test_torch_in_torch_out(dtype):
    g = torch.tensor(_rng.integers(0, 2, size=(5, 6)), dtype=dtype)
    out = E.sloo_minus_one(g, 3)
    assert isinstance(out, torch.Tensor) and out.shape == g.shape
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float64)
    want = E.sloo_minus_one(g.to(torch.float64).numpy(), 3)
    np.testing.assert_allclose(out.double().numpy(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.randn(64, 32, dtype=torch.float64)
    for fn in (E.s, E.sloo, E.sloo_minus_one, E.sloo_centred):
        out = fn(g.cuda(), 4)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), fn(g, 4))


# ---------------------------------------------------------------------------- ties


@pytest.mark.parametrize("fn", [E.s, E.sloo, E.sloo_centred, E.sloo_minus_one])
@pytest.mark.parametrize("n", [8, 300])  # both the dense (n <= 128) and cumsum paths
def test_ties_do_not_depend_on_order(fn, n):
    g = np.random.default_rng(n).integers(0, 3, size=n) * 0.5
    out = fn(g, 3)
    for value in np.unique(g):
        tied = out[g == value]
        assert np.all(tied == tied[0]), f"{fn.__name__}: tied rewards got {tied}"
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(len(g))
        np.testing.assert_array_equal(fn(g[perm], 3), out[perm])


# ----------------------------------------------------------------------- stability


@pytest.mark.parametrize("k", [1, 2, 64, 2048, 4096, 8191, 8192])
def test_large_n_is_finite_and_consistent(k):
    n = 8192
    g = np.random.default_rng(k).uniform(size=(2, n))
    r = E.rho(g, k)
    assert np.all(np.isfinite(r))
    # max_g@k lies between the mean (k = 1) and the maximum (k = n).
    assert np.all(r >= g.mean(-1) - 1e-12) and np.all(r <= g.max(-1) + 1e-12)
    fns = [E.s] + ([E.sloo, E.sloo_centred] if k < n else []) + ([E.sloo_minus_one] * (k > 1))
    for fn in fns:
        assert np.all(np.isfinite(fn(g, k))), fn.__name__
    # The weights of rho sum to one: rho of a constant is the constant.
    np.testing.assert_allclose(E.rho(np.full(n, 3.0), k), 3.0, rtol=1e-11)


def test_large_n_weights_match_lgamma():
    """C(4096, 2048) overflows float64; compare weights with a log-gamma oracle."""
    n, k = 4096, 2048
    p = np.arange(1, n + 1)
    with np.errstate(divide="ignore"):
        lg = np.vectorize(math.lgamma)
        logw = np.where(
            p >= k,
            lg(p) - lg(k) - lg(np.maximum(p - k + 1, 1)) - (lg(n + 1) - lg(k + 1) - lg(n - k + 1)),
            -np.inf,
        )
    # rho of the step vector 1[position >= p] is the tail sum of weights from p up.
    thresholds = np.arange(n - 300, n)
    steps = (np.arange(n)[None, :] >= thresholds[:, None]).astype(np.float64)
    tails = np.cumsum(np.exp(logw)[::-1])[::-1]
    np.testing.assert_allclose(E.rho(steps, k), tails[thresholds], rtol=1e-9)


def test_float32_large_n_close_to_float64():
    g = np.random.default_rng(0).uniform(size=(4, 4096))
    for fn in (E.s, E.sloo_minus_one):
        f32 = fn(torch.tensor(g, dtype=torch.float32), 1024).double().numpy()
        np.testing.assert_allclose(f32, fn(g, 1024), rtol=0, atol=1e-5)


def test_pass_at_k_vectorised_and_stable():
    n = np.array([16, 16, 100, 8192, 8192])
    c = np.array([0, 3, 1, 1, 4096])
    got = E.pass_at_k(n, c, 4)
    want = [
        1 - Fraction(math.comb(int(a) - int(b), 4), math.comb(int(a), 4))
        for a, b in zip(n, c, strict=True)
    ]
    np.testing.assert_allclose(got, [float(w) for w in want], rtol=1e-12)
    big = E.pass_at_k(np.array([8192]), np.array([4096]), 2048)
    assert np.isfinite(big).all() and 0.999 < big[0] <= 1.0
    t = E.pass_at_k(torch.tensor([10, 10]), torch.tensor([2, 10]), 3)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), [1 - math.comb(8, 3) / math.comb(10, 3), 1.0])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [E.rho, E.s, E.sloo, E.sloo_minus_one, E.sloo_centred])
def test_bad_input_errors(fn):
    g = np.zeros((3, 4))
    with pytest.raises(ValueError, match="k must be >= 1"):
        fn(g, 0)
    with pytest.raises(ValueError, match="Corollary 2"):
        fn(g, 5)
    with pytest.raises(ValueError, match="k must be an integer"):
        fn(g, 2.5)
    bad = g.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"group index \(2,\), sample 1 is not finite"):
        fn(bad, 2)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        fn(torch.tensor(bad), 2)
    with pytest.raises(ValueError, match="last axis .* is empty"):
        fn(np.zeros((3, 0)), 1)
    with pytest.raises(ValueError, match="must be numeric"):
        fn(np.array([["a", "b"]]), 1)
    with pytest.raises(ValueError, match="must be numeric"):
        fn(torch.zeros(2, 3, dtype=torch.complex64), 1)


def test_binary_weights_rejects_non_binary():
    with pytest.raises(ValueError, match=r"0.5 at group index \(1,\) is not 0 or 1"):
        E.binary_weights(np.array([[1, 0], [0.5, 1]]), 1)


def test_pass_at_k_errors():
    with pytest.raises(ValueError, match="0 <= c <= n"):
        E.pass_at_k(np.array([4, 4]), np.array([1, 5]), 2)
    with pytest.raises(ValueError, match="Corollary 2"):
        E.pass_at_k(3, 1, 4)


# ------------------------------------------- the O(n k) reference, and both code paths


@pytest.mark.parametrize("n", [2, 5, 7])
def test_reference_implementation_matches_oracle(n):
    """experiments/reference_estimators.py (the benchmark's baseline) is itself exact."""
    from experiments import reference_estimators as R

    g = np.round(_rng.normal(size=(1, n)), 1)  # rounding makes ties likely
    ge = _exact(g[0])
    for k in range(1, n + 1):
        _assert_close(R.s(g, k)[0], oracle_s(ge, k), g)
        if k < n:
            _assert_close(R.sloo(g, k)[0], oracle_sloo(ge, k), g)
        if k >= 2:
            _assert_close(R.sloo_minus_one(g, k)[0], oracle_sloo_minus_one(ge, k), g)


@pytest.mark.parametrize("n", [64, 128, 129, 300])
def test_dense_and_cumsum_paths_match_reference(n):
    """Small groups use a cached matrix, large ones cumulative sums; both match the
    O(n k) reference on either side of the switch."""
    from experiments import reference_estimators as R

    g = np.round(_rng.normal(size=(3, n)), 2)
    for k in (1, 2, 17, n - 1, n):
        for name in ("s", "sloo", "sloo_centred", "sloo_minus_one", "rho"):
            if (name in ("sloo", "sloo_centred") and k == n) or (
                name == "sloo_minus_one" and k < 2
            ):
                continue
            got, want = getattr(E, name)(g, k), getattr(R, name)(g, k)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{name} k={k}")


@pytest.mark.parametrize("fn", [E.rho, E.s])
@pytest.mark.parametrize("scalar", [3.0, np.float64(3.0), np.array(3.0)])
def test_a_scalar_is_not_a_group_of_rewards(fn, scalar) -> None:
    with pytest.raises(ValueError, match=r"rewards must (be a numpy array|have shape)"):
        fn(scalar, 1)
