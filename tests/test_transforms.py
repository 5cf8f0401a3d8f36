"""The transform registry: names, fallbacks, and agreement with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pkpo import estimators as E
from pkpo import transforms as T


def test_registry_lists_the_paper_transforms():
    assert {"none", "loo", "pkpo_sloo", "pkpo_sloo_minus_one", "pkpo_sloo_centred", "tang"} <= set(
        T.names()
    )


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match=r"unknown transform 'grpo'.*loo.*pkpo_sloo_minus_one"):
        T.transform("grpo", np.zeros((1, 4)), 2)


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


def test_none_returns_float_copy():
    g = np.array([[1, 0, 1]])
    out = T.transform("none", g, 1)
    assert out.dtype == np.float64 and out is not g
    np.testing.assert_array_equal(out, g)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        T.register("loo")(lambda r, k: r)
