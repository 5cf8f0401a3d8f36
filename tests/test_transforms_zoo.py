"""The other published group advantages against direct implementations of their sources.

Each oracle below is written from the source's own formula, one group at a time with loops
over samples or subsets (``itertools`` + ``fractions`` where the formula is rational), and
shares no code with ``pkpo.transforms``. Unbiasedness is checked by exact enumeration of
every reward configuration of a small discrete policy (no Monte Carlo error), and where a
source makes no such claim the bias is pinned to a value computed by hand.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from pkpo import estimators as E
from pkpo import transforms as T

NEW = ("maxpo", "maxrl", "passk_training", "grpo", "dr_grpo", "grpo_passk")
BINARY_ONLY = tuple(name for name in NEW if T.spec(name).binary_only)

# ------------------------------------------------------------------------- oracles


def _max(values) -> Fraction:
    """max over a possibly empty collection, the empty max being 0 (MaxPO at k = 1)."""
    return max(values, default=Fraction(0))


def pkpo_advantage(g, j, k, universe) -> Fraction:
    """PKPO's Eq. 33 on sample set ``universe``: 1/C(|U|, k) times the sum over its size-k
    subsets I containing j of ``max_I g - max_{I without j} g``."""
    subs = [sub for sub in itertools.combinations(universe, k) if j in sub]
    total = sum(_max(g[m] for m in sub) - _max(g[m] for m in sub if m != j) for sub in subs)
    return total / Fraction(math.comb(len(universe), k))


def oracle_maxpo(g, k):
    """The leave-two-out definition: PKPO's advantage minus 1/n times the PKPO advantages
    of the other samples recomputed on the group without i."""
    n = len(g)
    out = []
    for i in range(n):
        rest = [m for m in range(n) if m != i]
        base = sum(pkpo_advantage(g, j, k, rest) for j in rest) / n
        out.append(pkpo_advantage(g, i, k, range(n)) - base)
    return out


def oracle_maxrl(r, k):
    mean = Fraction(sum(r), len(r))
    return [Fraction(0) if mean == 0 else (x - mean) / mean for x in r]


def oracle_passk_training(r, k):
    """Chen et al.: rho = 1 - C(n-c,k)/C(n,k), sigma = sqrt(rho(1-rho)), two values."""
    n, c = len(r), sum(1 for x in r if x == 1)
    rho = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    sigma = math.sqrt(rho * (1 - rho)) + 1e-6
    wrong = 1 - rho - Fraction(math.comb(n - c - 1, k - 1), math.comb(n - 1, k - 1)) if c < n else 0
    return [float(1 - rho) / sigma if x == 1 else float(wrong) / sigma for x in r]


def oracle_grpo(r, k):
    mean = Fraction(sum(r), len(r))
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))  # Bessel's n - 1
    return [float(x - mean) / (std + 1e-6) for x in r]


def oracle_dr_grpo(r, k):
    mean = Fraction(sum(r), len(r))
    return [x - mean for x in r]


def oracle_grpo_passk(r, k):
    """verl's rule: the first index of the maximum gets max - second largest, others 0."""
    best = max(range(len(r)), key=lambda i: (r[i], -i))
    second = sorted(r, reverse=True)[1]
    return [r[i] - second if i == best else Fraction(0) for i in range(len(r))]


ORACLES = {
    "maxpo": oracle_maxpo,
    "maxrl": oracle_maxrl,
    "passk_training": oracle_passk_training,
    "grpo": oracle_grpo,
    "dr_grpo": oracle_dr_grpo,
    "grpo_passk": oracle_grpo_passk,
}


def ks(name: str, n: int) -> list[int]:
    if name == "maxpo":
        return list(range(1, n))
    if name == "passk_training":
        return list(range(1, n + 1))
    return [min(3, n)]  # the others ignore k


def reward_cases(binary_only: bool):
    rng = np.random.default_rng(16)
    for n in range(1, 11):
        cases = {
            "binary": rng.integers(0, 2, n).astype(float),
            "all-fail": np.zeros(n),
            "all-pass": np.ones(n),
        }
        if not binary_only:
            cases |= {
                "continuous": rng.uniform(-1, 2, n),
                "tied": rng.choice([0.0, 0.25, 1.0], n),
                "constant": np.full(n, 0.7),
            }
        yield from ((label, g) for label, g in cases.items())


CASES = [
    (name, label, g, k)
    for name in NEW
    for label, g in reward_cases(name in BINARY_ONLY)
    if len(g) >= T.spec(name).min_n
    for k in ks(name, len(g))
]


@pytest.mark.parametrize(
    ("name", "label", "g", "k"), CASES, ids=[f"{c[0]}-{c[1]}-n{len(c[2])}-k{c[3]}" for c in CASES]
)
def test_matches_the_source_formula(name, label, g, k):
    exact = [Fraction(float(x)) for x in g]
    want = np.array([float(v) for v in ORACLES[name](exact, k)])
    np.testing.assert_allclose(T.transform(name, g[None], k)[0], want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- types and shapes


def _valid_rewards(name: str, shape, rng) -> np.ndarray:
    if name in BINARY_ONLY:
        return rng.integers(0, 2, shape).astype(float)
    return rng.choice([0.0, 0.5, 1.0, 0.3], shape)


@pytest.mark.parametrize("name", NEW)
def test_batched_numpy_and_torch_agree_with_per_group(name):
    g = _valid_rewards(name, (2, 3, 7), np.random.default_rng(1))
    out = T.transform(name, g, 3)
    assert isinstance(out, np.ndarray) and out.shape == g.shape and out.dtype == np.float64
    per_group = np.stack([T.transform(name, row[None], 3)[0] for row in g.reshape(-1, 7)])
    np.testing.assert_allclose(out.reshape(-1, 7), per_group, rtol=0, atol=1e-14)
    got = T.transform(name, torch.from_numpy(g), 3)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), out, rtol=0, atol=1e-14)
    f32 = T.transform(name, torch.from_numpy(g).float(), 3)
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), out, rtol=1e-5, atol=1e-5)
    ints = T.transform(name, g.astype(np.int64) if name in BINARY_ONLY else g, 3)
    np.testing.assert_allclose(ints, out, rtol=0, atol=1e-14)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", BINARY_ONLY)
def test_binary_only_methods_reject_other_rewards(name):
    g = np.array([[1.0, 0.0, 1.0], [0.0, 0.5, 1.0]])
    with pytest.raises(
        ValueError, match=rf"{name}: reward 0.5 at group index \(1,\) is not 0 or 1 \(sample 1\)"
    ):
        T.transform(name, g, 2)


@pytest.mark.parametrize(
    ("name", "g", "k", "message"),
    [
        ("maxpo", np.zeros((1, 4)), 5, r"maxpo: k=5 > n=4"),
        ("maxpo", np.zeros((1, 4)), 4, r"maxpo: k=n=4 .* no size-k subset"),
        ("maxpo", np.zeros((1, 1)), 1, r"maxpo: k=n=1"),
        ("maxpo", np.zeros((1, 4)), 0, r"maxpo: k must be >= 1"),
        ("passk_training", np.zeros((1, 4)), 5, r"passk_training: k=5 > n=4"),
        ("passk_training", np.zeros((1, 4)), 2.0, r"passk_training: k must be an integer"),
        ("grpo", np.zeros((2, 1)), 1, r"grpo: needs n >= 2 .*sample std.*n=1"),
        ("grpo_passk", np.zeros((2, 1)), 1, r"grpo_passk: needs n >= 2 .*second-best"),
        ("grpo", np.array([[0.0, np.nan]]), 1, r"grpo: reward nan .* sample 1 is not finite"),
        ("maxpo", np.array([[0.0, np.inf, 1]]), 1, r"maxpo: reward inf"),
        ("dr_grpo", np.array([["a", "b"]]), 1, "dr_grpo: rewards must be numeric"),
    ],
)
def test_unsupported_inputs_are_named(name, g, k, message):
    with pytest.raises(ValueError, match=message):
        T.transform(name, g, k)


# ------------------------------------------------------ which equals which


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_benchmark_reference_maxpo_matches_the_oracle(n):
    """``experiments.reference_estimators.maxpo`` (the benchmark's O(n^2) loop) is exact."""
    from experiments import reference_estimators as R

    g = np.random.default_rng(n).choice([0.0, 0.25, 0.5, 1.0, 0.8], size=(3, n))
    for k in range(1, n):
        want = [[float(v) for v in oracle_maxpo([Fraction(x) for x in row], k)] for row in g]
        np.testing.assert_allclose(R.maxpo(g, k), want, rtol=1e-12, atol=1e-14)


def test_maxpo_is_exactly_pkpo_sloo_centred_and_centred():
    g = np.random.default_rng(2).uniform(size=(64, 16))
    for k in (1, 2, 4, 8, 15):
        maxpo = T.transform("maxpo", g, k)
        np.testing.assert_array_equal(maxpo, T.transform("pkpo_sloo_centred", g, k))
        assert np.abs(maxpo.sum(-1)).max() < 1e-13
    # PKPO's own advantages are not centred: they sum to k (rho_k - rho_{k-1}) > 0
    for k in (2, 4, 8):
        assert T.transform("pkpo_sloo_minus_one", g, k).sum(-1).min() > 1e-3


def test_grpo_passk_is_exactly_tang_on_any_rewards():
    rng = np.random.default_rng(3)
    for g in (
        rng.uniform(size=(32, 9)),
        rng.integers(0, 2, (32, 9)),
        rng.choice([0, 1, 2], (32, 9)),
    ):
        np.testing.assert_allclose(
            T.transform("grpo_passk", g, 9), T.transform("tang", g, 9), rtol=0, atol=1e-15
        )


def test_passk_training_at_k1_is_grpo_with_the_population_std():
    r = np.random.default_rng(4).integers(0, 2, (32, 8)).astype(float)
    centred = r - r.mean(-1, keepdims=True)
    want = centred / (r.std(-1, keepdims=True) + T.STD_EPS)  # numpy's std: ddof = 0
    np.testing.assert_allclose(T.transform("passk_training", r, 1), want, rtol=1e-12)
    grpo = T.transform("grpo", r, 1)  # Bessel's std: smaller by sqrt((n-1)/n) where not 0
    mixed = (r.sum(-1) > 0) & (r.sum(-1) < 8)
    ratio = grpo[mixed] / want[mixed]
    np.testing.assert_allclose(ratio, math.sqrt(7 / 8), rtol=1e-5)


def test_dr_grpo_is_loo_times_n_minus_one_over_n():
    g = np.random.default_rng(5).uniform(size=(8, 6))
    np.testing.assert_allclose(T.transform("dr_grpo", g, 1), 5 / 6 * T.transform("loo", g, 1))


# ----------------------------------------------- bias, by exact enumeration

# Binary rewards from a logistic policy: success probability p = sigmoid(theta), so the
# score of a sample is d/dtheta log pi(y) = y - p and d p / d theta = p (1 - p).


def binary_expected_update(name: str, n: int, k: int, p: float) -> float:
    """E[sum_i A_i * score_i] over all 2^n outcomes of a group, one at a time."""
    total = 0.0
    for y in itertools.product((0.0, 1.0), repeat=n):
        y = np.array(y)
        weight = p ** y.sum() * (1 - p) ** (n - y.sum())
        total += weight * float(T.transform(name, y[None], k)[0] @ (y - p))
    return total


N_ENUM = 7
PROBS = (0.05, 0.3, 0.5, 0.8)


@pytest.mark.parametrize("p", PROBS)
def test_unbiased_on_binary_rewards(p):
    n, dp = N_ENUM, p * (1 - p)
    for k in range(1, n):  # d/dtheta pass@k = k (1-p)^(k-1) dp
        want = k * (1 - p) ** (k - 1) * dp
        assert binary_expected_update("maxpo", n, k, p) == pytest.approx(want, rel=1e-12)
    pass_n = n * (1 - p) ** (n - 1) * dp
    assert binary_expected_update("grpo_passk", n, n, p) == pytest.approx(pass_n, rel=1e-12)
    assert binary_expected_update("dr_grpo", n, 1, p) == pytest.approx((n - 1) * dp, rel=1e-12)


@pytest.mark.parametrize("p", PROBS)
def test_maxrl_expects_n_times_the_gradient_truncated_at_n_minus_one(p):
    """MaxRL's estimator 1/c sum_correct score is unbiased for grad J_n = sum_{j<=n}
    (1-p)^(j-1) dp; zeroing all-fail groups removes the j = n term (hand derivation)."""
    n, dp = N_ENUM, p * (1 - p)
    grad_j = [sum((1 - p) ** (j - 1) for j in range(1, m + 1)) * dp for m in (n - 1, n)]
    got = binary_expected_update("maxrl", n, 1, p)
    assert got == pytest.approx(n * grad_j[0], rel=1e-12)
    assert got - n * grad_j[1] == pytest.approx(-n * (1 - p) ** (n - 1) * dp, rel=1e-9)


def _by_count(n, p, advantage):
    """The same expectation as ``binary_expected_update``, summed over the count c of correct
    samples with hand-written per-sample advantages ``advantage(c) -> (A_correct, A_wrong)``."""
    total = 0.0
    for c in range(n + 1):
        a_pass, a_fail = advantage(c)
        total += (
            math.comb(n, c)
            * p**c
            * (1 - p) ** (n - c)
            * (c * a_pass * (1 - p) - (n - c) * a_fail * p)
        )
    return total


def test_grpo_bias_is_the_hand_computed_one():
    n = N_ENUM

    def z_scores(c):
        if c in (0, n):
            return 0.0, 0.0
        std = math.sqrt(c * (n - c) / (n * (n - 1)))
        return (1 - c / n) / (std + 1e-6), (-c / n) / (std + 1e-6)

    gain = {}
    for p in PROBS:
        got = binary_expected_update("grpo", n, 1, p)
        assert got == pytest.approx(_by_count(n, p, z_scores), rel=1e-10)
        gain[p] = got / ((n - 1) * p * (1 - p))  # against the unbiased dr_grpo expectation
    # dividing by the group std weights prompts by about 1/sqrt(p(1-p)): the expected
    # update is not a fixed multiple of the pass@1 gradient
    assert gain[0.05] > gain[0.3] > gain[0.5] > 1.5


@pytest.mark.parametrize("p", PROBS)
@pytest.mark.parametrize("k", [2, 4])
def test_passk_training_bias_is_the_hand_computed_one(p, k):
    n = N_ENUM

    def chen(c):
        rho = 1 - math.comb(n - c, k) / math.comb(n, k)
        sigma = math.sqrt(rho * (1 - rho)) + 1e-6
        wrong = math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1) if c < n else 0.0
        return (1 - rho) / sigma, (1 - rho - wrong) / sigma

    got = binary_expected_update("passk_training", n, k, p)
    assert got == pytest.approx(_by_count(n, p, chen), rel=1e-10)
    # without the 1/sigma the sub-group advantage (max_I - rho), i.e. n/k * binary_weights
    # - rho, expects (n/k - 1) grad pass@k exactly; sigma makes the gain depend on p
    grad = k * (1 - p) ** (k - 1) * p * (1 - p)
    unnormalised = 0.0
    for y in itertools.product((0.0, 1.0), repeat=n):
        y = np.array(y)[None]
        adv = n / k * E.binary_weights(y, k)[0] - E.rho(y, k)[0]
        unnormalised += p ** y.sum() * (1 - p) ** (n - y.sum()) * float(adv @ (y[0] - p))
    assert unnormalised == pytest.approx((n / k - 1) * grad, rel=1e-12)
    assert got / ((n / k - 1) * grad) > 1.5


# Continuous rewards: a categorical policy over three actions with rewards VALUES (ties in
# a group are common), softmax(theta). Exact expectations over all 3^n groups, and the
# target gradient of E[max of k rewards] by autograd of its closed form.

VALUES = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)


def expected_max_gradient(theta: torch.Tensor, k: int) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    cdf = torch.softmax(theta, 0).cumsum(0)  # VALUES ascending
    below = torch.cat([torch.zeros(1, dtype=theta.dtype), cdf[:-1]])
    (VALUES * (cdf**k - below**k)).sum().backward()
    return theta.grad


def categorical_expected_update(name: str, theta: torch.Tensor, n: int, k: int) -> torch.Tensor:
    probs = torch.softmax(theta, 0)
    actions = torch.tensor(list(itertools.product(range(3), repeat=n)))  # [3^n, n]
    rewards = VALUES[actions]
    weight = probs[actions].prod(-1)
    score = torch.eye(3, dtype=theta.dtype)[actions] - probs  # [3^n, n, 3]
    adv = T.transform(name, rewards, k)
    return torch.einsum("c,cn,cnd->d", weight, adv, score)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_maxpo_unbiased_for_max_at_k_on_continuous_rewards(k):
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    got = categorical_expected_update("maxpo", theta, 5, k)
    torch.testing.assert_close(got, expected_max_gradient(theta, k), rtol=1e-10, atol=1e-13)


def test_grpo_passk_and_dr_grpo_unbiased_on_continuous_rewards():
    theta = torch.tensor([-0.5, 0.2, 0.4], dtype=torch.float64)
    n = 5
    got = categorical_expected_update("grpo_passk", theta, n, n)
    torch.testing.assert_close(got, expected_max_gradient(theta, n), rtol=1e-10, atol=1e-13)
    got = categorical_expected_update("dr_grpo", theta, n, 1)
    want = (n - 1) * expected_max_gradient(theta, 1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
