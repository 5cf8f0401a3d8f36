"""The task interface the RL loop talks to.

A task turns a split into a list of ``Problem``s, a problem into chat messages, and a
(problem, completion) pair into a reward. ``score`` runs in worker processes, so a task
must be picklable (plain attributes, no open handles) and ``score`` must be safe to call
on arbitrary model output: the loop turns an exception or a non-finite score into a zero
reward and counts it, but a verifier should return 0.0 for output it cannot parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Problem:
    """One prompt of a task set: ``id`` is stable across runs (used by the solve rate)."""

    id: str
    question: str
    answer: Any
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    name: str

    def load(self, split: str) -> list[Problem]:
        """All problems of ``split`` ("train" or "test"); raise with where it looked."""

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        """Chat messages (``[{"role": ..., "content": ...}]``) that ask the problem."""

    def score(self, problem: Problem, completion: str) -> float:
        """Reward of one completion; 1.0 means solved (binary tasks return 0 or 1)."""
