"""The study's decision rules against hand-worked examples and against scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW

from pkpo.analysis import decisions as D
from pkpo.analysis.stated import trend_terms


def test_simultaneous_interval_by_hand():
    d = np.array([1.0, 2.0, 3.0, 2.5, 1.5])  # mean 2, sd sqrt(0.625)
    got = D.simultaneous_interval(d, alpha=0.05, m=10)
    half = stats.t.ppf(1 - 0.05 / 20, 4) * math.sqrt(0.625 / 5)
    assert (got.effect, got.low, got.high) == pytest.approx((2.0, 2 - half, 2 + half))


def test_difference_decision_is_the_bonferroni_paired_t_test():
    rng = np.random.default_rng(0)
    m, agree = 6, 0
    for _ in range(300):
        d = rng.normal(rng.normal(0, 1), 1.0, 7)
        interval = D.simultaneous_interval(d, 0.05, m)
        significant = stats.ttest_1samp(d, 0.0).pvalue < 0.05 / m
        decided = D.row_verdict("greater", interval, margin=0.1) in ("reproduced", "contradicted")
        agree += significant == decided
    assert agree == 300


def test_equivalence_decision_is_tost_at_half_the_bonferroni_level():
    """A (1 - 2a) interval inside +-margin is TOST at level a; here a = alpha / (2 m)."""
    rng = np.random.default_rng(1)
    m, margin, agree = 4, 1.0, 0
    for _ in range(300):
        d = rng.normal(rng.normal(0, 0.6), 0.5, 7)
        interval = D.simultaneous_interval(d, 0.05, m)
        tost = DescrStatsW(d).ttost_mean(-margin, margin)[0] < 0.05 / (2 * m)
        agree += tost == (D.row_verdict("equivalent", interval, margin) == "reproduced")
    assert agree == 300


def test_row_verdicts_by_hand():
    margin = 1.0
    above = D.Interval(2.0, 0.5, 3.5, 7)
    below = D.Interval(-2.0, -3.5, -0.5, 7)
    inside = D.Interval(0.1, -0.5, 0.7, 7)
    wide = D.Interval(0.1, -2.0, 2.2, 7)
    slightly_worse = D.Interval(-0.4, -0.8, -0.1, 7)  # significantly worse, within margin
    assert D.row_verdict("greater", above, margin) == "reproduced"
    assert D.row_verdict("greater", below, margin) == "contradicted"
    assert D.row_verdict("greater", inside, margin) == "equivalent"
    assert D.row_verdict("greater", wide, margin) == "inconclusive"
    assert D.row_verdict("noninferior", slightly_worse, margin) == "reproduced"
    assert D.row_verdict("noninferior", D.Interval(-3, -4, -1.5, 7), margin) == "contradicted"
    assert D.row_verdict("noninferior", wide, margin) == "inconclusive"
    assert D.row_verdict("equivalent", inside, margin) == "reproduced"
    assert D.row_verdict("equivalent", above, margin) == "inconclusive"
    assert D.row_verdict("equivalent", D.Interval(3, 2, 4, 7), margin) == "contradicted"
    assert D.row_verdict("greater", D.Interval(math.nan, math.nan, math.nan, 0), 1) == "no data"


def test_intersection_union_differs_from_the_pairwise_verdicts():
    margin = 1.0
    beats = D.Interval(2.0, 0.5, 3.5, 7)
    tie = D.Interval(0.0, -0.6, 0.6, 7)
    unsure = D.Interval(-0.5, -2.0, 1.0, 7)
    loses = D.Interval(-1.5, -2.5, -0.5, 7)
    # beats two rivals (pairwise: 2 of 3 reproduced) but is unsure against the third
    assert [D.row_verdict("greater", i, margin) for i in (beats, beats, unsure)].count(
        "reproduced"
    ) == 2
    assert D.best_verdict([beats, beats, unsure], margin) == "inconclusive"
    # a tie within margin counts for "best": not greater, yet not beaten
    assert D.row_verdict("greater", tie, margin) == "equivalent"
    assert D.best_verdict([beats, tie], margin) == "reproduced"
    # one rival beating it decides against "best", whatever it does against the others
    assert D.best_verdict([beats, beats, loses], margin) == "contradicted"
    assert D.decisive_margin("best", [beats, unsure]) == pytest.approx(2.0)


def test_claim_verdict_by_hand():
    assert D.claim_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert D.claim_verdict(["reproduced", "inconclusive"]) == "partly reproduced"
    assert D.claim_verdict(["reproduced", "contradicted"]) == "contradicted"
    assert D.claim_verdict(["equivalent", "equivalent"]) == "equivalent"
    assert D.claim_verdict(["equivalent", "inconclusive"]) == "inconclusive"
    assert D.claim_verdict(["no data"]) == "no data"


def test_improvement_probability_is_clopper_pearson():
    got = D.improvement_probability(np.arange(1.0, 8.0))  # 7 of 7
    assert got[0] == 1.0 and got[2] == 1.0
    assert got[1] == pytest.approx(0.025 ** (1 / 7), rel=1e-9)  # 0.590, the issue's [0.59, 1]
    got = D.improvement_probability([1.0, -2.0, 3.0, 0.0, 4.0, -1.0, 2.0])  # 4 of 6, tie out
    assert got[0] == pytest.approx(4 / 6)
    assert got[1] == pytest.approx(stats.beta.ppf(0.025, 4, 3), rel=1e-9)
    assert got[2] == pytest.approx(stats.beta.ppf(0.975, 5, 2), rel=1e-9)


@pytest.mark.parametrize(
    ("rule", "effect", "threshold"), [("greater", 1.0, 0.0), ("noninferior", 0.0, -0.8)]
)
def test_simulated_power_matches_the_noncentral_t(rule, effect, threshold):
    n, sd, m = 7, 0.9, 5
    exact = D.power_one(effect, sd, n, threshold, alpha=0.05, m=m)
    simulated = D.simulate_power(rule, [effect], [sd], n, margin=-threshold, alpha=0.05, m=m)
    assert simulated == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000))
    assert 0.05 < exact < 0.95  # a case where power is neither trivial nor certain


def test_power_of_best_is_below_each_rivals_own():
    one = D.simulate_power("noninferior", [0.0], [0.5], 7, 0.6, 0.05, 4)
    best = D.simulate_power("best", [0.0, 0.0, 0.0], [0.5] * 3, 7, 0.6, 0.05, 4)
    assert best < one
    assert D.seeds_for_power("greater", [1.0], [1.0], 0.5, 0.05, 1) == next(
        n for n in range(3, 60) if D.power_one(1.0, 1.0, n, 0.0, 0.05, 1) >= 0.8
    )


def test_trend_weights_give_the_least_squares_change_over_the_range():
    rng = np.random.default_rng(2)
    ks = {"k1": 1, "k2": 2, "k4": 4, "k8": 8}
    values = rng.normal(0, 1, 4)
    slope = np.polyfit(np.log2(list(ks.values())), values, 1)[0]
    contrast = sum(w * v for (_, w), v in zip(trend_terms(ks), values, strict=True))
    assert contrast == pytest.approx(slope * 3)  # log2 8 - log2 1 = 3 doublings
