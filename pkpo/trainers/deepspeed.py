"""Data-parallel PPO with DeepSpeed ZeRO (stages 1-3, bf16, optional CPU offload).

``DeepSpeedEngine`` is the engine (``pkpo.trainers.base.Engine``) of one rank: the model,
its torch ``AdamW`` and the warm-up schedule handed to ``deepspeed.initialize`` as client
objects. ``deepspeed_trainer`` (``trainer=deepspeed_zero2|3``) is the same PPO update as
``trainer=local`` (``pkpo.trainers.update.PPOTrainer``: loss, old-policy scoring, epochs,
minibatch shuffling) over it. A torch optimizer rather than DeepSpeed's fused Adam: the fused
op JIT-compiles with nvcc and fails on machines whose ``TORCH_CUDA_ARCH_LIST`` has an arch
suffix such as ``9.0a``; the client ``AdamW`` needs no build and runs on CPU too.

Group-aware data parallelism: each rank owns whole prompt groups (``shard``), the loop
transforms their rewards there, and every rank trains on its own samples; ZeRO averages the
gradients over ranks (``PPOTrainer`` says why that is the single-process gradient).
``trainer.minibatch_size`` stays the global number of samples per optimizer step.

Gradient accumulation is ours, not DeepSpeed's: with ``managed_gradient_accumulation: false``
every ``engine.backward`` only accumulates and ``engine.step`` is the boundary, so a minibatch
may hold any number of micro-batches.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkpo import checkpoint, distributed
from pkpo.trainers.update import PPOTrainer, adamw_with_warmup, build

FORMAT = "pkpo-deepspeed-1"  # marks checkpoint.LAST as a pointer to a DeepSpeed tag
TAG_PREFIX = "ds_step"


def deepspeed_config(
    *,
    zero_stage: int,
    micro_batch_size: int,
    max_grad_norm: float,
    bf16: bool,
    offload_optimizer: bool,
    offload_param: bool,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict; ``overrides`` (``trainer.ds_config``) are merged in last."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"trainer.zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if offload_optimizer and zero_stage == 0:
        raise ValueError("trainer.offload_optimizer needs ZeRO stage 1, 2 or 3")
    if offload_param and zero_stage != 3:
        raise ValueError("trainer.offload_param needs ZeRO stage 3 (trainer=deepspeed_zero3)")
    zero: dict[str, Any] = {
        "stage": zero_stage,
        "contiguous_gradients": zero_stage >= 2,
        # unmanaged accumulation allows overlap_comm only where gradients are partitioned
        "overlap_comm": zero_stage >= 2,
    }
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": max(max_grad_norm, 0.0),
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        # DeepSpeed insists on its own CPU Adam with offload; the torch AdamW works there too
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return _merge(config, overrides or {})


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def skip_cpu_shm_op() -> None:
    """Keep DeepSpeed's CPU accelerator from JIT-compiling its shared-memory all-reduce.

    Every process group DeepSpeed wraps on CPU builds ``deepspeed_shm_comm`` with g++ (45-75 s
    the first time; then ~2 s from ``$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm``, by default
    ``~/.cache/torch_extensions/py311_cpu/``), yet only DeepSpeed-inference's
    ``inference_all_reduce`` uses it; training collectives go through gloo. Marking the op
    unavailable makes DeepSpeed fall back, as it does on platforms without it.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedEngine:
    """One rank's policy in a DeepSpeed engine.

    ``zero_stage``: 1, 2 or 3 (0: plain data parallelism); ``bf16``: bf16 weights and
    activations with fp32 master weights in the optimizer; ``offload_optimizer`` /
    ``offload_param`` (stage 3): keep optimizer state / parameters in CPU memory;
    ``backend``: ``auto`` (nccl on GPUs, gloo on CPU); ``ds_config``: raw DeepSpeed config
    keys merged over the generated ones; ``micro_batch_size``: samples per forward (also
    the PPO update's); the optimizer keys are ``LocalEngine``'s.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        zero_stage: int = 2,
        bf16: bool = False,
        offload_optimizer: bool = False,
        offload_param: bool = False,
        backend: str = "auto",
        ds_config: Mapping[str, Any] | None = None,
        device: str = "auto",
        micro_batch_size: int = 8,
        lr: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float = 1.0,
    ):
        import deepspeed

        info = distributed.init_process_group(backend)
        self.rank, self.world_size = info.rank, info.world_size
        self.local_rank = info.local_rank
        if device == "auto":
            device = f"cuda:{torch.cuda.current_device()}" if info.backend == "nccl" else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        optimizer, scheduler = adamw_with_warmup(model, lr, betas, weight_decay, warmup_steps)
        self.ds_config = deepspeed_config(
            zero_stage=zero_stage,
            micro_batch_size=micro_batch_size,
            max_grad_norm=max_grad_norm,
            bf16=bf16,
            offload_optimizer=offload_optimizer,
            offload_param=offload_param,
            overrides=ds_config,
        )
        skip_cpu_shm_op()
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=self.ds_config,
            dist_init_required=False,
        )
        # self.model stays the plain module (the engine wraps it in place): samplers read
        # and generate with it, the loss goes through the engine for its backward hooks.

    @property
    def policy(self) -> torch.nn.Module:
        return self.engine  # its forward installs the hooks engine.backward relies on

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> float:
        """DeepSpeed reduces, clips (``gradient_clipping``), steps AdamW and the schedule."""
        self.engine.step()
        return float(self.engine.get_global_grad_norm() or 0.0)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------ ranks

    def all_sum(self, values: list[float]) -> list[float]:
        return distributed.all_sum(values)

    def shard(self, groups: list[Any]) -> list[Any]:
        lo, hi = distributed.shard_bounds(len(groups), self.rank, self.world_size)
        return groups[lo:hi]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return distributed.gather_rows(rows)

    @contextlib.contextmanager
    def gathered_weights(self) -> Iterator[None]:
        """Full weights in ``self.model`` on every rank while open (all ranks must enter).

        ZeRO-3 keeps only a shard of each parameter on a rank; reading the weights (a sampler's
        ``sync_weights``, an export) needs them gathered. Other stages hold full weights.
        """
        if self.ds_config["zero_optimization"]["stage"] != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters())):
            yield

    # ------------------------------------------------------------------ state

    def save(self, directory: Path, client: dict[str, Any]) -> None:
        """A new DeepSpeed tag, then (atomically) the pointer ``checkpoint.LAST`` to it.

        A kill at any moment leaves the pointer at a complete tag: the new tag is fully
        written and fsynced before the pointer moves; older tags go only after that.
        """
        directory = Path(directory)
        main = self.rank == 0
        tag = distributed.broadcast(_new_tag(directory, self.engine.global_steps) if main else None)
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client, save_latest=False)
        distributed.barrier()
        if self.local_rank == 0:
            _fsync_tree(directory / tag)
        distributed.barrier()
        if main:
            checkpoint.save(directory, {"format": FORMAT, "tag": tag})
            for old in directory.glob(f"{TAG_PREFIX}*"):
                if old.name != tag and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()

    def load(self, directory: Path) -> dict[str, Any] | None:
        pointer = checkpoint.load(directory)
        if pointer is None:
            return None
        if pointer.get("format") != FORMAT:
            raise ValueError(
                f"{Path(directory) / checkpoint.LAST} is not a DeepSpeed checkpoint pointer "
                "(written by another trainer?): resume with the trainer that wrote it"
            )
        path, client = self.engine.load_checkpoint(
            str(directory),
            tag=pointer["tag"],
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint {pointer['tag']} in {directory}")
        return client


def deepspeed_trainer(model: torch.nn.Module, **keys: Any) -> PPOTrainer:
    """``trainer=deepspeed_zero2|3``: ``PPOTrainer`` over a ``DeepSpeedEngine``; takes the
    keys of both."""
    return build(DeepSpeedEngine, model, **keys)


def _new_tag(directory: Path, global_steps: int) -> str:
    """A tag no folder has yet (a killed save may have left a partial one of that step)."""
    tag, n = f"{TAG_PREFIX}{global_steps}", 0
    while (directory / tag).exists():
        n += 1
        tag = f"{TAG_PREFIX}{global_steps}.{n}"
    return tag


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the folders themselves to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
