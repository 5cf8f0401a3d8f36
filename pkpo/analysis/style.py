"""How runs are shown: each arm's colour, line style and order; display names of models
and benchmarks."""

from __future__ import annotations

from typing import Any

from pkpo.arms import ANNEALED, ENTROPY_REG, TANG, constant_k
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


def arm_style(arm: str) -> dict[str, Any]:
    """Line colour and style of an arm: its k colour, dashed for a non-paper transform."""
    k = constant_k(arm)
    if k is not None:
        color = k_color(k)
    else:
        color = next((c for name, c in ARM_COLORS.items() if arm.startswith(name)), "#17becf")
    linestyle = "--" if "[" in arm or "+" in arm else "-"
    return {"color": color, "linestyle": linestyle}


def arm_sort_key(arm: str) -> tuple[int, float, str]:
    """Table/legend order: k_opt=1, 2, 4, ... then tang, EntropyReg, annealed, the rest."""
    k = constant_k(arm)
    if k is not None:
        return (0, k, arm)
    for rank, name in enumerate((TANG, ENTROPY_REG, ANNEALED), start=1):
        if arm.startswith(name):
            return (rank, 0, arm)
    return (9, 0, arm)
