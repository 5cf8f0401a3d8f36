"""Single-process PPO backend (CPU or one GPU): plain torch, AdamW, gradient accumulation."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkpo import checkpoint
from pkpo.ppo import AGGREGATIONS, Batch, LossConfig, pad_batch, ppo_loss, token_logprobs
from pkpo.trainers.base import Rollout


class LocalTrainer:
    """PPO on one device.

    Each ``update`` first scores the rollout under the current (old) policy without
    gradients (old log-probs, token entropy, reference log-probs when ``kl_coef > 0``), then
    runs ``epochs`` passes over shuffled minibatches of ``minibatch_size`` samples, each one
    optimizer step accumulated over micro-batches of ``micro_batch_size`` samples.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        pad_id: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        lr: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        epochs: int = 1,
        minibatch_size: int = 32,
        micro_batch_size: int = 8,
        clip_eps: float = 0.2,
        max_grad_norm: float = 1.0,
        kl_coef: float = 0.0,
        entropy_coef: float = 0.0,
        loss_aggregation: str = "seq_sum",
        seed: int = 0,
        device: str = "auto",
    ):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and type(self) is LocalTrainer:
            raise ValueError(
                "trainer=local trains in one process, but WORLD_SIZE > 1: every rank would train "
                "alone into the same run folder; use trainer=deepspeed_zero2 (or zero3)"
            )
        for key, value in (("epochs", epochs), ("minibatch_size", minibatch_size)):
            if value <= 0:
                raise ValueError(f"trainer.{key} must be positive, got {value}")
        if micro_batch_size <= 0:
            raise ValueError(f"trainer.micro_batch_size must be positive, got {micro_batch_size}")
        if loss_aggregation not in AGGREGATIONS:
            raise ValueError(f"trainer.loss_aggregation must be one of {AGGREGATIONS}")
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.model = model.to(self.device)
        self.pad_id = pad_id
        self.max_new_tokens = max_new_tokens
        self.epochs = epochs
        self.minibatch_size = minibatch_size
        self.micro_batch_size = micro_batch_size
        self.max_grad_norm = max_grad_norm
        self.loss_cfg = LossConfig(clip_eps, kl_coef, entropy_coef, loss_aggregation, temperature)
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if kl_coef else None
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0
        )
        self.generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ update

    def _batches(self, rollout: Rollout) -> list[Batch]:
        """Micro-batches of the rollout (padded per micro-batch, on the device)."""
        out = []
        for lo in range(0, len(rollout), self.micro_batch_size):
            part = rollout.select(list(range(lo, min(lo + self.micro_batch_size, len(rollout)))))
            batch = pad_batch(part.prompt_ids, part.completion_ids, part.advantages, self.pad_id)
            out.append(batch.to(self.device))
        return out

    @torch.no_grad()
    def _score_old(self, rollout: Rollout) -> tuple[list[torch.Tensor], list, float]:
        """Old (and reference) log-probs per sample, and the mean token entropy."""
        self.model.eval()
        old, ref, ent_sum, tokens = [], [], 0.0, 0.0
        for batch in self._batches(rollout):
            logp, entropy = token_logprobs(self.model, batch, self.loss_cfg.temperature, True)
            mask = batch.completion_mask[:, 1:].float()
            ent_sum += float((entropy * mask).sum())
            tokens += float(mask.sum())
            old.extend(logp.cpu())
            if self.ref_model is not None:
                ref_logp, _ = token_logprobs(self.ref_model, batch, self.loss_cfg.temperature)
                ref.extend(ref_logp.cpu())
            else:
                ref.extend([None] * len(logp))
        return old, ref, ent_sum / max(tokens, 1.0)

    def update(self, rollout: Rollout) -> dict[str, float]:
        old, ref, entropy = self._score_old(rollout)
        self.model.train()
        norm = self._loss_norm(rollout)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(self.epochs):
            perm = torch.randperm(len(rollout), generator=self.generator).tolist()
            for lo in range(0, len(perm), self.minibatch_size):
                idx = perm[lo : lo + self.minibatch_size]
                stats = self._step(
                    rollout.select(idx), [old[i] for i in idx], [ref[i] for i in idx], norm
                )
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        out = {key: value / max(count, 1) for key, value in sums.items()}
        out["entropy"] = entropy
        out["lr"] = self.scheduler.get_last_lr()[0]
        return out

    def _loss_norm(self, rollout: Rollout) -> float:
        if self.loss_cfg.aggregation == "token_mean":
            return sum(len(c) for c in rollout.completion_ids) / max(len(rollout), 1)
        return float(self.max_new_tokens)

    def _step(self, part: Rollout, old: list, ref: list, norm: float) -> dict[str, float]:
        """One optimizer step on a minibatch, accumulated over micro-batches."""
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for lo, batch in zip(
            range(0, len(part), self.micro_batch_size), self._batches(part), strict=True
        ):
            width = batch.input_ids.shape[1] - 1
            batch.old_logprobs = _stack(old[lo : lo + len(batch.advantages)], width, self.device)
            if self.ref_model is not None:
                batch.ref_logprobs = _stack(
                    ref[lo : lo + len(batch.advantages)], width, self.device
                )
            loss, stats = ppo_loss(self._policy(), batch, self.loss_cfg, norm)
            self._backward(loss / len(part))
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / len(part)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(part)
        totals["grad_norm"] = self._apply_gradients()
        return totals

    # Backends (DeepSpeedTrainer) override these three to route through their engine.

    def _policy(self) -> torch.nn.Module:
        """The module the PPO loss runs through."""
        return self.model

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _apply_gradients(self) -> float:
        """Clip, step the optimizer and the schedule; returns the norm before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.max_grad_norm if self.max_grad_norm > 0 else math.inf
        )
        self.optimizer.step()
        self.scheduler.step()
        return float(grad_norm)

    # ------------------------------------------------------------------ data parallel

    is_main = True
    rank = 0

    def shard(self, groups: list[Any]) -> list[Any]:
        return groups

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def gathered_weights(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # one process holds all the weights

    # ------------------------------------------------------------------ state

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "extra": extra,
        }
        checkpoint.save(directory, state)

    def load(self, directory: Path) -> dict[str, Any] | None:
        state = checkpoint.load(directory)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        return state["extra"]


def _stack(rows: list[torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    """Per-sample tensors (padded to their old micro-batch width) cut or padded to ``width``."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, row in enumerate(rows):
        m = min(width, row.shape[0])
        out[b, :m] = row[:m]
    return out.to(device)
