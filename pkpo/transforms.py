"""Reward transforms: jointly map a group's n rewards to n advantages, found by name.

The RL loop calls ``transform(name, rewards[B, n], k)`` once per step on whole groups
(row b holds the n samples of prompt b), never on a split group. A transform is one
function registered with ``@register``, whose arguments are everything the rest of the
project needs to know about it (:class:`Spec`): whether it reads k_opt or stands for a
fixed k, the scale its advantages carry, whether it needs binary rewards and how many
samples, what its gradient estimates on the toy problem, and how its runs are labelled.
Its Hydra config ``transform=<name>`` (``name``, ``scale`` and the ``fixed_k`` that the
constant schedule defaults to: :meth:`Spec.config`, stored by :mod:`pkpo.config`), the
sweep's arm, the toy's target, the adapters' k and the analysis labels are all derived
from that spec, so adding a transform is one decorated function.

Scale: ``loo`` (Eq. 26) is on the reward scale, while the PKPO transforms inherit the
``k/n`` scale of ``s`` (Eq. 19). This is the paper's setup (k_opt = 1 runs use plain LOO),
``scale="paper"``. A run whose k_opt changes (an annealed schedule) then changes its step
size with it; ``scale="loo"`` divides each transform by the factor it carries
(:func:`carried_scale`, ``k/n`` for the PKPO transforms), so that ``pkpo_sloo_minus_one``,
``pkpo_sloo_centred`` and ``maxpo`` at k = 1 equal ``loo`` exactly (:func:`rescale`).

Beyond the paper, the registry holds the other published group advantages so that they
can be compared on the same work: ``maxpo``, ``maxrl``, ``passk_training``, ``grpo``,
``dr_grpo`` and ``grpo_passk`` (docs/estimators.md, "Other pass@k advantage estimators").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pkpo import arrays
from pkpo import estimators as E

Rewards = arrays.Array
"""A numpy array (or a list of numbers) or a torch tensor of shape ``[..., n]``."""
Transform = Callable[[Rewards, int], Rewards]

SCALES = ("paper", "loo")
"""``transform.scale``: ``paper`` as published, ``loo`` without the k/n of Eq. 19."""
#: epsilon added to the group std by ``grpo`` (verl's default) and to sigma by
#: ``passk_training`` (Chen et al.'s code)
STD_EPS = 1e-6


def _one(n: int, k: int = 1) -> float:
    return 1.0


@dataclass(frozen=True)
class Gradient:
    """What the mean of Eq. 18's estimate with a transform's advantages is:
    ``scale(n) * d max_g@j / d theta``, j being k_opt (``"k"``), the group size (``"n"``)
    or a number.

    ``exact``: that holds at every n (an unbiased estimate); otherwise it is only the
    large-n limit. ``per_reward_sd``: the scale is also divided by the reward's standard
    deviation (GRPO's std normalisation, in the limit). ``label`` names it in tables.
    """

    j: int | str = "k"
    scale: Callable[[int], float] = _one
    label: str = "∇max_g@k"
    exact: bool = True
    per_reward_sd: bool = False

    def order(self, n: int, k: int) -> int:
        """The j of ``max_g@j`` for groups of n at k_opt = k."""
        return {"k": k, "n": n}.get(self.j, self.j)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Spec:
    """A registered transform and everything the project derives from it.

    ``fixed_k``: None if it reads k_opt from the schedule; else the k it stands for
    (1, or ``"n"`` for the group size), which ``schedule=constant`` logs as k_opt.
    ``carries(n, k)``: the factor its advantages carry relative to ``loo``'s reward scale,
    which ``scale="loo"`` divides out. ``binary_only``: it rejects rewards other than 0/1.
    ``min_n``: the fewest samples per group it accepts. ``gradient``: what its gradient
    estimates (the toy problem's target); None if no exact statement is made.
    ``label``: the analysis label of its runs whatever their k_opt (``tang``, ``grpo``);
    None labels them ``k_opt=K [name]`` (the paper's own transforms, ``pkpo.arms``'s
    ``PAPER_TRANSFORMS``, without the ``[name]``).
    """

    name: str
    fn: Transform
    fixed_k: int | str | None = None
    carries: Callable[[int, int], float] = _one
    binary_only: bool = False
    min_n: int = 1
    gradient: Gradient | None = None
    label: str | None = None

    @property
    def uses_k(self) -> bool:
        """Whether it reads k_opt (``raw``, ``loo``, ``tang``, ... do not)."""
        return self.fixed_k is None

    def k_for(self, n: int, k_opt: int) -> int:
        """The k its advantages are computed at: its fixed k, else ``k_opt``."""
        if self.fixed_k is None:
            return k_opt
        return n if self.fixed_k == "n" else int(self.fixed_k)

    def config(self) -> dict:
        """Its Hydra config ``transform=<name>``: ``fixed_k`` is what ``schedule=constant``
        takes as k_opt by default (``conf/schedule/constant.yaml``)."""
        node: dict = {"name": self.name, "scale": "paper"}
        if self.fixed_k is not None:
            node["fixed_k"] = "${n}" if self.fixed_k == "n" else self.fixed_k
        return node


_REGISTRY: dict[str, Spec] = {}


def register(
    name: str,
    *,
    fixed_k: int | str | None = None,
    carries: Callable[[int, int], float] = _one,
    binary_only: bool = False,
    min_n: int = 1,
    gradient: Gradient | None = None,
    label: str | None = None,
) -> Callable[[Transform], Transform]:
    """Decorator: make ``fn(rewards, k) -> advantages`` available as ``transform(name, ...)``
    and as the config ``transform=<name>``; the keywords are the :class:`Spec`'s fields."""
    if fixed_k not in (None, "n") and not (isinstance(fixed_k, int) and fixed_k >= 1):
        raise ValueError(f"transform {name!r}: fixed_k must be None, 'n' or k >= 1")

    def wrap(fn: Transform) -> Transform:
        if name in _REGISTRY:
            raise ValueError(f"transform {name!r} is already registered")
        spec = Spec(name, fn, fixed_k, carries, binary_only, min_n, gradient, label)
        _REGISTRY[name] = spec
        return fn

    return wrap


def names() -> list[str]:
    """The registered transform names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> Spec:
    """The :class:`Spec` registered as ``name``; an unknown name lists the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown transform {name!r}; registered transforms: {', '.join(names())}")
    return _REGISTRY[name]


def get(name: str) -> Transform:
    """The transform function registered as ``name``."""
    return spec(name).fn


def uses_k(name: str) -> bool:
    """Whether transform ``name`` reads k_opt (:attr:`Spec.uses_k`)."""
    return spec(name).uses_k


def transform(name: str, rewards: Rewards, k: int, scale: str = "paper") -> Rewards:
    """Advantages ``[B, n]`` from rewards ``[B, n]`` (any ``[..., n]``) with transform ``name``.

    ``k`` is k_opt; transforms that do not use it (``uses_k(name)`` is False) ignore it.
    ``scale``: ``paper`` (as published) or ``loo`` (:func:`rescale`). The result is of the
    rewards' kind (numpy or torch) and floating dtype (float64 for integers and bools).
    """
    return rescale(get(name)(rewards, k), name, k, scale)


def carried_scale(name: str, n: int, k: int) -> float:
    """The factor transform ``name``'s advantages carry relative to the reward scale.

    ``k/n`` for the transforms built on ``s`` (Eq. 19: each sample lies in k/n of the C(n, k)
    subsets whose maxima it averages), except ``pkpo_sloo_minus_one`` at k = 1, which is ``loo``
    itself; 1 for every other transform (``loo``, ``tang`` = k/n at k = n, ``grpo``, ...).
    """
    return spec(name).carries(n, k)


def rescale(advantages: Rewards, name: str, k: int, scale: str) -> Rewards:
    """``advantages`` of transform ``name`` at k on the chosen scale (``[..., n]``).

    ``paper`` returns them unchanged; ``loo`` divides by :func:`carried_scale`, one positive
    number per (n, k), so the expected update keeps its direction and unbiasedness
    (Corollary 1) and only its step size changes: when an annealed run's k_opt drops to 1
    its advantages no longer grow by the n/k of Eq. 19 (what remains of the jump is the
    pass@k gradient's own size, small where pass@k is near 1). At k = 1
    ``pkpo_sloo_centred`` and ``maxpo`` times n are exactly ``loo`` (and
    ``pkpo_sloo_minus_one`` is ``loo``); ``pkpo_sloo`` times n is
    ``g_i - n/(n-1) mean_{j!=i} g_j``, not ``loo``: its baseline (Eq. 29) carries k/(n-1),
    not k/n, and no single factor removes both.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown transform scale {scale!r}; choose one of {', '.join(SCALES)}")
    if scale == "paper":
        return advantages
    return advantages / carried_scale(name, advantages.shape[-1], k)


def _binary(rewards: Rewards, name: str) -> tuple[Rewards, object]:
    """``as_float`` plus a check that every reward is 0 or 1, naming the first other
    (NaN and inf included, so no separate finiteness pass)."""
    t, dtype = E.as_float(rewards, name, check_finite=False)
    E.check_binary(t, name, f"{name} is defined for binary (pass/fail) rewards only")
    return t, dtype


def _centre(t: Rewards) -> Rewards:
    """``t - mean(t)`` per group, the mean taken of ``t - t[..., :1]``: a constant group
    then centres to exact zeros (a plain mean can miss by an ulp, which GRPO's 1/(std+eps)
    would blow up to ~1e-10)."""
    shifted = t - t[..., :1]
    return shifted - shifted.mean(-1, keepdims=True)


def _homogeneous(f: Callable[[Rewards], Rewards], t: Rewards) -> Rewards:
    """``f(t)`` for an ``f`` with ``f(c t) = c f(t)``; where it overflows in between (a group
    sum or difference of rewards near 1e308), ``f`` of the group divided by a power of two
    (exact: :func:`pkpo.arrays.power_of_two_scale`), times it."""
    with np.errstate(over="ignore", invalid="ignore"):  # numpy's warning: handled here
        out = f(t)
    if bool(arrays.namespace(out).isfinite(out).all()):
        return out
    scale = arrays.power_of_two_scale(t)
    return f(t / scale) * scale


def _need_n(t: Rewards, n_min: int, name: str, why: str) -> int:
    n = t.shape[-1]
    if n < n_min:
        raise ValueError(f"{name}: needs n >= {n_min} samples per group ({why}); got n={n}")
    return n


#: what the PKPO transforms' gradients estimate: d max_g@k / d theta itself (Eq. 19's k/n)
PASS_K = Gradient("k")
#: Eq. 33 at k = n (tang, grpo_passk)
PASS_N = Gradient("n", label="∇max_g@n")
#: REINFORCE and LOO: E[sum_i g_i score_i] = n d E[g], and max_g@1 = E[g]
N_PASS1 = Gradient(1, float, "n ∇max_g@1")


# ------------------------------------------------------------------ the paper's


@register("raw", fixed_k=1, gradient=N_PASS1)
def raw(rewards: Rewards, k: int) -> Rewards:
    """The rewards themselves (REINFORCE without a baseline), as floats."""
    t, dtype = E.as_float(rewards, "raw")
    return E.restore(arrays.copy(t), dtype)


@register("loo", fixed_k=1, min_n=2, gradient=N_PASS1)
def loo(rewards: Rewards, k: int) -> Rewards:
    """Eq. 26: ``g_i - mean_{j != i} g_j``, the paper's k_opt = 1 baseline. Needs n >= 2."""
    t, dtype = E.as_float(rewards, "loo")
    n = _need_n(t, 2, "loo", "to leave one out")
    return E.restore(_homogeneous(lambda x: x - (x.sum(-1, keepdims=True) - x) / (n - 1), t), dtype)


def _eq19_scale(n: int, k: int) -> float:
    """The k/n that ``s`` (Eq. 19) and the transforms built on it carry."""
    return k / n


@register("pkpo_sloo", carries=_eq19_scale, min_n=2, gradient=PASS_K)
def pkpo_sloo(rewards: Rewards, k: int) -> Rewards:
    """Eq. 29 (``estimators.sloo``); k < n."""
    return E.sloo(rewards, k)


@register(
    "pkpo_sloo_minus_one",
    carries=lambda n, k: 1.0 if k == 1 else _eq19_scale(n, k),
    min_n=2,
    gradient=PASS_K,
)
def pkpo_sloo_minus_one(rewards: Rewards, k: int) -> Rewards:
    """The paper's PKPO: Eq. 33 (``estimators.sloo_minus_one``) for k >= 2, ``loo`` for k = 1."""
    t, dtype = E.as_float(rewards, "pkpo_sloo_minus_one", check_finite=False)
    k = E.check_k(k, t.shape[-1], "pkpo_sloo_minus_one")
    return loo(rewards, k) if k == 1 else E.sloo_minus_one(rewards, k)


@register("pkpo_sloo_centred", carries=_eq19_scale, min_n=2, gradient=PASS_K)
def pkpo_sloo_centred(rewards: Rewards, k: int) -> Rewards:
    """``estimators.sloo_centred``: Eq. 29's baseline rescaled by k/n (beyond the paper)."""
    return E.sloo_centred(rewards, k)


@register("tang", fixed_k="n", min_n=2, gradient=PASS_N, label="tang")
def tang(rewards: Rewards, k: int) -> Rewards:
    """Tang et al. (2025): ``sloo_minus_one`` with k = n (pass@n); ``k`` is ignored."""
    t, dtype = E.as_float(rewards, "tang", check_finite=False)
    return E.restore(E.sloo_minus_one(t, t.shape[-1]), dtype)


# ------------------------------------------------------- other published estimators


@register("maxpo", carries=_eq19_scale, min_n=2, gradient=PASS_K)
def maxpo(rewards: Rewards, k: int) -> Rewards:
    """MaxPO (Takashiro et al., arXiv 2606.06080): PKPO with a leave-two-out baseline.

    This follows the description in the paper's abstract: an unbiased max_g@k gradient
    whose advantages sum exactly to zero in every group. Starting from PKPO's advantage on
    a sample set S (Eq. 33, max of the empty set taken as 0, so k = 1 gives ``s``),
    ``a_j(S) = 1/C(|S|,k) * sum_{I subset S, |I|=k, j in I} (max_I g - max_{I \\ j} g)``,
    the baseline of sample i is PKPO's advantages recomputed without i:

        A_i = a_i([n]) - 1/n * sum_{j != i} a_j([n] \\ {i})

    Each term of the baseline leaves out i and j. It does not depend on g_i, so the gradient
    stays unbiased (Corollary 1), and since ``sum_j a_j(S) = k (rho_k(S) - rho_{k-1}(S))`` is
    a U-statistic, ``sum_i sum_{j != i} a_j([n] \\ i) = n sum_j a_j([n])``: the group sums to
    exactly zero. Expanding ``a`` (Eq. 33-34), the k-1 terms cancel and
    ``A_i = s_i - k/n * rho(g without i, k)``, which is ``estimators.sloo_centred``: computed
    with one sort and cumulative sums, O(n log n) per group rather than the O(n^2) of
    recomputing PKPO without each i (tests check both against the subset definition).

    Needs 1 <= k < n: with k = n no size-k subset excludes i, and no exactly centred
    unbiased estimator exists (n = k = 2: ``c_1(g_2) + c_2(g_1) = 2 max(g_1, g_2)`` has no
    solution), so k = n raises ValueError.
    """
    t, dtype = E.as_float(rewards, "maxpo")  # so a bad reward names maxpo
    E.check_k(k, t.shape[-1], "maxpo")
    if k == t.shape[-1]:
        raise ValueError(
            f"maxpo: k=n={k} leaves no size-k subset without sample i, and at k = n no "
            "exactly centred unbiased baseline exists; use k < n, or tang/grpo_passk for k = n"
        )
    return E.restore(E.sloo_centred(t, k), dtype)


@register("maxrl", fixed_k="n", binary_only=True, label="maxrl")
def maxrl(rewards: Rewards, k: int) -> Rewards:
    """MaxRL (Tajwar et al., arXiv 2602.02710), as in prime-rl and SkyRL: ``(r_i - m) / m``.

    ``m`` is the group's mean reward; binary rewards only (the paper's setting). With c of n
    correct this is ``n/c - 1`` for a correct sample and ``-1`` for an incorrect one, the
    advantage form of the paper's ``1/c * sum_{correct} grad log pi``. A group with no
    correct sample (m = 0) gets all-zero advantages, as those frameworks do (their epsilon
    makes 0/eps = 0). That choice drops the "-1" baseline exactly when all n fail, so with
    ``J_m = log-likelihood truncated at m`` (the paper's ``grad J_m = sum_{j<=m} (1-p)^(j-1)
    grad p``) the expected update is ``n grad J_{n-1}``, not the ``n grad J_n`` of the
    paper's estimator: the bias is ``-n (1-p)^(n-1) grad p`` (tests enumerate it exactly).
    ``k`` is not used: MaxRL's objective is fixed by n.
    """
    t, dtype = _binary(rewards, "maxrl")
    xp = arrays.namespace(t)
    mean = t.mean(-1, keepdims=True)
    safe = xp.where(mean > 0, mean, xp.ones_like(mean))
    out = xp.where(mean > 0, (t - mean) / safe, xp.zeros_like(t))
    return E.restore(out, dtype)


@register("passk_training", binary_only=True)
def passk_training(rewards: Rewards, k: int) -> Rewards:
    """Chen et al. (arXiv 2508.10751, "Pass@k Training"): the analytical advantage.

    Binary rewards, c of n correct: ``rho = 1 - C(n-c, k)/C(n, k)`` (Eq. 3, the mean reward
    of the size-k sub-groups), ``sigma = sqrt(rho (1 - rho))`` (their std), and

        correct:   A = (1 - rho) / (sigma + eps)
        incorrect: A = (1 - rho - C(n-c-1, k-1)/C(n-1, k-1)) / (sigma + eps)

    with eps = ``STD_EPS`` = 1e-6 as in their code. It is the mean over the sub-groups
    containing i of the normalised sub-group advantage ``(max_I - rho) / sigma``, i.e.
    ``(n/k * binary_weights_i - rho) / (sigma + eps)``: the baseline rho and sigma include
    sample i, so it is not an unbiased gradient of pass@k (docs/estimators.md: measured
    bias). Groups with rho in {0, 1} get zeros. k = 1 is GRPO with the population std (ddof = 0).
    Needs 1 <= k <= n; raises ValueError for non-binary rewards.
    """
    t, dtype = _binary(rewards, "passk_training")
    k = E.check_k(k, t.shape[-1], "passk_training")  # before the cache: 2.0 hashes as 2
    by_c = arrays.constant(_passk_training_table, (t.shape[-1], k), t)[arrays.counts(t)]
    correct, wrong = by_c[..., :1], by_c[..., 1:]  # each [..., 1]
    return E.restore(wrong + t * (correct - wrong), dtype)


@functools.lru_cache(maxsize=256)
def _passk_training_table(n: int, k: int) -> np.ndarray:
    """``[n + 1, 2]``: Chen et al.'s (correct, incorrect) advantages for c = 0..n correct.

    The advantages depend on a group only through c, so they are tabulated once per (n, k).
    """
    c = np.arange(n + 1)
    rho = E.pass_at_k(n, c, k)
    if k >= 2:  # C(n-c-1, k-1)/C(n-1, k-1) = 1 - pass@(k-1) of n-1 samples with c correct
        fail_without_i = np.append(1 - E.pass_at_k(n - 1, c[:-1], k - 1), 0.0)  # c = n: none
    else:
        fail_without_i = np.ones(n + 1)  # C(n-c-1, 0) / C(n-1, 0)
    sigma = np.sqrt(rho * (1 - rho)) + STD_EPS
    return np.stack([(1 - rho) / sigma, (1 - rho - fail_without_i) / sigma], axis=-1)


@register(
    "grpo",
    fixed_k=1,
    min_n=2,
    gradient=Gradient(
        1, lambda n: n - 1.0, "(n−1) ∇max_g@1 / sd(g)", exact=False, per_reward_sd=True
    ),
    label="grpo",
)
def grpo(rewards: Rewards, k: int) -> Rewards:
    """GRPO (Shao et al., 2024): the group z-score ``(r_i - mean) / (std + eps)``.

    ``std`` is the sample standard deviation (Bessel's n-1, as ``torch.std`` in verl and
    TRL) and eps = ``STD_EPS`` = 1e-6 (verl's default), so constant groups get zeros. The
    std is a function of the whole group, so the expected update is not a fixed multiple
    of the pass@1 gradient (docs/estimators.md: measured bias). Needs n >= 2.
    """
    t, dtype = E.as_float(rewards, "grpo")
    n = _need_n(t, 2, "grpo", "for the sample std")
    xp = arrays.namespace(t)
    with np.errstate(over="ignore", invalid="ignore"):  # numpy's warning: handled below
        centred, eps = _centre(t), STD_EPS
        squares = (centred * centred).sum(-1, keepdims=True)
    if not bool(xp.isfinite(squares).all()):  # |g| past ~1e154: z-score the scaled group
        scale = arrays.power_of_two_scale(t)
        centred, eps = _centre(t / scale), STD_EPS / scale
        squares = (centred * centred).sum(-1, keepdims=True)
    return E.restore(centred / (xp.sqrt(squares / (n - 1)) + eps), dtype)


@register(
    "dr_grpo", fixed_k=1, gradient=Gradient(1, lambda n: n - 1.0, "(n−1) ∇max_g@1"), label="dr_grpo"
)
def dr_grpo(rewards: Rewards, k: int) -> Rewards:
    """Dr. GRPO (Liu et al., arXiv 2503.20783): ``r_i - mean``, GRPO without the std.

    Equals ``(n-1)/n * loo``; its expected update is exactly (n-1) times the pass@1 (mean
    reward) gradient. n = 1 gives 0.
    """
    t, dtype = E.as_float(rewards, "dr_grpo")
    return E.restore(_homogeneous(_centre, t), dtype)


@register("grpo_passk", fixed_k="n", min_n=2, gradient=PASS_N, label="grpo_passk")
def grpo_passk(rewards: Rewards, k: int) -> Rewards:
    """verl's ``grpo_passk`` (Tang et al., arXiv 2503.19595), k = n: ``k`` is ignored.

    The best sample of each group gets ``max - second largest``, the others 0: verl with
    ``norm_adv_by_std_in_grpo=False`` (its default also divides by the group's std + eps;
    that variant is not registered here). A tie for the maximum gives the whole group 0, so which
    tied sample is "best" does not matter. This is exactly ``tang`` on any rewards,
    ``max g - max_{j != i} g_j``. Needs n >= 2.
    """
    t, dtype = E.as_float(rewards, "grpo_passk")
    _need_n(t, 2, "grpo_passk", "for a second-best sample")
    top = arrays.sort(t)[0][..., -2:]  # (second largest, largest)
    gap = top[..., 1:] - top[..., :1]
    # a tied maximum has gap 0, so marking every sample equal to it is marking the best one
    out = arrays.namespace(t).where(t == top[..., 1:], gap, 0.0 * gap)
    return E.restore(out, dtype)
