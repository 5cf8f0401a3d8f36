"""What the loop hands a trainer, what it expects back, and what a trainer needs of an engine.

The loop talks to a ``Trainer`` (``pkpo.trainers.update.PPOTrainer``); the PPO update runs
over an ``Engine`` (``LocalEngine``: one process; ``DeepSpeedEngine``: ZeRO data parallel),
which owns the parameters, optimizer and schedule and everything that differs between them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class PPOBatch:
    """What a PPO update takes: one step's samples as token ids, flat and in group order
    (sample ``i`` belongs to ``group[i]``), with their advantages. The loop builds it from
    its ``ScoredRollout``s (``pkpo.rollouts``), which also hold texts and rewards.

    ``advantages`` are the transformed rewards, already computed on whole groups.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: torch.Tensor  # [num_samples]
    group: list[int]

    def __len__(self) -> int:
        return len(self.completion_ids)

    def select(self, idx: list[int]) -> PPOBatch:
        return PPOBatch(
            [self.prompt_ids[i] for i in idx],
            [self.completion_ids[i] for i in idx],
            self.advantages[idx],
            [self.group[i] for i in idx],
        )


class DataParallel(Protocol):
    """What the loop and the PPO update ask of ranks, shared by ``Trainer`` and ``Engine``.

    Data parallelism is group-aware: the loop gives each rank ``shard(groups)``, whole
    groups only, transforms them there, and ``gather``s per-group rows for metrics. A
    single process is rank 0 of 1.
    """

    model: torch.nn.Module
    rank: int

    def shard(self, groups: list[Any]) -> list[Any]:
        """This rank's share of the step's groups (contiguous, whole groups)."""

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Per-group rows of every rank, concatenated in global group order."""

    def gathered_weights(self) -> AbstractContextManager:
        """While open, ``model`` holds the full weights on every rank (ZeRO-3 shards them);
        every rank must enter it. Wraps a sampler's ``sync_weights``."""


class Trainer(DataParallel, Protocol):
    """What the loop trains with (``PPOTrainer``, over a local or DeepSpeed ``Engine``);
    only the ``is_main`` rank writes logs."""

    is_main: bool

    def update(self, rollout: PPOBatch) -> dict[str, float]:
        """PPO epochs over ``rollout``; returns statistics (loss, entropy, kl_old, ...)."""

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Checkpoint model, optimizer, scheduler and the loop's ``extra`` state, atomically."""

    def load(self, directory: Path) -> dict[str, Any] | None:
        """Restore the last checkpoint in ``directory``; its ``extra`` state, or None."""


class Engine(DataParallel, Protocol):
    """Runs the policy for ``PPOTrainer``: forward, backward, optimizer step, ranks, state.

    ``model`` is the plain module (samplers generate with it; old log-probs are scored with
    it); ``policy`` is the module the loss runs through (a DeepSpeed engine's forward
    installs the hooks its backward needs). One process is rank 0 of a world of 1.
    """

    device: torch.device
    world_size: int

    @property
    def policy(self) -> torch.nn.Module:
        """The module the PPO loss runs through."""

    def zero_grad(self) -> None:
        """Drop the accumulated gradients (before a minibatch)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of ``loss`` (one micro-batch)."""

    def step(self) -> float:
        """Clip, step the optimizer and the schedule; the global norm before clipping."""

    def lr(self) -> float:
        """The current learning rate."""

    def all_sum(self, values: list[float]) -> list[float]:
        """Each value summed over ranks."""

    def save(self, directory: Path, client: dict[str, Any]) -> None:
        """Checkpoint parameters, optimizer, schedule and ``client`` state, atomically."""

    def load(self, directory: Path) -> dict[str, Any] | None:
        """Restore the last checkpoint in ``directory``; its ``client`` state, or None."""
