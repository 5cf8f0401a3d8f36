"""What the loop hands a trainer backend, and what it expects back."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class Rollout:
    """One step's samples, flat and in group order: sample ``i`` belongs to ``group[i]``.

    ``advantages`` are the transformed rewards, already computed on whole groups.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: torch.Tensor  # [num_samples]
    group: list[int]

    def __len__(self) -> int:
        return len(self.completion_ids)

    def select(self, idx: list[int]) -> Rollout:
        return Rollout(
            [self.prompt_ids[i] for i in idx],
            [self.completion_ids[i] for i in idx],
            self.advantages[idx],
            [self.group[i] for i in idx],
        )


class Trainer(Protocol):
    """A training backend: owns the policy's parameters, optimizer and schedule.

    Data parallelism is group-aware: the loop gives each rank ``shard(groups)``, whole
    groups only, transforms them there, and ``gather``s per-group rows for metrics; only
    the ``is_main`` rank writes logs. A single-process backend is rank 0 of 1.
    """

    model: torch.nn.Module
    rank: int
    is_main: bool

    def shard(self, groups: list[Any]) -> list[Any]:
        """This rank's share of the step's groups (contiguous, whole groups)."""

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Per-group rows of every rank, concatenated in global group order."""

    def gathered_weights(self) -> AbstractContextManager:
        """While open, ``model`` holds the full weights on every rank (ZeRO-3 shards them);
        every rank must enter it. Wraps a sampler's ``sync_weights``."""

    def update(self, rollout: Rollout) -> dict[str, float]:
        """PPO epochs over ``rollout``; returns statistics (loss, entropy, kl_old, ...)."""

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Checkpoint model, optimizer, scheduler and the loop's ``extra`` state, atomically."""

    def load(self, directory: Path) -> dict[str, Any] | None:
        """Restore the last checkpoint in ``directory``; its ``extra`` state, or None."""
