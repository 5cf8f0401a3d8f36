"""The PPO update over a rollout, whatever engine runs the model (``pkpo.trainers.base.Engine``).

Each ``PPOTrainer.update`` first scores the rollout under the current (old) policy without
gradients (old log-probs, token entropy, reference log-probs when ``kl_coef > 0``), then
runs ``epochs`` passes over shuffled minibatches, each one optimizer step accumulated over
micro-batches. The loss is ``pkpo.ppo.ppo_loss``. When the
whole update is one optimizer step (one epoch, one minibatch, no reference) the old policy
is the policy itself, so that pass is skipped: its log-probs would equal the loss's own
(ratio 1), and the token entropy comes from the loss's forward instead.

Micro-batches: ``micro_batch_size`` consecutive samples each, or, with ``micro_batch_tokens``
set, samples grouped by length (longest first) so that each micro-batch's padded size,
samples times its longest sequence, stays within that many tokens (a longer sample goes
alone). The loss is a sum over samples divided by the minibatch's sample count, so the
split changes only memory, speed and float rounding, never the gradient (``tests/test_ppo.py``).
Fewer, fuller forwards with little padding is what makes a GPU step fast.

Data parallelism: ``minibatch_size`` is the global number of samples per optimizer step;
each of the engine's ranks takes an equal share of it from its own samples (whole groups,
``Engine.shard``). Every rank's minibatch loss is a mean over its samples and the engine
averages gradients over ranks, so with equal sample counts the step is exactly the
single-process step on the union minibatch (tests/test_distributed.py). Statistics are
means over ranks, the entropy a per-token mean over all ranks' tokens. One process is the
case of one rank: the same code, with sums over ranks that are the values themselves.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkpo.ppo import AGGREGATIONS, Batch, LossConfig, pad_batch, ppo_loss, token_logprobs
from pkpo.trainers.base import Engine, PPOBatch

# the statistics that are not means over ranks' minibatches
_GLOBAL_STATS = ("entropy", "lr", "grad_norm")


def check_batch_sizes(
    epochs: object,
    minibatch_size: object,
    micro_batch_size: object,
    micro_batch_tokens: object = None,
) -> None:
    """Raise ``ValueError`` naming the ``trainer`` key that is not a positive integer
    (``micro_batch_tokens`` may also be None: micro-batches by ``micro_batch_size``).

    The one home of these checks: ``config.validate`` calls it before the model loads,
    ``PPOTrainer`` when it is built directly.
    """
    sizes = {
        "epochs": epochs,
        "minibatch_size": minibatch_size,
        "micro_batch_size": micro_batch_size,
    }
    if micro_batch_tokens is not None:
        sizes["micro_batch_tokens"] = micro_batch_tokens
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"trainer.{key} must be a positive integer, got {value!r}")


def token_budget_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices into ``lengths`` grouped into micro-batches of at most ``budget`` padded
    tokens (count times the group's longest length), longest first; a length over the
    budget makes a group of one. Every index appears exactly once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep order
    groups: list[list[int]] = []
    for i in order:
        # sorted longest first, so a group's first sample sets its padded width
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class PPOTrainer:
    """PPO over an engine; implements the loop's ``Trainer`` protocol (``trainers.base``).

    ``engine``: owns the parameters, optimizer and schedule (forward, backward, step,
    save/load, ranks). ``reference``: a frozen copy of the initial policy, needed when
    ``kl_coef > 0`` (``build`` makes it). ``pad_id``: padding token; ``max_new_tokens``:
    the ``seq_sum`` normaliser (Eq. 18 up to a constant); ``temperature``: the sampler's,
    so log-probs are taken under the distribution the samples came from.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        pad_id: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        epochs: int = 1,
        minibatch_size: int = 32,
        micro_batch_size: int = 8,
        micro_batch_tokens: int | None = None,
        clip_eps: float = 0.2,
        kl_coef: float = 0.0,
        entropy_coef: float = 0.0,
        loss_aggregation: str = "seq_sum",
        seed: int = 0,
        reference: torch.nn.Module | None = None,
    ):
        check_batch_sizes(epochs, minibatch_size, micro_batch_size, micro_batch_tokens)
        if loss_aggregation not in AGGREGATIONS:
            raise ValueError(f"trainer.loss_aggregation must be one of {AGGREGATIONS}")
        if minibatch_size % engine.world_size:
            raise ValueError(
                f"trainer.minibatch_size ({minibatch_size}) must be a multiple of the number "
                f"of ranks ({engine.world_size}): each rank takes an equal share of a minibatch"
            )
        if kl_coef and reference is None:
            raise ValueError("trainer.kl_coef > 0 needs the initial policy as `reference`")
        self.engine = engine
        self.pad_id = pad_id
        self.max_new_tokens = max_new_tokens
        self.epochs = epochs
        self.local_minibatch_size = minibatch_size // engine.world_size
        self.micro_batch_size = micro_batch_size
        self.micro_batch_tokens = micro_batch_tokens
        self.loss_cfg = LossConfig(clip_eps, kl_coef, entropy_coef, loss_aggregation, temperature)
        self.reference = reference.to(engine.device) if kl_coef else None
        self.generator = torch.Generator().manual_seed(seed)  # minibatch shuffling

    # ------------------------------------------------------------------ the engine's

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.model

    @property
    def rank(self) -> int:
        return self.engine.rank

    @property
    def is_main(self) -> bool:
        return self.engine.rank == 0

    def shard(self, groups: list[Any]) -> list[Any]:
        return self.engine.shard(groups)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return self.engine.gather(rows)

    def gathered_weights(self) -> AbstractContextManager:
        return self.engine.gathered_weights()

    # ------------------------------------------------------------------ update

    def update(self, rollout: PPOBatch) -> dict[str, float]:
        """PPO epochs over this rank's ``rollout``; statistics are over all ranks."""
        counts = self.engine.gather(np.array([[len(rollout)]]))[:, 0].tolist()
        if len(set(counts)) > 1:
            raise ValueError(
                f"ranks hold {counts} samples: every rank must train on the same number "
                f"(make prompts_per_step a multiple of the {self.engine.world_size} ranks)"
            )
        one_step = (
            self.epochs == 1
            and self.local_minibatch_size >= len(rollout)
            and self.reference is None
        )
        old = ref = None  # one step: the policy is its own old policy (ratio 1)
        if not one_step:
            old, ref, entropy_sum, tokens = self._score_old(rollout)
        self.engine.model.train()
        norm = self._loss_norm(rollout)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(self.epochs):
            perm = torch.randperm(len(rollout), generator=self.generator).tolist()
            for lo in range(0, len(perm), self.local_minibatch_size):
                idx = perm[lo : lo + self.local_minibatch_size]
                stats = self._step(rollout.select(idx), _pick(old, idx), _pick(ref, idx), norm)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
        # the loss's own token entropy (always there on one step; with an entropy bonus too)
        loss_entropy = sums.pop("entropy_sum", 0.0), sums.pop("tokens", 0.0)
        if one_step:
            entropy_sum, tokens = loss_entropy
        means = {key: value / max(count, 1) for key, value in sums.items()}
        keys = sorted(k for k in means if k not in _GLOBAL_STATS)
        totals = self.engine.all_sum([means[k] for k in keys] + [entropy_sum, tokens])
        out = {k: s / self.engine.world_size for k, s in zip(keys, totals, strict=False)}
        out["entropy"] = totals[-2] / max(totals[-1], 1.0)
        out["lr"] = self.engine.lr()
        out["grad_norm"] = means["grad_norm"]  # the engine's norm is global already
        return out

    def _micro_batches(self, rollout: PPOBatch) -> list[tuple[list[int], Batch]]:
        """Micro-batches of the rollout: each one's sample indices and its batch (padded per
        micro-batch, on the engine's device); see the module docstring for the grouping."""
        if self.micro_batch_tokens is None:
            size = self.micro_batch_size
            groups = [
                list(range(lo, min(lo + size, len(rollout)))) for lo in range(0, len(rollout), size)
            ]
        else:
            lengths = [
                len(p) + len(c)
                for p, c in zip(rollout.prompt_ids, rollout.completion_ids, strict=True)
            ]
            groups = token_budget_groups(lengths, self.micro_batch_tokens)
        out = []
        for idx in groups:
            part = rollout.select(idx)
            batch = pad_batch(part.prompt_ids, part.completion_ids, part.advantages, self.pad_id)
            out.append((idx, batch.to(self.engine.device)))
        return out

    @torch.no_grad()
    def _score_old(self, rollout: PPOBatch) -> tuple[list[torch.Tensor], list, float, float]:
        """Old (and reference) log-probs per sample, the token entropy sum and token count."""
        model, temperature = self.engine.model, self.loss_cfg.temperature
        model.eval()
        old, ref = [None] * len(rollout), [None] * len(rollout)
        entropy_sum, tokens = 0.0, 0.0
        for idx, batch in self._micro_batches(rollout):
            logp, entropy = token_logprobs(model, batch, temperature, True)
            mask = batch.completion_mask[:, 1:].float()
            entropy_sum += float((entropy * mask).sum())
            tokens += float(mask.sum())
            for i, row in zip(idx, logp.cpu(), strict=True):
                old[i] = row
            if self.reference is not None:
                ref_logp, _ = token_logprobs(self.reference, batch, temperature)
                for i, row in zip(idx, ref_logp.cpu(), strict=True):
                    ref[i] = row
        return old, ref, entropy_sum, tokens

    def _loss_norm(self, rollout: PPOBatch) -> float:
        """``token_mean``: mean tokens per sample over all ranks' samples; else
        ``max_new_tokens`` (``pkpo.ppo.aggregate``)."""
        if self.loss_cfg.aggregation != "token_mean":
            return float(self.max_new_tokens)
        tokens, samples = self.engine.all_sum(
            [float(sum(len(c) for c in rollout.completion_ids)), float(len(rollout))]
        )
        return tokens / max(samples, 1.0)

    def _step(
        self, part: PPOBatch, old: list | None, ref: list | None, norm: float
    ) -> dict[str, float]:
        """One optimizer step on a minibatch, accumulated over micro-batches; ``old`` is
        None when the update is this one step (the loss then takes its own entropy)."""
        self.engine.zero_grad()
        totals: dict[str, float] = {}
        for idx, batch in self._micro_batches(part):
            width = batch.input_ids.shape[1] - 1
            scored = old is not None
            if scored:
                batch.old_logprobs = _stack(_pick(old, idx), width, self.engine.device)
            if self.reference is not None:
                batch.ref_logprobs = _stack(_pick(ref, idx), width, self.engine.device)
            loss, stats = ppo_loss(
                self.engine.policy, batch, self.loss_cfg, norm, with_entropy=not scored
            )
            self.engine.backward(loss / len(part))
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / len(part)
            for key in ("entropy_sum", "tokens"):  # sums, not means over samples
                if key in stats:
                    totals[key] = totals.get(key, 0.0) + float(stats.pop(key))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(part)
        totals["grad_norm"] = self.engine.step()
        return totals

    # ------------------------------------------------------------------ state

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """The engine's checkpoint, with the shuffling state and the loop's ``extra``."""
        self.engine.save(Path(directory), {"generator": self.generator.get_state(), "extra": extra})

    def load(self, directory: Path) -> dict[str, Any] | None:
        state = self.engine.load(Path(directory))
        if state is None:
            return None
        self.generator.set_state(state["generator"])
        return state["extra"]


def _pick(values: list | None, idx: list[int]) -> list | None:
    """``values`` at ``idx`` (per-sample log-probs of a minibatch); None stays None."""
    return None if values is None else [values[i] for i in idx]


def build(engine: Callable[..., Engine], model: torch.nn.Module, **keys: Any) -> PPOTrainer:
    """A ``PPOTrainer`` over ``engine(model, ...)`` from one flat set of ``trainer`` keys.

    Each key goes to the constructor that names it, the engine's or ``PPOTrainer``'s (to
    both if both do: ``micro_batch_size`` is also DeepSpeed's); a key neither takes is an
    error naming it. The KL reference is copied from ``model`` before
    the engine wraps it (ZeRO-3 partitions the parameters in place).
    """
    engine_params = set(inspect.signature(engine).parameters) - {"model"}
    ppo_params = set(inspect.signature(PPOTrainer).parameters) - {"engine", "reference"}
    unknown = sorted(set(keys) - engine_params - ppo_params)
    if unknown:
        raise TypeError(
            f"unknown trainer keys {unknown}: {engine.__name__} takes {sorted(engine_params)}, "
            f"PPOTrainer takes {sorted(ppo_params)}"
        )
    kl_coef = keys.get("kl_coef", 0.0)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if kl_coef else None
    built = engine(model, **{k: v for k, v in keys.items() if k in engine_params})
    ppo = {k: v for k, v in keys.items() if k in ppo_params}
    return PPOTrainer(built, reference=reference, **ppo)


def adamw_with_warmup(
    model: torch.nn.Module,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    warmup_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """torch ``AdamW`` over the trainable parameters and a linear warm-up to ``lr``."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        betas=tuple(betas),
        weight_decay=weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0
    )
    return optimizer, scheduler


def _stack(rows: list[torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    """Per-sample tensors (padded to their old micro-batch width) cut or padded to ``width``."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, row in enumerate(rows):
        m = min(width, row.shape[0])
        out[b, :m] = row[:m]
    return out.to(device)
