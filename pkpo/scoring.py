"""Score completions in worker processes; a failing verifier costs a sample, not the run."""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np

from pkpo.tasks.base import Problem, Task

log = logging.getLogger(__name__)

_TASK: Task | None = None  # the task, set once per worker process


def _init_worker(task: Task) -> None:
    global _TASK
    _TASK = task


def _score_one(problem: Problem, completion: str) -> tuple[float, str | None]:
    """``(reward, None)``, or ``(0.0, reason)`` when the verifier raised or was not finite."""
    try:
        value = float(_TASK.score(problem, completion))
    except Exception as e:  # noqa: BLE001 - untrusted output must never crash the run
        return 0.0, f"{type(e).__name__}: {e}"[:500]
    if not math.isfinite(value):
        return 0.0, f"non-finite score {value}"
    return value, None


@dataclass(frozen=True)
class Failure:
    problem_id: str
    sample: int
    error: str


class Scorer:
    """``score(problems, completions[B][n]) -> (rewards [B, n], failures)``.

    With ``workers > 0`` scoring runs in a pool of spawned processes (the parent holds
    model threads, so fork is unsafe); a verifier that hangs past ``timeout_s`` scores 0
    and the pool is rebuilt. ``workers = 0`` scores in-process (debugging only).
    """

    def __init__(self, task: Task, workers: int, timeout_s: float = 60.0):
        if workers < 0:
            raise ValueError(f"score_workers must be >= 0, got {workers}")
        self.task = task
        self.workers = workers
        self.timeout_s = timeout_s
        self._pool = self._start() if workers else None

    def _start(self) -> mp.pool.Pool:
        ctx = mp.get_context("spawn")
        return ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.task,))

    def score(
        self, problems: list[Problem], completions: list[list[str]]
    ) -> tuple[np.ndarray, list[Failure]]:
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
                    results.append((0.0, f"scoring timed out after {self.timeout_s} s"))
                    restart = True
            if restart:
                self._pool.terminate()
                self._pool = self._start()
        rewards = np.zeros((len(completions), max(map(len, completions), default=0)))
        failures = []
        for (b, i), (value, error) in zip(jobs, results, strict=True):
            rewards[b, i] = value
            if error is not None:
                failures.append(Failure(problems[b].id, i, error))
                log.warning("score failure on problem %s sample %d: %s", problems[b].id, i, error)
        return rewards, failures

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
