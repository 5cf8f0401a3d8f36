"""Decisions of a study, all read from one family of simultaneous confidence intervals.

A study asks several kinds of question of its seeds: is A greater than B (difference), is A
no worse than B by more than a margin (non-inferiority), do A and B agree within a margin
(equivalence), is A the best of a set (intersection-union). Testing each kind with its own
test and correcting each kind as a separate family lets the joint error grow to a multiple
of alpha. Here every comparison of the study gets one two-sided t interval for its mean
per-seed contrast, at the Bonferroni level ``1 - alpha / m`` over all ``m`` comparisons, and
every decision of every kind is read off those intervals (the interval-inclusion principle):

* ``greater``: the interval lies above 0; ``less``: below 0;
* ``non-inferior``: its lower end is above ``-margin``; ``inferior``: its upper end is below
  ``-margin``;
* ``equivalent``: it lies inside ``(-margin, +margin)``.

If all ``m`` intervals cover their true means, which happens with probability at least
``1 - alpha``, no decision of any kind is wrong. So one family, difference and equivalence
together, has family-wise error at most alpha (Bonferroni rather than Holm, because Holm
has no simultaneous intervals to read the other decisions from).

Power is computed at design time by simulation of the same rule, from a pilot's standard
deviation of each contrast; :func:`power_one` is the exact noncentral-t power of one
one-sided bound, against which the simulation is tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW

RULES = ("greater", "noninferior", "equivalent", "best")
"""What a part of a claim asserts: A > B; A >= B - margin; |A - B| < margin; A is best of a
set (against each rival: greater or within margin)."""
VERDICTS = ("reproduced", "contradicted", "equivalent", "inconclusive", "no data")


@dataclass(frozen=True)
class Interval:
    """A comparison's mean per-seed contrast and its simultaneous interval."""

    effect: float
    low: float
    high: float
    n: int

    @property
    def missing(self) -> bool:
        return math.isnan(self.effect) or math.isnan(self.low)


def simultaneous_interval(d: Sequence[float], alpha: float, m: int) -> Interval:
    """The two-sided t interval of mean(d) at level ``1 - alpha / m`` (statsmodels); NaN
    bounds with fewer than two seeds or no spread."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if len(d) < 2 or float(d.std()) == 0.0:
        return Interval(float(d.mean()), math.nan, math.nan, len(d))
    low, high = DescrStatsW(d).tconfint_mean(alpha=alpha / m)
    return Interval(float(d.mean()), float(low), float(high), len(d))


def row_verdict(rule: str, interval: Interval, margin: float) -> str:
    """The verdict of a one-comparison part (``greater``, ``noninferior``, ``equivalent``)."""
    if interval.missing:
        return "no data"
    low, high = interval.low, interval.high
    if rule == "greater":
        if low > 0:
            return "reproduced"
        if high < 0:
            return "contradicted"
        return "equivalent" if -margin < low and high < margin else "inconclusive"
    if rule == "noninferior":
        if low > -margin:
            return "reproduced"
        return "contradicted" if high < -margin else "inconclusive"
    if rule == "equivalent":
        if -margin < low and high < margin:
            return "reproduced"
        return "contradicted" if low > margin or high < -margin else "inconclusive"
    raise ValueError(f"rule must be one of {RULES[:3]} here, got {rule!r}")


def best_verdict(against_rivals: Sequence[Interval], margin: float) -> str:
    """Intersection-union: "A is best" from the intervals of A - R for every rival R.

    contradicted if some rival beats A (an interval entirely below 0); reproduced if A beats
    or is within margin of every rival (every lower end above ``-margin``); else inconclusive.
    No data if any rival has none: the claim is about all of them.
    """
    if not against_rivals or any(i.missing for i in against_rivals):
        return "no data"
    if any(i.high < 0 for i in against_rivals):
        return "contradicted"
    if all(i.low > -margin for i in against_rivals):
        return "reproduced"
    return "inconclusive"


def decisive_margin(rule: str, intervals: Sequence[Interval]) -> float:
    """The smallest margin at which a ``noninferior``/``best`` part would be reproduced, or an
    ``equivalent`` part would be (NaN for ``greater``, whose verdict needs no margin to
    pass): how close the declared margin is to deciding the verdict."""
    if not intervals or any(i.missing for i in intervals):
        return math.nan
    if rule in ("noninferior", "best"):
        return max(0.0, max(-i.low for i in intervals))
    if rule == "equivalent":
        return max(max(abs(i.low), abs(i.high)) for i in intervals)
    return math.nan


def claim_verdict(parts: Sequence[str]) -> str:
    """A claim's verdict from its parts': contradicted if one is; reproduced (or equivalent)
    if all are; "partly reproduced" if some are and none is contradicted; else inconclusive."""
    parts = [p for p in parts if p != "no data"]
    if not parts:
        return "no data"
    if "contradicted" in parts:
        return "contradicted"
    for verdict in ("reproduced", "equivalent"):
        if all(p == verdict for p in parts):
            return verdict
    return "partly reproduced" if "reproduced" in parts else "inconclusive"


def improvement_probability(d: Sequence[float], confidence: float = 0.95) -> tuple[float, ...]:
    """P(d > 0) over seeds with its exact (Clopper-Pearson) interval from scipy's binomial
    test; ties (d = 0) are left out, as in the sign test. At 7 of 7 seeds the interval is
    [0.59, 1.00], not the [1, 1] a bootstrap over seeds collapses to."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return (math.nan, math.nan, math.nan)
    wins = int((d > 0).sum())
    ci = stats.binomtest(wins, len(d)).proportion_ci(confidence_level=confidence, method="exact")
    return (wins / len(d), float(ci.low), float(ci.high))


# ----------------------------------------------------------------------------- power


def power_one(effect: float, sd: float, n: int, threshold: float, alpha: float, m: int) -> float:
    """Exact power of "the lower end of the level ``1 - alpha/m`` two-sided t interval is
    above ``threshold``" when the per-seed contrast is N(effect, sd^2): the noncentral t
    (scipy). ``threshold`` 0 is a difference, ``-margin`` a non-inferiority."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / (2 * m), df)
    return float(stats.nct.sf(critical, df, (effect - threshold) * math.sqrt(n) / sd))


def simulate_power(
    rule: str,
    effects: Sequence[float],
    sds: Sequence[float],
    n: int,
    margin: float,
    alpha: float,
    m: int,
    draws: int = 20_000,
    seed: int = 0,
) -> float:
    """Probability that the rule reproduces its part when the part's contrasts (one; or
    one per rival for ``best``) have true means ``effects`` and per-seed s.d. ``sds``, with
    ``n`` seeds and ``m`` comparisons in the study. Rivals are drawn independently, which
    understates the power of ``best`` (its contrasts share the arm's own noise)."""
    rng = np.random.default_rng(seed)
    effects, sds = np.asarray(effects, float), np.asarray(sds, float)
    d = effects[:, None, None] + sds[:, None, None] * rng.standard_normal((len(effects), draws, n))
    mean, se = d.mean(axis=-1), d.std(axis=-1, ddof=1) / math.sqrt(n)
    half = stats.t.ppf(1 - alpha / (2 * m), n - 1) * se
    low, high = mean - half, mean + half
    if rule in ("greater",):
        ok = low[0] > 0
    elif rule in ("noninferior",):
        ok = low[0] > -margin
    elif rule == "equivalent":
        ok = (low[0] > -margin) & (high[0] < margin)
    elif rule == "best":
        ok = (low > -margin).all(axis=0) & ~(high < 0).any(axis=0)
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return float(ok.mean())


def seeds_for_power(
    rule: str,
    effects: Sequence[float],
    sds: Sequence[float],
    margin: float,
    alpha: float,
    m: int,
    target: float = 0.8,
    most: int = 60,
) -> int | None:
    """The fewest seeds (>= 3) at which :func:`simulate_power` reaches ``target``; None if
    not within ``most``."""
    for n in range(3, most + 1):
        if simulate_power(rule, effects, sds, n, margin, alpha, m, draws=4000) >= target:
            return n
    return None
