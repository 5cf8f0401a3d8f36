"""Arms: the ways of training that the paper compares, with one name and one label each.

An arm is a reward transform with its k_opt (Section 4), a k_opt schedule (Figure 3's
annealing) or the EntropyReg baseline (an entropy bonus on k_opt = 1). The sweep
(``experiments/repro_sweep.py``) launches arms by short name, :func:`sweep_arm`, and the
analysis labels every run from the config it was trained with, :func:`arm_label`. Both
build the label with the same functions below, so a sweep arm's runs land in the table
row and legend entry of that arm's label.

Labels: ``tang`` (Tang et al. 2025, pass@n) and every other transform that ignores k_opt
except LOO and raw (``grpo``, ``maxrl``, ...) by its own name, ``annealed (a→b)`` (a k_opt
schedule; schedules other than the paper's step are named, ``annealed (linear 8→1)``),
``EntropyReg (c)`` (entropy bonus c > 0 on the k_opt = 1 baseline) or ``k_opt=K``; a
transform other than the paper's (``loo`` for K = 1, ``pkpo_sloo_minus_one``, Eq. 33,
otherwise) is appended in brackets, e.g. ``k_opt=4 [pkpo_sloo]``, and so is a transform
scale other than the paper's (``transform.scale=loo``, :func:`pkpo.transforms.rescale`):
``annealed (8→1) [loo scale]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pkpo import transforms

TANG = "tang"
ANNEALED = "annealed"
ENTROPY_REG = "EntropyReg"

PAPER_DEFAULT_TRANSFORMS = {"loo", "pkpo_sloo_minus_one"}
"""The paper's transforms: LOO (Eq. 26) for k_opt = 1 and s^(loo-1) (Eq. 33) otherwise."""

IGNORE_K = ("loo", "raw", "none")
"""Transforms that ignore k, labelled k_opt = 1: LOO (Eq. 26) and raw rewards (``none`` is
the old name of ``raw``)."""

SWEEP_ARMS = ("k1", "k2", "k4", "k8", "tang", "anneal", "anneal_loo")
"""The sweep's fixed arm names (the default sweep); EntropyReg arms are ``ent<coef>``."""

PAPER_SCALE = "paper"
"""The transforms' scale as published (``transform.scale``)."""

ANNEAL_K = (8, 1)
"""The ``anneal`` arm's k_opt before and after its switch (Figure 3)."""

_K_LABEL = re.compile(r"^k_opt=(\d+)")


def k_opt_label(k: int, transform: str | None = None) -> str:
    """``k_opt=K``, with ``[transform]`` appended unless it is the paper's (or None)."""
    if transform is None or transform in PAPER_DEFAULT_TRANSFORMS:
        return f"k_opt={k}"
    return f"k_opt={k} [{transform}]"


def annealed_label(k_start: int | None, k_end: int | None, schedule: str = "step") -> str:
    """``annealed (8→1)`` for the step schedule, ``annealed (linear 8→1)`` for another."""
    kind = "" if schedule == "step" else f"{schedule} "
    return f"{ANNEALED} ({kind}{k_start}→{k_end})"


def entropy_label(coef: float, base: str = "k_opt=1") -> str:
    """``EntropyReg (c)`` on the k_opt = 1 baseline, ``<base> + EntropyReg (c)`` otherwise."""
    bonus = f"{ENTROPY_REG} ({coef:g})"
    return bonus if base == k_opt_label(1) else f"{base} + {bonus}"


def arm_label(
    transform: str | None,
    k_opt: int | None,
    schedule: str = "constant",
    k_start: int | None = None,
    k_end: int | None = None,
    entropy_coef: float = 0.0,
    scale: str = PAPER_SCALE,
) -> str:
    """The label of a run trained with these config values (``unknown`` if they say too
    little: no transform, or no k_opt for a transform that needs one)."""
    if transform == TANG:
        return TANG
    if _free_of_k(transform):  # e.g. grpo, maxrl: a baseline named by its transform
        return transform
    suffix = "" if scale == PAPER_SCALE else f" [{scale} scale]"
    if schedule != "constant":
        return annealed_label(k_start, k_end, schedule) + suffix
    if transform in IGNORE_K:
        base = k_opt_label(1, transform)
    elif transform is None or k_opt is None:
        base = "unknown"
    else:
        base = k_opt_label(k_opt, transform) + suffix
    return entropy_label(entropy_coef, base) if entropy_coef > 0 else base


def constant_k(label: str) -> int | None:
    """K of a ``k_opt=K`` label (any transform or bonus after it), else None."""
    match = _K_LABEL.match(label)
    return int(match.group(1)) if match else None


def _free_of_k(transform: str | None) -> bool:
    """A registered transform other than LOO and raw that ignores k_opt (``grpo``, ...)."""
    if transform is None or transform in IGNORE_K or transform not in transforms.names():
        return False
    return not transforms.uses_k(transform)


@dataclass(frozen=True)
class Arm:
    """A sweep arm: its short name (run folders are ``<name>_s<seed>``), the analysis
    label of its runs and the Hydra overrides that make it on top of a preset."""

    name: str
    label: str
    overrides: tuple[str, ...]


def sweep_arm(name: str, steps: int) -> Arm:
    """The arm a sweep name stands for; ``steps`` is the run length (``anneal`` switches
    k_opt halfway). Raises ``ValueError`` naming the known arms for an unknown name.

    Same optimizer and learning rate for every arm: ``k1`` (loo), ``k2`` ``k4`` ``k8``
    (pkpo_sloo_minus_one), ``tang`` (k = n), ``anneal`` (k_opt 8, then 1 from half of
    the steps), ``anneal_loo`` (``anneal`` with ``transform.scale=loo``: no n/k jump in
    advantage scale at the switch), ``ent<coef>`` (EntropyReg: loo plus an entropy bonus,
    e.g. ``ent0.01``); any other registered transform: ``<transform>-k<K>`` at constant
    k_opt = K (``pkpo_sloo_centred-k4``, ``maxpo-k4``), or by its name alone if it ignores
    k_opt (``grpo``, ``dr_grpo``, ``maxrl``, ``grpo_passk``).
    """
    if _free_of_k(name):
        return Arm(name, name, (f"transform={name}",))
    transform, sep, k = name.rpartition("-k")
    if sep and transform in transforms.names() and k.isdigit() and int(k) >= 1:
        return Arm(
            name,
            arm_label(transform, int(k)),
            (f"transform={transform}", f"schedule.k_opt={int(k)}"),
        )
    if name == "k1":
        return Arm(name, k_opt_label(1), ("transform=loo",))
    if name in ("k2", "k4", "k8"):
        k = int(name[1:])
        return Arm(name, k_opt_label(k), ("transform=pkpo_sloo_minus_one", f"schedule.k_opt={k}"))
    if name == "tang":
        return Arm(name, TANG, ("transform=tang",))
    if name in ("anneal", "anneal_loo"):
        start, end = ANNEAL_K
        overrides = (
            "schedule=step",
            f"schedule.k_start={start}",
            f"schedule.k_end={end}",
            f"schedule.switch_step={steps // 2}",
        )
        if name == "anneal":
            return Arm(name, annealed_label(start, end), overrides)
        label = arm_label("pkpo_sloo_minus_one", None, "step", start, end, scale="loo")
        return Arm(name, label, (*overrides, "transform.scale=loo"))
    if name.startswith("ent"):
        try:
            coef = float(name[3:])
        except ValueError:
            coef = -1.0
        if coef > 0:
            return Arm(
                name, entropy_label(coef), ("transform=loo", f"trainer.entropy_coef={coef:g}")
            )
    raise ValueError(
        f"unknown arm {name!r}: expected one of {', '.join(SWEEP_ARMS)}, ent<coef> (ent0.01), "
        "<transform>-k<K> (maxpo-k4) or a transform that ignores k (grpo)"
    )
