"""k_opt over training steps: which pass@k the transform optimizes at each step.

The paper anneals k_opt from 8 to 1 at step 1500 (Figure 3) to get pass@k gains early and
keep pass@1. A schedule is a plain function ``step -> k_opt`` made by ``make_schedule``.
"""

from __future__ import annotations

from collections.abc import Callable

Schedule = Callable[[int], int]


def constant(k: int) -> Schedule:
    """k_opt = k at every step."""
    return lambda step: k


def step(k_start: int, k_end: int, switch_step: int) -> Schedule:
    """k_start before ``switch_step``, k_end from it on (the paper's annealing: 8, 1, 1500)."""
    return lambda t: k_start if t < switch_step else k_end


def linear(k_start: int, k_end: int, steps: int) -> Schedule:
    """Linear interpolation from k_start at step 0 to k_end at ``steps``, rounded to an int."""
    if steps <= 0:
        raise ValueError(f"schedule linear: steps must be positive, got {steps}")
    return lambda t: round(k_start + (k_end - k_start) * min(max(t, 0), steps) / steps)


_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "linear": linear,
}


def make_schedule(name: str, **kwargs: int) -> Schedule:
    """The schedule ``name`` built from its config keys; errors name what is wrong."""
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(_SCHEDULES)}")
    try:
        return _SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name}: bad arguments {sorted(kwargs)}: {e}") from None


def k_values(schedule: Schedule, steps: int) -> set[int]:
    """Every k_opt the schedule takes over ``steps`` steps (used to validate against n)."""
    return {schedule(t) for t in range(max(steps, 1))}
