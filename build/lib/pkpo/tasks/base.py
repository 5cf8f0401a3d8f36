"""The task interface the RL loop talks to.

A task turns a split into a list of ``Problem``s, a problem into chat messages, and a
(problem, completion) pair into a reward. ``score`` runs in worker processes, so a task
must be picklable (plain attributes, no open handles) and ``score`` must be safe to call
on arbitrary model output: the loop turns an exception or a non-finite score into a zero
reward and counts it, but a verifier should return 0.0 for output it cannot parse. A
verifier whose verdict a time limit decided (code that ran out of time, an answer SymPy
could not compare in time) returns ``Reward(value, timed_out=True)``, which the loop counts
as ``score_timeouts`` apart from wrong answers.
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


def chat(system_prompt: str | None, user: str) -> list[dict[str, str]]:
    """The messages of one question: the system prompt (if any), then the user's turn."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user}]


class Reward(float):
    """A reward (a float, so it compares and adds like one) that also says whether a time
    limit decided part of it."""

    timed_out: bool

    def __new__(cls, value: float, timed_out: bool = False) -> Reward:
        reward = super().__new__(cls, value)
        reward.timed_out = bool(timed_out)
        return reward

    def __reduce__(self) -> tuple:  # scored in worker processes: keep the flag across pickling
        return (Reward, (float(self), self.timed_out))

    def __repr__(self) -> str:
        return f"Reward({float(self)!r}, timed_out={self.timed_out})"


@runtime_checkable
class Task(Protocol):
    name: str

    def load(self, split: str) -> list[Problem]:
        """All problems of ``split`` ("train" or "test"); raise with where it looked."""

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        """Chat messages (``[{"role": ..., "content": ...}]``) that ask the problem."""

    def score(self, problem: Problem, completion: str) -> float:
        """Reward of one completion; 1.0 means solved (binary tasks return 0 or 1); a
        ``Reward`` when a time limit decided it."""
