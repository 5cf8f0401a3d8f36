"""Score completions in worker processes; a failing verifier costs a sample, not the run."""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np

from pkpo.tasks.base import Problem, Reward, Task

log = logging.getLogger(__name__)

_TASK: Task | None = None  # the task, set once per worker process


def _init_worker(task: Task) -> None:
    global _TASK
    _TASK = task


def _score_one(problem: Problem, completion: str) -> tuple[float, bool, str | None]:
    """``(reward, timed_out, None)``, or ``(0.0, False, reason)`` when the verifier raised or
    was not finite."""
    try:
        reward = _TASK.score(problem, completion)
        value = float(reward)
    except Exception as e:  # noqa: BLE001 - untrusted output must never crash the run
        return 0.0, False, f"{type(e).__name__}: {e}"[:500]
    if not math.isfinite(value):
        return 0.0, False, f"non-finite score {value}"
    return value, isinstance(reward, Reward) and reward.timed_out, None


@dataclass(frozen=True)
class Failure:
    problem_id: str
    sample: int
    error: str


class Scorer:
    """``score(problems, completions[B][n]) -> (rewards [B, n], failures, timeouts [B, n])``.

    ``timeouts`` marks the samples whose reward a time limit decided (the task returned a
    ``Reward`` with ``timed_out``, or the verifier hung): logged as ``score_timeouts``, so
    a researcher sees how much of the reward is timing. With ``workers > 0`` scoring runs
    in a pool of spawned processes (the parent holds model threads, so fork is unsafe); a
    verifier that hangs past ``timeout_s`` scores 0 and the pool is rebuilt. ``timeout_s``
    None takes the task's own ``score_timeout_s`` (code tasks: the sandbox's worst case),
    else ``DEFAULT_TIMEOUT_S``. ``workers = 0`` scores in-process, with no guard against a
    hung verifier: for cheap, trusted verifiers (string comparison on the testbed) and
    debugging.
    """

    DEFAULT_TIMEOUT_S = 60.0

    def __init__(self, task: Task, workers: int, timeout_s: float | None = None):
        if workers < 0:
            raise ValueError(f"score_workers must be >= 0, got {workers}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"score_timeout_s must be positive or null, got {timeout_s}")
        self.task = task
        self.workers = workers
        self.timeout_s = timeout_s or getattr(task, "score_timeout_s", self.DEFAULT_TIMEOUT_S)
        self._pool = self._start() if workers else None

    def _start(self) -> mp.pool.Pool:
        ctx = mp.get_context("spawn")
        return ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.task,))

    def score(
        self, problems: list[Problem], completions: list[list[str]]
    ) -> tuple[np.ndarray, list[Failure], np.ndarray]:
        jobs = [(b, i) for b, group in enumerate(completions) for i in range(len(group))]
        if self._pool is None:
            _init_worker(self.task)
            results = [_score_one(problems[b], completions[b][i]) for b, i in jobs]
        else:
            pending = [
                self._pool.apply_async(_score_one, (problems[b], completions[b][i]))
                for b, i in jobs
            ]
            results, restart = [], False
            for job in pending:
                try:
                    results.append(job.get(timeout=0.0 if restart else self.timeout_s))
                except mp.TimeoutError:
                    results.append((0.0, True, f"scoring timed out after {self.timeout_s} s"))
                    restart = True
            if restart:
                self._pool.terminate()
                self._pool = self._start()
        rewards = np.zeros((len(completions), max(map(len, completions), default=0)))
        timeouts = np.zeros(rewards.shape, dtype=bool)
        failures = []
        for (b, i), (value, timed_out, error) in zip(jobs, results, strict=True):
            rewards[b, i], timeouts[b, i] = value, timed_out
            if error is not None:
                failures.append(Failure(problems[b].id, i, error))
                log.warning("score failure on problem %s sample %d: %s", problems[b].id, i, error)
        return rewards, failures, timeouts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
