"""PKPO in verl: the advantage step of a verl PPO run, on a toy batch, on CPU.

Importing ``pkpo.integrations.verl`` registers the ``pkpo_*`` advantage estimators in verl's
registry. This script composes verl's own ``ppo_trainer.yaml`` with the same overrides a
training command gets and runs verl's ``compute_advantage`` on two prompts x 4 samples:

    python examples/verl_pkpo.py algorithm.adv_estimator=pkpo_sloo_minus_one +algorithm.pkpo_k=2

A real run passes the same overrides to ``python -m verl.trainer.main_ppo``
(see docs/integrations.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import verl
from hydra import compose, initialize_config_dir
from verl import DataProto
from verl.trainer.ppo.ray_trainer import compute_advantage

import pkpo.integrations.verl  # noqa: F401  (registers the pkpo_* estimators)


def main(overrides: list[str]) -> None:
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    algorithm = config.algorithm

    # two prompts x 4 samples, interleaved as after verl's sequence-length balancing
    uids = np.array(["q1", "q2", "q1", "q2", "q1", "q2", "q1", "q2"], dtype=object)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    response_mask = torch.ones(8, 5)
    token_level_rewards = torch.zeros(8, 5)
    token_level_rewards[:, -1] = rewards  # the outcome reward sits on the last token

    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_level_rewards, "response_mask": response_mask},
        non_tensors={"uid": uids},
    )
    data = compute_advantage(
        data,
        adv_estimator=algorithm.adv_estimator,
        gamma=algorithm.gamma,
        lam=algorithm.lam,
        norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo,
        config=algorithm,
    )
    print(f"adv_estimator={algorithm.adv_estimator} pkpo_k={algorithm.get('pkpo_k')}")
    for uid, reward, advantage in zip(uids, rewards, data.batch["advantages"][:, 0], strict=True):
        print(f"  {uid}  reward {reward:.0f}  advantage {advantage:+.4f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["algorithm.adv_estimator=pkpo_sloo_minus_one", "+algorithm.pkpo_k=2"])
