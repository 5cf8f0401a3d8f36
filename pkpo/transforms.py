"""Reward transforms: jointly map a group's n rewards to n advantages, found by name.

The RL loop calls ``transform(name, rewards[B, n], k)`` once per step on whole groups
(row b holds the n samples of prompt b), never on a split group. Transforms are small
pure functions over arrays registered with ``@register``, so a new one is a few lines.

Scale: ``loo`` (Eq. 26) is on the reward scale, while the PKPO transforms inherit the
``k/n`` scale of ``s`` (Eq. 19). This is the paper's setup (k_opt = 1 runs use plain LOO).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pkpo import estimators as E

Rewards = np.ndarray | torch.Tensor
Transform = Callable[[Rewards, int], Rewards]

_REGISTRY: dict[str, Transform] = {}


def register(name: str) -> Callable[[Transform], Transform]:
    """Decorator: make ``fn(rewards, k) -> advantages`` available as ``transform(name, ...)``."""

    def wrap(fn: Transform) -> Transform:
        if name in _REGISTRY:
            raise ValueError(f"transform {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    """The registered transform names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Transform:
    """The transform registered as ``name``; unknown names list the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown transform {name!r}; registered transforms: {', '.join(names())}"
        ) from None


def transform(name: str, rewards: Rewards, k: int) -> Rewards:
    """Advantages ``[B, n]`` from rewards ``[B, n]`` (any ``[..., n]``) with transform ``name``.

    ``k`` is k_opt; transforms that do not use it (``none``, ``loo``, ``tang``) ignore it.
    """
    return get(name)(rewards, k)


@register("none")
def raw(rewards: Rewards, k: int) -> Rewards:
    """The rewards themselves (REINFORCE without a baseline), as floats."""
    t, is_numpy = E.as_float_tensor(rewards, "none")
    return t.clone().numpy() if is_numpy else t.clone()


@register("loo")
def loo(rewards: Rewards, k: int) -> Rewards:
    """Eq. 26: ``g_i - mean_{j != i} g_j``, the paper's k_opt = 1 baseline. Needs n >= 2."""
    t, is_numpy = E.as_float_tensor(rewards, "loo")
    n = t.shape[-1]
    if n < 2:
        raise ValueError("loo: needs n >= 2 samples per group to leave one out")
    out = t - (t.sum(-1, keepdim=True) - t) / (n - 1)
    return out.numpy() if is_numpy else out


@register("pkpo_sloo")
def pkpo_sloo(rewards: Rewards, k: int) -> Rewards:
    """Eq. 29 (``estimators.sloo``); k < n."""
    return E.sloo(rewards, k)


@register("pkpo_sloo_minus_one")
def pkpo_sloo_minus_one(rewards: Rewards, k: int) -> Rewards:
    """The paper's PKPO: Eq. 33 (``estimators.sloo_minus_one``) for k >= 2, ``loo`` for k = 1."""
    return loo(rewards, k) if k == 1 else E.sloo_minus_one(rewards, k)


@register("pkpo_sloo_centred")
def pkpo_sloo_centred(rewards: Rewards, k: int) -> Rewards:
    """``estimators.sloo_centred``: Eq. 29's baseline rescaled by k/n (beyond the paper)."""
    return E.sloo_centred(rewards, k)


@register("tang")
def tang(rewards: Rewards, k: int) -> Rewards:
    """Tang et al. (2025): ``sloo_minus_one`` with k = n (pass@n); ``k`` is ignored."""
    return E.sloo_minus_one(rewards, rewards.shape[-1])
