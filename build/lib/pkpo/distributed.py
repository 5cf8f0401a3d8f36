"""Process-group set-up and the few collectives the group-aware data-parallel loop needs.

Every rank runs the whole loop (``pkpo.train.Run``) on its share of the step's prompt groups:
``shard_bounds`` gives each rank a contiguous block of whole groups, so the n samples of a
prompt are sampled, scored and transformed together on one rank (the transforms of
``pkpo.transforms`` act on whole rows ``rewards[b, :]``), and ``gather_rows`` puts the
per-group rows back in global order for metrics.

Rendezvous comes from the launcher: ``torchrun`` and the ``deepspeed`` launcher set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; an ``srun`` step with
one task per GPU (what ``hydra/launcher=submitit_slurm`` starts) only has Slurm's variables,
which ``rendezvous_env`` maps; a plain ``python`` process is rank 0 of 1.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
PORT_BASE = 20000  # Slurm runs use PORT_BASE + job id % PORT_SPAN (same rule in slurm/)
PORT_SPAN = 20000


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str


def shard_bounds(num_groups: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of the groups rank ``rank`` owns: contiguous, sizes differ by at most one.

    Contiguous blocks in rank order make concatenating the ranks' rows (``gather_rows``)
    restore the global group order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if num_groups < 0:
        raise ValueError(f"num_groups must be >= 0, got {num_groups}")
    base, extra = divmod(num_groups, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def slurm_port(job_id: str | int) -> int:
    """A rendezvous port derived from the Slurm job id (two jobs on a node rarely collide)."""
    return PORT_BASE + int(job_id) % PORT_SPAN


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``node[03-05,9]`` -> ``node03``)."""
    if not any(c in nodelist for c in "[,"):
        return nodelist
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``torch.distributed`` variables this process should have (``TORCH_VARS``).

    Launcher variables win; an ``srun`` step (``SLURM_STEP_NUM_TASKS`` is set only inside
    one, not in the batch script) is mapped from Slurm's; otherwise a single process.
    """
    if "RANK" in environ or "WORLD_SIZE" in environ:
        missing = [v for v in TORCH_VARS if v not in environ and v != "LOCAL_RANK"]
        if missing:
            raise RuntimeError(f"launcher set RANK/WORLD_SIZE but not {', '.join(missing)}")
        out = {v: environ[v] for v in TORCH_VARS if v in environ}
        out.setdefault("LOCAL_RANK", "0")
        return out
    if "SLURM_STEP_NUM_TASKS" in environ and int(environ["SLURM_STEP_NUM_TASKS"]) > 1:
        return {
            "RANK": environ["SLURM_PROCID"],
            "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
            "LOCAL_RANK": environ["SLURM_LOCALID"],
            "MASTER_ADDR": environ.get("MASTER_ADDR")
            or first_host(environ.get("SLURM_STEP_NODELIST") or environ["SLURM_JOB_NODELIST"]),
            "MASTER_PORT": environ.get("MASTER_PORT") or str(slurm_port(environ["SLURM_JOB_ID"])),
        }
    return {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": environ.get("MASTER_PORT") or str(_free_port()),
    }


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(backend: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join (or create) the default process group; sets this rank's CUDA device first.

    The device is ``LOCAL_RANK`` modulo the visible GPUs, so ranks that each see only their
    own GPU (``CUDA_VISIBLE_DEVICES`` set per task) use ``cuda:0``.
    """
    os.environ.update(rendezvous_env(os.environ))
    backend = default_backend() if backend == "auto" else backend
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def _device() -> torch.device:
    """Where collectives on tensors must live (NCCL only moves CUDA tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of a list of numbers over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every rank's ``rows`` concatenated in rank order (= global group order, see
    ``shard_bounds``). Ranks that own no groups may pass an empty array of any shape."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, np.asarray(rows))
    nonempty = [p for p in parts if p.size]
    return np.concatenate(nonempty) if nonempty else np.asarray(rows)


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
