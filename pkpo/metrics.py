"""What a step and an evaluation report: pass@k_eval by the unbiased estimator, solve rate."""

from __future__ import annotations

import numpy as np

from pkpo.estimators import rho


def pass_at_k(rewards: np.ndarray, ks: list[int], with_se: bool = False) -> dict[str, float]:
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
