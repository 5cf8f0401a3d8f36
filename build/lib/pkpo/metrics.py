"""What a step and an evaluation report: pass@k_eval by the unbiased estimator, solve rate."""

from __future__ import annotations

import resource

import numpy as np
import torch

from pkpo.estimators import rho


def pass_at_k_metrics(
    rewards: np.ndarray, ks: list[int], with_se: bool = False
) -> dict[str, float]:
    """Mean over problems of ``rho(rewards[b], k)`` (Eq. 12; Eq. 3 for 0/1 rewards).

    ``rewards`` is ``[num_problems, n]``; k values above n are skipped (no unbiased
    estimate exists, Corollary 2). With ``with_se``, adds ``pass@k_se``: the standard error
    over problems of the per-problem estimates.
    """
    out: dict[str, float] = {}
    n = rewards.shape[-1]
    for k in ks:
        if k > n:
            continue
        per_problem = rho(rewards, k)
        out[f"pass@{k}"] = float(per_problem.mean())
        if with_se:
            se = per_problem.std(ddof=1) / np.sqrt(len(per_problem)) if len(per_problem) > 1 else 0
            out[f"pass@{k}_se"] = float(se)
    return out


def per_problem_outcomes(
    problem_ids: list[str], rewards: np.ndarray, threshold: float = 1.0
) -> dict[str, list]:
    """Each problem's id and its successes ``c`` of the ``n`` samples (reward >= ``threshold``).

    ``c`` of ``n`` is all that Eq. 3 needs for any k <= n, so an eval event that carries them
    lets the analysis pair problems across arms and seeds and separate eval noise from
    training variance. (For rewards that are not 0/1 the counts describe successes only; the
    event's aggregate pass@k are then max_g@k, Eq. 12.)
    """
    successes = (rewards >= threshold - 1e-9).sum(axis=-1)
    return {"problem_ids": list(problem_ids), "successes": [int(c) for c in successes]}


class SolveTracker:
    """Which problems have had at least one sample with reward >= ``threshold`` so far."""

    def __init__(self, num_problems: int, threshold: float = 1.0, solved: set[str] | None = None):
        self.num_problems = num_problems
        self.threshold = threshold
        self.solved: set[str] = set(solved or ())

    def update(self, problem_ids: list[str], rewards: np.ndarray) -> None:
        for pid, row in zip(problem_ids, rewards, strict=True):
            if float(np.max(row)) >= self.threshold - 1e-9:
                self.solved.add(pid)

    @property
    def rate(self) -> float:
        return len(self.solved) / max(self.num_problems, 1)


def memory_peaks() -> dict[str, float]:
    """Peak memory so far in GiB: this process's resident set and, on CUDA, torch's allocations.

    ``peak_rss_gib`` is the kernel's high-water mark (``ru_maxrss``, KiB on Linux); ``gpu_peak_gib``
    (only where CUDA is initialised) counts tensors, not the caching allocator's reserve.
    """
    peaks = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        peaks["gpu_reserved_peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return peaks
