"""Arms: the ways of training that the paper compares, with one name and one label each.

An arm is a reward transform with its k_opt (Section 4), a k_opt schedule (Figure 3's
annealing) or the EntropyReg baseline (an entropy bonus on k_opt = 1). A run's arm is the
structured :class:`ArmConfig` read from the config it was trained with; its label, colour
kind and order are computed from those fields for display and are never parsed back. The
sweep (``experiments/repro_sweep.py``) launches arms by short name, :func:`sweep_arm`, and
builds their labels with the same class, so a sweep arm's runs land in the table row and
legend entry of that arm's label.

Labels: a transform whose spec names its runs (:attr:`pkpo.transforms.Spec.label`: ``tang``,
``grpo``, ``maxrl``, ...) by that name, ``annealed (a→b)`` (a k_opt schedule; schedules
other than the paper's step are named, ``annealed (linear 8→1)``), ``EntropyReg (c)``
(entropy bonus c > 0 on the k_opt = 1 baseline) or ``k_opt=K``; a transform other than the
paper's (``loo`` for K = 1, ``pkpo_sloo_minus_one``, Eq. 33, otherwise; :data:`PAPER_TRANSFORMS`) is
appended in brackets, e.g. ``k_opt=4 [pkpo_sloo]``, and so is a transform scale other than
the paper's (``transform.scale=loo``, :func:`pkpo.transforms.rescale`):
``annealed (8→1) [loo scale]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pkpo import transforms

TANG = "tang"
ANNEALED = "annealed"
ENTROPY_REG = "EntropyReg"

# The paper's arms, defined here once: the sweep's default arms, the rows of every results
# table (pkpo.analysis.tables) and the labels' "[name]" all derive from these.
PAPER_K = (1, 2, 4, 8)
"""The k_opt the paper trains at (Section 4, Tables 1-8)."""
PAPER_TRANSFORMS = ("loo", "pkpo_sloo_minus_one")
"""The paper's own transforms: LOO (Eq. 26) at k_opt = 1, PKPO (Eq. 33) above it; their
``k_opt=K`` labels carry no ``[name]``."""

SWEEP_ARMS = (*(f"k{k}" for k in PAPER_K), "tang", "anneal", "anneal_loo")
"""The sweep's fixed arm names (the default sweep); EntropyReg arms are ``ent<coef>``."""

PAPER_SCALE = "paper"
"""The transforms' scale as published (``transform.scale``)."""

ANNEAL_K = (8, 1)
"""The ``anneal`` arm's k_opt before and after its switch (Figure 3)."""

KINDS = ("k_opt", TANG, ENTROPY_REG, ANNEALED, "named", "unknown")
"""What an arm is: a constant ``k_opt=K``, ``tang``, the EntropyReg baseline, an annealed
schedule, another transform named by its spec (``grpo``), or a config that says too little.
Tables and legends show them in this order (the last two together, by label)."""


def _spec(transform: str | None) -> transforms.Spec | None:
    """The transform's spec; None for no transform or one not registered here."""
    return transforms.spec(transform) if transform in transforms.names() else None


def k_opt_label(k: int, transform: str | None = None) -> str:
    """``k_opt=K``, with ``[transform]`` appended unless it is the paper's (or None)."""
    if transform is None or transform in PAPER_TRANSFORMS:
        return f"k_opt={k}"
    return f"k_opt={k} [{transform}]"


def annealed_label(k_start: int | None, k_end: int | None, schedule: str = "step") -> str:
    """``annealed (8→1)`` for the step schedule, ``annealed (linear 8→1)`` for another."""
    kind = "" if schedule == "step" else f"{schedule} "
    return f"{ANNEALED} ({kind}{k_start}→{k_end})"


PAPER_ROWS = (*(k_opt_label(k) for k in PAPER_K), TANG, ENTROPY_REG)
"""The arms every results table shows, with or without runs ([TZSM25] is ``tang``)."""


def entropy_label(coef: float, base: str = "k_opt=1") -> str:
    """``EntropyReg (c)`` on the k_opt = 1 baseline, ``<base> + EntropyReg (c)`` otherwise."""
    bonus = f"{ENTROPY_REG} ({coef:g})"
    return bonus if base == k_opt_label(1) else f"{base} + {bonus}"


@dataclass(frozen=True)
class Shown:
    """How an arm is shown: its label, :data:`KINDS` entry, the K of a ``k_opt=K`` arm
    (its colour and order) and whether it is drawn dashed (not the paper's own setting)."""

    label: str
    kind: str
    k: int | None = None
    dashed: bool = False


@dataclass(frozen=True)
class ArmConfig:
    """A run's arm as its config states it (``transform.name``, ``schedule.*``,
    ``trainer.entropy_coef``, ``transform.scale``)."""

    transform: str | None = None
    k_opt: int | None = None
    schedule: str = "constant"
    k_start: int | None = None
    k_end: int | None = None
    entropy_coef: float = 0.0
    scale: str = PAPER_SCALE

    @functools.cached_property
    def shown(self) -> Shown:
        """Its label, kind, K and line style, from the fields alone."""
        spec = _spec(self.transform)
        if spec is not None and spec.label is not None:  # tang, grpo, ...: named by its spec
            return Shown(spec.label, TANG if spec.label == TANG else "named")
        suffix = "" if self.scale == PAPER_SCALE else f" [{self.scale} scale]"
        if self.schedule != "constant":
            label = annealed_label(self.k_start, self.k_end, self.schedule) + suffix
            return Shown(label, ANNEALED, dashed=bool(suffix))
        if spec is not None and isinstance(spec.fixed_k, int):  # loo, raw: k_opt = 1
            k, base, dashed = (
                spec.fixed_k,
                k_opt_label(spec.fixed_k, self.transform),
                self.transform not in PAPER_TRANSFORMS,
            )
        elif self.transform is None or self.k_opt is None:
            k, base, dashed = None, "unknown", False
        else:
            k, base = self.k_opt, k_opt_label(self.k_opt, self.transform) + suffix
            dashed = bool(suffix) or spec is None or self.transform not in PAPER_TRANSFORMS
        kind = "unknown" if k is None else "k_opt"
        if self.entropy_coef > 0:
            if base == k_opt_label(1):
                return Shown(entropy_label(self.entropy_coef, base), ENTROPY_REG)
            return Shown(entropy_label(self.entropy_coef, base), kind, k, dashed=True)
        return Shown(base, kind, k, dashed)

    @property
    def label(self) -> str:
        """The arm label of its runs (``unknown`` if the config says too little: no
        transform, or no k_opt for a transform that needs one)."""
        return self.shown.label

    def sort_key(self) -> tuple[int, float, str]:
        """Table and legend order: k_opt=1, 2, 4, ... then tang, EntropyReg, annealed, then
        the named transforms and unknown arms by label (:data:`KINDS`)."""
        shown = self.shown
        rank = min(KINDS.index(shown.kind), KINDS.index("named"))
        return (rank, shown.k or 0, shown.label)


def arm_label(
    transform: str | None,
    k_opt: int | None,
    schedule: str = "constant",
    k_start: int | None = None,
    k_end: int | None = None,
    entropy_coef: float = 0.0,
    scale: str = PAPER_SCALE,
) -> str:
    """The label of a run trained with these config values (:attr:`ArmConfig.label`)."""
    return ArmConfig(transform, k_opt, schedule, k_start, k_end, entropy_coef, scale).label


@dataclass(frozen=True)
class Arm:
    """A sweep arm: its short name (run folders are ``<name>_s<seed>``), the analysis
    label of its runs and the Hydra overrides that make it on top of a preset."""

    name: str
    label: str
    overrides: tuple[str, ...]


def run_name(arm: str, seed: int) -> str:
    """A sweep's name for the run of ``arm`` (a sweep name) on ``seed``: its folder and its
    key in the sweep's manifest."""
    return f"{arm}_s{seed}"


def sweep_arm(name: str, steps: int) -> Arm:
    """The arm a sweep name stands for; ``steps`` is the run length (``anneal`` switches
    k_opt halfway). Raises ``ValueError`` naming the known arms for an unknown name.

    Same optimizer and learning rate for every arm: ``k1`` (loo), ``k2`` ``k4`` ``k8``
    (pkpo_sloo_minus_one), ``tang`` (k = n), ``anneal`` (k_opt 8, then 1 from half of
    the steps), ``anneal_loo`` (``anneal`` with ``transform.scale=loo``: no n/k jump in
    advantage scale at the switch), ``ent<coef>`` (EntropyReg: loo plus an entropy bonus,
    e.g. ``ent0.01``); any other registered transform: ``<transform>-k<K>`` at constant
    k_opt = K (``pkpo_sloo_centred-k4``, ``maxpo-k4``), or by its name alone if it ignores
    k_opt (``grpo``, ``dr_grpo``, ``maxrl``, ``grpo_passk``, and ``tang`` itself), which
    refuses a ``-k<K>`` (``loo-k4`` would run k_opt = 4 under the label k_opt = 1).
    """
    spec = _spec(name)
    if spec is not None and not spec.uses_k:  # tang, grpo, loo, ...: fixed k, by its name
        return Arm(name, arm_label(name, None), (f"transform={name}",))
    transform, sep, k = name.rpartition("-k")
    if sep and _spec(transform) is not None and not transforms.uses_k(transform):
        fixed = _spec(transform).fixed_k
        raise ValueError(
            f"arm {name!r}: transform {transform} fixes k (k = {fixed}) and ignores k_opt; "
            f"name the arm {transform!r}"
        )
    if sep and _spec(transform) is not None and k.isdigit() and int(k) >= 1:
        return Arm(
            name,
            arm_label(transform, int(k)),
            (f"transform={transform}", f"schedule.k_opt={int(k)}"),
        )
    if name in {f"k{k}" for k in PAPER_K}:
        k = int(name[1:])
        if k == 1:  # loo fixes k = 1
            return Arm(name, k_opt_label(1), (f"transform={PAPER_TRANSFORMS[0]}",))
        overrides = (f"transform={PAPER_TRANSFORMS[1]}", f"schedule.k_opt={k}")
        return Arm(name, k_opt_label(k), overrides)
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
