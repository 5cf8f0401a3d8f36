"""How runs are shown: each arm's colour, line style and order; display names of models
and benchmarks."""

from __future__ import annotations

from typing import Any

from pkpo.arms import ANNEALED, ENTROPY_REG, TANG, ArmConfig
from pkpo.toy.style import K_COLORS

BENCHMARKS = {"math": "MATH", "mbpp": "Coding", "arc": "ARC"}
"""Our task names -> the paper's benchmark names (mbpp trains on MBPP, evaluates on HumanEval)."""

MODEL_NAMES = {"gemma2_9b": "GEMMA2-9B", "llama31_8b": "LLAMA3.1-8B", "gemma2_2b": "GEMMA2-2B"}

ARM_COLORS = {TANG: "#000000", ANNEALED: "#d62ad6", ENTROPY_REG: "#8c8c8c"}
"""Colours of the arms that are not a constant k_opt; k_opt = k uses ``K_COLORS[k]``, the
toy figures' colour of k (:mod:`pkpo.toy.style`), so k means one colour everywhere.
Black, magenta and grey lie outside the turbo colour map those come from."""


def display_model(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def display_task(task: str) -> str:
    return BENCHMARKS.get(task, task)


def k_color(k: int) -> Any:
    """The colour of k (k_opt or the toy's k) in every figure."""
    return K_COLORS[min(max(int(k), 1), max(K_COLORS))]


def arm_style(arm: ArmConfig) -> dict[str, Any]:
    """Line colour and style of an arm: its k colour, dashed if not the paper's setting."""
    shown = arm.shown
    color = k_color(shown.k) if shown.k is not None else ARM_COLORS.get(shown.kind, "#17becf")
    return {"color": color, "linestyle": "--" if shown.dashed else "-"}
