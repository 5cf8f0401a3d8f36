"""Single-process PPO (CPU or one GPU): plain torch, AdamW, gradient accumulation.

``LocalEngine`` is the engine (``pkpo.trainers.base.Engine``) of one process: rank 0 of a
world of 1, holding all the weights. ``local_trainer`` (``trainer=local``) is the PPO update
(``pkpo.trainers.update.PPOTrainer``) over it.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkpo import checkpoint
from pkpo.trainers.update import PPOTrainer, adamw_with_warmup, build


class LocalEngine:
    """The policy, its torch ``AdamW`` and warm-up schedule on one device.

    ``max_grad_norm``: clip the gradient's global norm (0: no clipping).
    """

    rank = 0
    world_size = 1

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str = "auto",
        lr: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float = 1.0,
    ):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "trainer=local trains in one process, but WORLD_SIZE > 1: every rank would train "
                "alone into the same run folder; use trainer=deepspeed_zero2 (or zero3)"
            )
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.model = model.to(self.device)
        self.max_grad_norm = max_grad_norm
        self.optimizer, self.scheduler = adamw_with_warmup(
            model, lr, betas, weight_decay, warmup_steps
        )

    @property
    def policy(self) -> torch.nn.Module:
        return self.model

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.max_grad_norm if self.max_grad_norm > 0 else math.inf
        )
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------ one rank

    def all_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def shard(self, groups: list[Any]) -> list[Any]:
        return groups

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def gathered_weights(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # one process holds all the weights

    # ------------------------------------------------------------------ state

    def save(self, directory: Path, client: dict[str, Any]) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **client,
        }
        checkpoint.save(directory, state)

    def load(self, directory: Path) -> dict[str, Any] | None:
        state = checkpoint.load(directory)
        if state is None:
            return None
        self.model.load_state_dict(state.pop("model"))
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.scheduler.load_state_dict(state.pop("scheduler"))
        return state


def local_trainer(model: torch.nn.Module, **keys: Any) -> PPOTrainer:
    """``trainer=local``: ``PPOTrainer`` over a ``LocalEngine``; takes the keys of both."""
    return build(LocalEngine, model, **keys)
