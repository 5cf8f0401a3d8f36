"""A rollout: ``n`` sampled completions of each problem, scored by the task's verifier.

``sample_and_score`` is the one place this happens, for every pass@k the package reports:
the RL loop's training steps and held-out ``eval`` events (``pkpo.train``: each rank its
share of the problems, rewards gathered over ranks) and the supervised start's held-out
report (``pkpo.pretrain``: one process). The callers choose the sampler, the prompts' token
ids and the sampling settings; pass@k is ``pkpo.metrics.pass_at_k_metrics`` of the rewards.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from pkpo.samplers.base import Completion, Sampler, SamplingParams
from pkpo.scoring import Failure, Scorer
from pkpo.tasks.base import Problem


@dataclass(frozen=True)
class ScoredRollout:
    """The completions of this process's ``B_local`` problems and their rewards, and what
    metrics need from all ``B`` problems of every rank (in one process, ``B = B_local``).

    ``completions``: ``[B_local][n]``, sample ``j`` of problem ``i`` at ``[i][j]``.
    ``local_rewards``: ``[B_local, n]`` (float64), the reward of each completion.
    ``rewards``: ``[B, n]``, every rank's ``local_rewards`` in global problem order.
    ``local_failures``: this process's scorings that raised or were not finite (scored 0).
    ``score_failures``, ``score_timeouts``: how many scorings failed, and how many a time
    limit decided, on all ranks.
    """

    completions: list[list[Completion]]
    local_rewards: np.ndarray
    rewards: np.ndarray
    local_failures: list[Failure]
    score_failures: int
    score_timeouts: int


def sample_and_score(
    sampler: Sampler,
    scorer: Scorer,
    problems: list[Problem],
    prompt_ids: list[list[int]],
    n: int,
    params: SamplingParams,
    *,
    timer: Callable[[str], AbstractContextManager[Any]] | None = None,
    gather: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ScoredRollout:
    """Sample ``n`` completions of each of ``problems`` (``prompt_ids``: one prompt each)
    with ``params`` and score them with ``scorer``.

    ``timer(phase)``, if given, times the ``"sample"`` and ``"score"`` phases
    (``pkpo.train.Timer``). ``gather`` concatenates per-problem rows of every rank
    (``Trainer.gather``; None: this process holds all the problems).
    """
    phase = timer or (lambda _: nullcontext())
    rows = gather or (lambda values: values)
    with phase("sample"):
        completions = sampler.generate(prompt_ids, n, params)
    with phase("score"):
        texts = [[c.text for c in group] for group in completions]
        rewards, failures, timeouts = scorer.score(problems, texts)
    counts = rows(np.array([[len(failures), timeouts.sum()]])).sum(0)
    return ScoredRollout(
        completions=completions,
        local_rewards=rewards,
        rewards=rows(rewards),
        local_failures=failures,
        score_failures=int(counts[0]),
        score_timeouts=int(counts[1]),
    )
