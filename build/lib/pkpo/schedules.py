"""k_opt over training steps: which pass@k the transform optimizes at each step.

The paper anneals k_opt from 8 to 1 at step 1500 (Figure 3) to get pass@k gains early and
keep pass@1. A schedule is a callable ``step -> k_opt``; the ``schedule`` config group builds
one with Hydra's ``_target_`` (``conf/schedule/*.yaml``), and integrations configured by
strings (TRL) look one up by ``name`` with ``make_schedule``. The k values are checked where
they are used, by the transform's estimators (``check_schedule``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pkpo import transforms

Schedule = Callable[[int], int]


@dataclass(frozen=True)
class Constant:
    """k_opt at every step."""

    k_opt: int
    name: str = "constant"

    def __call__(self, step: int) -> int:
        return self.k_opt


@dataclass(frozen=True)
class Step:
    """k_start before ``switch_step``, k_end from it on (the paper's annealing: 8, 1, 1500)."""

    k_start: int
    k_end: int
    switch_step: int
    name: str = "step"

    def __call__(self, step: int) -> int:
        return self.k_start if step < self.switch_step else self.k_end


@dataclass(frozen=True)
class Linear:
    """Linear interpolation from k_start at step 0 to k_end at ``steps``, rounded to an int."""

    k_start: int
    k_end: int
    steps: int
    name: str = "linear"

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"schedule linear: steps must be positive, got {self.steps}")

    def __call__(self, step: int) -> int:
        progress = min(max(step, 0), self.steps) / self.steps
        return round(self.k_start + (self.k_end - self.k_start) * progress)


SCHEDULES: dict[str, type] = {cls.name: cls for cls in (Constant, Step, Linear)}


def make_schedule(name: str, **kwargs: int) -> Schedule:
    """The schedule called ``name`` (for string-configured integrations); errors name the
    problem."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name}: bad arguments {sorted(kwargs)}: {e}") from None


def k_values(schedule: Schedule, steps: int) -> set[int]:
    """Every k_opt the schedule takes over ``steps`` steps (used to validate against n)."""
    return {schedule(t) for t in range(max(steps, 1))}


def check_schedule(transform: str, schedule: Schedule, n: int, steps: int) -> None:
    """Run transform ``transform`` on a dummy group of ``n`` for every k_opt the schedule
    takes over ``steps`` steps, so a run fails before training with the estimators' own
    reason (k > n, k = n for sloo, ...). Raises ``ValueError`` naming transform, k and n."""
    for k in sorted(k_values(schedule, steps)):
        try:
            transforms.transform(transform, np.zeros((1, n)), k)
        except ValueError as e:
            raise ValueError(f"transform {transform} with k_opt={k} and n={n}: {e}") from None
