"""PKPO advantage estimators for verl (checked against verl 0.9.1's registry and trainer code).

verl looks advantage estimators up by name in ``core_algos.ADV_ESTIMATOR_REGISTRY`` (filled
by ``register_adv_est``) and calls them with keyword arguments ``token_level_rewards``
``[bs, L]``, ``response_mask`` ``[bs, L]``, ``config`` (the ``algorithm`` config) and, when
the batch has them, ``index`` (the ``uid`` of each sample's prompt) and ``reward_baselines``.
This module registers one estimator per transform in ``pkpo.transforms``, under one rule:
the verl name is ``pkpo_`` + the transform's name, unless that already starts with
``pkpo_`` (verl has its own ``grpo``, ``grpo_passk``, ``rloo``, ...). So ``pkpo_sloo``,
``pkpo_sloo_minus_one`` (the paper's PKPO) and ``pkpo_sloo_centred`` keep their names and
``tang`` is ``pkpo_tang``, ``maxpo`` is ``pkpo_maxpo``, ``grpo`` is ``pkpo_grpo``, etc.
Transforms that read k_opt take it from ``algorithm.pkpo_k``; the others (``uses_k`` is
False: ``tang``, ``loo``, ``grpo``, ...) need no k. A transform registered after this
module was imported is picked up by ``estimators()`` and ``register()``.

The sequence reward is ``token_level_rewards.sum(-1)`` (verl puts an outcome reward on the
last response token); groups are the samples sharing an ``index`` value, wherever they sit
in the batch, and must all have the same size n. The advantage of a sample is broadcast over
its response tokens; ``returns`` equal the advantages, as in verl's other outcome estimators.

Registration happens when this module is imported and verl is installed. verl imports the
entry points of group ``verl.plugins`` on ``import verl`` (in every Ray worker too), so
declaring ``pkpo = "pkpo.integrations.verl"`` there makes ``algorithm.adv_estimator=pkpo_*``
work with no code change; ``VERL_USE_EXTERNAL_MODULES=pkpo.integrations.verl`` does the same.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from pkpo import transforms

#: prefix of every verl estimator name this module registers
PREFIX = "pkpo_"

Estimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def verl_name(transform_name: str) -> str:
    """The verl estimator name of a pkpo transform: ``pkpo_`` + name, unless already there."""
    return transform_name if transform_name.startswith(PREFIX) else PREFIX + transform_name


def transform_of(name: str) -> str:
    """The pkpo transform behind verl estimator ``name``; unknown names list the known ones."""
    for transform_name in transforms.names():
        if verl_name(transform_name) == name:
            return transform_name
    known = ", ".join(verl_name(t) for t in transforms.names())
    raise ValueError(f"unknown PKPO verl estimator {name!r}; registered: {known}")


def group_rows(index: Any, batch_size: int, name: str) -> torch.Tensor:
    """Row numbers ``[num_groups, n]``: row g lists the samples whose index is the g-th uid.

    Samples keep their batch order inside a group. Raises ValueError when groups differ in
    size: the transforms need n samples of every prompt (filter or pad whole groups).
    """
    if index is None:
        raise ValueError(
            f"{name}: needs `index` (the batch's 'uid' of each sample's prompt) to form groups"
        )
    index = np.asarray(index)
    if index.shape != (batch_size,):
        raise ValueError(f"{name}: index has shape {index.shape}, expected ({batch_size},)")
    uids, group_of, sizes = np.unique(index, return_inverse=True, return_counts=True)
    if len(set(sizes.tolist())) > 1:
        histogram = ", ".join(f"{c} group(s) of {s}" for s, c in sorted(Counter(sizes).items()))
        smallest = uids[np.argmin(sizes)]
        raise ValueError(
            f"{name}: every group (samples sharing an index/uid) must have the same size n; "
            f"got {histogram} (e.g. uid {smallest!r} has {sizes.min()}). "
            "Filter or keep whole groups before computing advantages"
        )
    rows = np.argsort(group_of.reshape(-1), kind="stable").reshape(len(uids), sizes[0])
    return torch.as_tensor(rows)


def k_opt(config: Mapping[str, Any] | None, name: str) -> int:
    """``pkpo_k`` from verl's ``algorithm`` config (a DictConfig, AlgoConfig or dict)."""
    k = None if config is None else config.get("pkpo_k")
    if k is None:
        raise ValueError(
            f"{name}: set k_opt in the algorithm config, e.g. `+algorithm.pkpo_k=4` on the "
            "command line (the '+' adds a key verl's config does not declare)"
        )
    return k


def pkpo_advantage(
    name: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) ``[bs, L]`` of verl estimator ``name`` (see ``verl_name``).

    Extra keyword arguments verl may pass (``reward_baselines``, ``epsilon``,
    ``norm_adv_by_std_in_grpo``) are ignored: the transform is the whole advantage.
    """
    scores = token_level_rewards.sum(dim=-1)
    rows = group_rows(index, scores.shape[0], name).to(scores.device)
    transform_name = transform_of(name)
    k = k_opt(config, name) if transforms.uses_k(transform_name) else rows.shape[1]
    try:
        grouped = transforms.transform(transform_name, scores[rows].to(torch.float64), k)
    except ValueError as e:
        raise ValueError(f"{name} with algorithm.pkpo_k={k!r}: {e}") from None
    advantages = torch.empty_like(scores)
    advantages[rows] = grouped.to(scores.dtype)
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages


def _estimator(name: str) -> Estimator:
    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return pkpo_advantage(name, token_level_rewards, response_mask, index, config, **kwargs)

    estimator.__name__ = f"compute_{name}_outcome_advantage"
    estimator.__qualname__ = estimator.__name__
    estimator.__doc__ = f"verl advantage estimator {name!r}: see ``pkpo_advantage``."
    return estimator


#: verl estimator name -> function with verl's estimator signature (see ``estimators``)
ESTIMATORS: dict[str, Estimator] = {}


def estimators() -> dict[str, Estimator]:
    """``ESTIMATORS``, first adding an estimator for every transform registered since.

    Existing entries keep their function objects, so registering them again in verl (which
    refuses a second function under one name) stays harmless.
    """
    for transform_name in transforms.names():
        name = verl_name(transform_name)
        if name in ESTIMATORS:
            continue
        clash = [t for t in transforms.names() if t != transform_name and verl_name(t) == name]
        if clash:
            raise ValueError(
                f"transforms {transform_name!r} and {clash[0]!r} would both be verl's {name!r}"
            )
        ESTIMATORS[name] = _estimator(name)
    return ESTIMATORS


def register() -> list[str]:
    """Add ``estimators()`` to verl's registry (idempotent); returns the registered names."""
    from verl.trainer.ppo.core_algos import register_adv_est

    for name, fn in estimators().items():
        register_adv_est(name)(fn)
    return list(ESTIMATORS)


estimators()
if importlib.util.find_spec("verl") is not None:
    register()
