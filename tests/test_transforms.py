"""The transform registry: names, fallbacks, and agreement with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pkpo import estimators as E
from pkpo import transforms as T
from pkpo.config import group_config


def test_registry_lists_the_paper_transforms():
    assert {"raw", "loo", "pkpo_sloo", "pkpo_sloo_minus_one", "pkpo_sloo_centred", "tang"} <= set(
        T.names()
    )
    assert T.get("raw") is T.raw and T.spec("loo").fn is T.loo


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match=r"unknown transform 'grpo_std'.*loo.*pkpo_sloo_minus_one"):
        T.transform("grpo_std", np.zeros((1, 4)), 2)


def test_loo_is_eq26_by_hand():
    g = np.array([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 6.0]])
    want = np.array(
        [[1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3], [3 - 3, 1 - 11 / 3, 2 - 10 / 3, 6 - 2]]
    )
    np.testing.assert_allclose(T.transform("loo", g, 1), want, rtol=1e-15)


def test_pkpo_k1_falls_back_to_loo_and_k2_is_sloo_minus_one():
    g = np.random.default_rng(0).uniform(size=(5, 8))
    np.testing.assert_array_equal(
        T.transform("pkpo_sloo_minus_one", g, 1), T.transform("loo", g, 1)
    )
    np.testing.assert_array_equal(T.transform("pkpo_sloo_minus_one", g, 4), E.sloo_minus_one(g, 4))


def test_tang_is_max_minus_max_of_others():
    g = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.2, 0.5, 0.1, 0.4]])
    want = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.1, 0.0, 0.0]])
    torch.testing.assert_close(T.transform("tang", g, 3), want, rtol=0, atol=1e-7)


def test_raw_returns_float_copy():
    g = np.array([[1, 0, 1]])
    out = T.transform("raw", g, 1)
    assert out.dtype == np.float64 and out is not g
    np.testing.assert_array_equal(out, g)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        T.register("loo")(lambda r, k: r)


# ------------------------------------------- each spec states what its function does


def _rewards(spec: T.Spec, n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    if spec.binary_only:
        return rng.integers(0, 2, (3, n)).astype(float)
    return rng.choice([0.0, 0.3, 0.5, 1.0], (3, n))


def _some_k(spec: T.Spec, n: int) -> int:
    return spec.k_for(n, max(1, n - 1))


@pytest.mark.parametrize("name", T.names())
def test_the_spec_states_the_fewest_samples(name):
    spec = T.spec(name)
    g = _rewards(spec, spec.min_n)
    assert T.transform(name, g, _some_k(spec, spec.min_n)).shape == g.shape
    if spec.min_n > 1:
        fewer = spec.min_n - 1
        with pytest.raises(ValueError):
            T.transform(name, _rewards(spec, fewer), _some_k(spec, fewer))


@pytest.mark.parametrize("name", T.names())
def test_the_spec_states_whether_rewards_must_be_binary(name):
    spec = T.spec(name)
    g = np.array([[1.0, 0.0, 0.5, 1.0, 0.0]])
    if spec.binary_only:
        with pytest.raises(ValueError, match="not 0 or 1"):
            T.transform(name, g, 2)
    else:
        assert np.isfinite(T.transform(name, g, 2)).all()


@pytest.mark.parametrize("name", T.names())
def test_a_transform_with_a_fixed_k_ignores_k_opt(name):
    spec = T.spec(name)
    g = _rewards(spec, 6)
    outs = [T.transform(name, g, k) for k in (1, 3, 5)]
    same = all(np.array_equal(outs[0], out) for out in outs[1:])
    assert same == (not spec.uses_k)


@pytest.mark.parametrize("name", T.names())
def test_the_transform_config_is_derived_from_the_spec(name):
    spec = T.spec(name)
    node = OmegaConf.to_container(group_config("transform", name))  # unresolved
    want = {None: None, 1: 1, "n": "${n}"}[spec.fixed_k]
    assert (node.pop("name"), node.pop("scale"), node.pop("fixed_k", None)) == (name, "paper", want)
    assert node == {}


# ------------------------------------------------------------ transform.scale = loo


def _loo_by_hand(g: np.ndarray) -> np.ndarray:
    n = g.shape[-1]
    return g - (g.sum(-1, keepdims=True) - g) / (n - 1)


@pytest.mark.parametrize("name", ["pkpo_sloo_minus_one", "pkpo_sloo_centred", "maxpo"])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_loo_scale_at_k1_is_loo(name: str, n: int) -> None:
    rng = np.random.default_rng(n)
    for g in (rng.random((6, n)), rng.integers(0, 2, (6, n)).astype(float)):
        got = T.transform(name, g, 1, scale="loo")
        np.testing.assert_allclose(got, _loo_by_hand(g), rtol=1e-12, atol=1e-12)


def test_loo_scale_of_pkpo_sloo_at_k1_is_not_loo_but_its_own_baseline() -> None:
    # Eq. 29 at k = 1: g_i/n - mean_{j!=i} g_j/(n-1); times n its baseline is n/(n-1) too big
    g = np.array([[0.0, 1.0, 0.5, 0.25, 1.0]])
    others = (g.sum(-1, keepdims=True) - g) / 4
    np.testing.assert_allclose(T.transform("pkpo_sloo", g, 1, scale="loo"), g - 5 / 4 * others)


@pytest.mark.parametrize("name", ["pkpo_sloo", "pkpo_sloo_minus_one", "pkpo_sloo_centred", "maxpo"])
def test_loo_scale_is_the_paper_transform_times_n_over_k(name: str) -> None:
    n = 8
    g = np.random.default_rng(0).random((5, n))
    for k in range(2, n):
        paper = T.transform(name, g, k)
        np.testing.assert_allclose(T.transform(name, g, k, scale="loo"), paper * n / k)


@pytest.mark.parametrize("name", ["loo", "tang", "grpo", "raw", "maxrl", "passk_training"])
def test_loo_scale_leaves_reward_scale_transforms_alone(name: str) -> None:
    g = np.random.default_rng(1).integers(0, 2, (4, 6)).astype(float)
    np.testing.assert_array_equal(T.transform(name, g, 3, scale="loo"), T.transform(name, g, 3))


@pytest.mark.parametrize("name", ["pkpo_sloo_minus_one", "pkpo_sloo_centred"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_loo_scale_expected_update_is_n_over_k_times_the_max_at_k_gradient(name, k) -> None:
    """Exact enumeration: a 3-outcome policy, all 3^4 sample sets of n = 4. The rescaled
    advantages' expected update E[sum_i A_i grad log p(x_i)] equals n/k grad max_g@k: the
    direction is the unbiased one, only the step size changes."""
    n, values = 4, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    logits = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64, requires_grad=True)
    p = torch.softmax(logits, 0)
    cdf = p.cumsum(0)  # outcomes are sorted by reward
    expected_max = (values * (cdf**k - torch.cat([cdf.new_zeros(1), cdf[:-1]]) ** k)).sum()
    (grad_rho,) = torch.autograd.grad(expected_max, logits, retain_graph=True)

    tuples = torch.cartesian_prod(*[torch.arange(3)] * n)  # [81, n]
    advantages = torch.as_tensor(T.transform(name, values[tuples], k, scale="loo"))
    log_p = torch.log(p)[tuples]  # [81, n]
    weight = log_p.sum(-1).exp().detach()  # probability of each sample set
    (grad_update,) = torch.autograd.grad((weight * (advantages * log_p).sum(-1)).sum(), logits)
    torch.testing.assert_close(grad_update, n / k * grad_rho, rtol=1e-10, atol=1e-12)


def test_unknown_scale_is_refused_by_the_transform_and_the_config(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from pkpo import config as C
    from pkpo.config import CONF_DIR

    with pytest.raises(ValueError, match="unknown transform scale 'loo_scale'; choose one of"):
        T.transform("pkpo_sloo_minus_one", np.zeros((1, 4)), 2, scale="loo_scale")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["transform.scale=bogus", f"run_dir={tmp_path}"])
    with pytest.raises(
        C.ConfigError, match=r"transform.scale='bogus' is not a scale; .*paper, loo"
    ):
        C.validate(cfg)


# ------------------------------------------------------------ extreme and odd inputs


def test_huge_rewards_do_not_overflow_where_the_advantages_fit() -> None:
    # by hand: g = (0.9, 1) x 1e308: loo = g_i - g_j = (-0.1, 0.1) x 1e308, dr_grpo half of it
    g = [0.9e308, 1e308]
    for name, want in (("loo", 1e307), ("pkpo_sloo_minus_one", 1e307), ("dr_grpo", 5e306)):
        np.testing.assert_allclose(T.transform(name, g, 1), [-want, want], rtol=1e-12)
    # z-scores are scale-free: (1, 3, 2) x 1e200 gives those of (1, 3, 2) up to eps's share
    np.testing.assert_allclose(
        T.transform("grpo", [1e200, 3e200, 2e200], 1), [-1.0, 1.0, 0.0], atol=1e-12
    )
    np.testing.assert_allclose(T.transform("grpo", [2e154, 0.0], 1), [0.5**0.5, -(0.5**0.5)])


@pytest.mark.parametrize("name", T.names())
def test_half_precision_in_is_half_precision_out(name: str) -> None:
    import torch

    rewards = [[1.0, 0.0, 1.0, 0.0]]
    want = T.transform(name, np.array(rewards), 2)  # float64
    for half in (np.array(rewards, dtype=np.float16), torch.tensor(rewards).half()):
        out = T.transform(name, half, 2)
        assert out.dtype == half.dtype, (name, type(half))
        np.testing.assert_allclose(np.asarray(out, dtype=np.float64), want, rtol=2e-3, atol=2e-3)
    out = T.transform(name, torch.tensor(rewards).bfloat16(), 2)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("name", T.names())
def test_a_list_of_rewards_is_accepted_as_an_array(name: str) -> None:
    rewards = [[1.0, 0.0, 1.0]]
    k = 2 if T.uses_k(name) else 3
    np.testing.assert_array_equal(
        T.transform(name, rewards, k), T.transform(name, np.array(rewards), k)
    )


@pytest.mark.parametrize("k", [True, 1.0, np.float64(1.0)])
def test_pkpo_sloo_minus_one_refuses_a_k_that_is_not_an_integer(k) -> None:
    with pytest.raises(ValueError, match="pkpo_sloo_minus_one: k must be an integer"):
        T.transform("pkpo_sloo_minus_one", [1.0, 0.0, 1.0], k)


def test_pkpo_sloo_minus_one_refuses_a_float_tensor_k() -> None:
    import torch

    with pytest.raises(ValueError, match="k must be an integer"):
        T.transform("pkpo_sloo_minus_one", [1.0, 0.0, 1.0], torch.tensor(1.0))
