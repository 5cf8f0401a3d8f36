"""Tests of the 1-D toy experiment (pkpo/toy), each against an independent oracle:
raw Monte Carlo draws, scipy quadrature written out here, math.comb, or hand computation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from pkpo import transforms
from pkpo.toy import compare, problem
from pkpo.toy import figures as F
from pkpo.toy import gradients as G
from pkpo.toy.train import train_theta

SIGMA = 0.1


# ----------------------------------------------------------------- oracles


def raw_reward(x: np.ndarray) -> np.ndarray:
    return np.where((x >= 0) & (x <= 1), x**2, 0.0)


def quad_maxg(theta: float, k: int) -> float:
    """``int_0^1 P(max of k rewards > y) dy`` by adaptive quadrature in y (not u = sqrt y)."""

    def cdf(y: float) -> float:  # P(g(x) <= y) for y in [0, 1)
        return stats.norm.cdf((math.sqrt(y) - theta) / SIGMA) + stats.norm.cdf((theta - 1) / SIGMA)

    value, _ = integrate.quad(lambda y: 1 - cdf(y) ** k, 0, 1, limit=200, epsabs=1e-12)
    return value


def quad_dmaxg(theta: float, k: int, h: float = 1e-4) -> float:
    return (quad_maxg(theta + h, k) - quad_maxg(theta - h, k)) / (2 * h)


def mc_gradient_means(name: str, theta: float, n: int, k: int, draws: int, seed: int):
    """(mean, standard error) of ``draws`` Eq. 18 estimates, the score written out here."""
    rng = np.random.default_rng(seed)
    x = theta + SIGMA * rng.standard_normal((draws, n))
    adv = G.ESTIMATORS[name](raw_reward(x), k) if name != "pkpo" else G.pkpo(raw_reward(x), k)
    est = (adv * (x - theta) / SIGMA**2).sum(-1)
    return est.mean(), est.std(ddof=1) / math.sqrt(draws)


# ------------------------------------------------------------ exact max_g@k


@pytest.mark.parametrize("theta", [0.6, 1.0])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_maxg_matches_monte_carlo_of_raw_maxima(theta, k):
    rng = np.random.default_rng(123 + k)
    maxima = raw_reward(theta + SIGMA * rng.standard_normal((200_000, k))).max(-1)
    se = maxima.std(ddof=1) / math.sqrt(maxima.size)
    assert abs(problem.maxg_at_k(theta, k, SIGMA) - maxima.mean()) < 4 * se


@pytest.mark.parametrize("theta", [0.3, 0.6, 0.95, 1.0, 1.2])
@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_maxg_and_derivative_match_adaptive_quadrature(theta, k):
    assert problem.maxg_at_k(theta, k, SIGMA) == pytest.approx(quad_maxg(theta, k), abs=1e-9)
    assert problem.dmaxg_at_k(theta, k, SIGMA) == pytest.approx(quad_dmaxg(theta, k), abs=1e-5)


def test_optimal_theta_is_a_maximum_and_grows_with_k():
    stars = [problem.optimal_theta(k, SIGMA, (0.0, 1.5)) for k in (1, 2, 4, 8)]
    for k, star in zip((1, 2, 4, 8), stars, strict=True):
        grid = np.linspace(star - 0.02, star + 0.02, 41)  # step 1e-3, star in the middle
        best = grid[np.argmax([quad_maxg(t, k) for t in grid])]
        assert abs(best - star) < 1e-3
    # the paper's Figure 1: larger k takes more risk, i.e. a larger optimal theta
    assert np.all(np.diff(stars) > 0.01)


def test_problem_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        problem.maxg_at_k(1.0, 0, SIGMA)
    with pytest.raises(ValueError, match="sigma must be positive"):
        problem.dmaxg_at_k(1.0, 2, 0.0)
    with pytest.raises(ValueError, match="bounds"):
        problem.optimal_theta(2, SIGMA, (1.0, 0.5))


# ----------------------------------------------------------------- Figure 2


def test_figure2_weights_equal_binomial_ratios():
    n = 8
    df = F.weights_table(n)
    assert len(df) == n * n
    for row in df.itertuples():
        want = math.comb(row.sort_index - 1, row.k - 1) / math.comb(n, row.k)
        assert row.weight == pytest.approx(want, abs=1e-14), row


# ------------------------------------------------------ gradient estimators


ESTIMATOR_CASES = [
    ("sloo_minus_one", 8, 2),
    ("sloo_minus_one", 12, 4),
    ("sloo_minus_one", 4, 4),
    ("sloo", 8, 2),
    ("sloo", 12, 4),
    ("sloo_centred", 8, 2),
    ("sloo_centred", 12, 4),
    ("s", 8, 2),
    ("s", 12, 4),
    ("pkpo", 8, 1),
    ("naive_partitioned", 12, 4),
    ("naive_partitioned_baselined", 12, 4),
    ("sloo_minus_one_partitioned", 12, 4),
]


@pytest.mark.parametrize("theta", [0.6, 1.0])
@pytest.mark.parametrize(("name", "n", "k"), ESTIMATOR_CASES)
def test_gradient_estimators_are_unbiased(name, n, k, theta):
    mean, se = mc_gradient_means(name, theta, n, k, draws=40_000, seed=7)
    truth = quad_dmaxg(theta, k)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)
    assert se < 0.03 * abs(truth)  # power to see a wrong normalisation (4 se < 12%)


def test_gradient_estimates_use_the_gaussian_score():
    x = np.array([[0.9, 1.05, 0.3, 0.5]])
    adv = G.pkpo(raw_reward(x), 2)
    want = (adv * (x - 0.8) / SIGMA**2).sum()
    assert G.gradient_estimates(G.pkpo, x, 0.8, SIGMA, 2)[0] == pytest.approx(want)


def test_partitioned_estimators_by_hand():
    g = np.array([1.0, 3.0, 2.0, 0.0])  # sets {1, 3} and {2, 0}, k = 2, n = 4
    np.testing.assert_allclose(G.naive_partitioned(g, 2), [1.5, 1.5, 1.0, 1.0])
    np.testing.assert_allclose(G.naive_partitioned_baselined(g, 2), [0.5, 0.5, -0.5, -0.5])
    # within a set: max minus the other sample's value, then / (n/k) = 2 sets
    np.testing.assert_allclose(G.sloo_minus_one_partitioned(g, 2), [0.0, 1.0, 1.0, 0.0])


def test_partitioned_estimators_reject_bad_shapes():
    with pytest.raises(ValueError, match="multiple of k"):
        G.naive_partitioned(np.zeros(6), 4)
    with pytest.raises(ValueError, match="no\\s+other set"):
        G.naive_partitioned_baselined(np.zeros(4), 4)


@pytest.mark.parametrize("name", sorted(G.ESTIMATORS))
def test_defined_agrees_with_what_the_estimators_accept(name):
    g = np.random.default_rng(0).uniform(size=(3, 12))
    for n in range(1, 13):
        for k in range(1, n + 1):
            try:
                G.ESTIMATORS[name](g[:, :n], k)
                ok = True
            except ValueError:
                ok = False
            assert G.defined(name, n, k) == ok, (name, n, k)


def test_baselines_reduce_variance_in_the_papers_order():
    df = F.variance_table([8], 1.0, 4, SIGMA, 4000, np.random.default_rng(3))
    var = df.set_index("estimator").variance
    assert var["sloo_minus_one"] < var["sloo"] < var["s"]
    assert var["naive_partitioned_baselined"] < var["naive_partitioned"]


# ----------------------------------------------------------------- Figure 5


def test_effective_rewards_of_s_with_k1_are_the_rewards_over_n():
    df = F.effective_reward_table(32, [1], 2000, 10, np.random.default_rng(0))
    d = df[(df.estimator == "s") & (df.k == 1)]
    # s(g, 1) = g / n, and the mean of U[-1/2, 1/2] draws in a bin is close to its centre
    np.testing.assert_allclose(d.effective_reward, d.bin_center / 32, atol=2e-4)
    assert set(df.estimator) == {"s", "sloo"}  # sloo_minus_one is undefined for k = 1


# ----------------------------------------------------------------- training


def test_training_reaches_the_k_optimal_theta():
    k = 4
    path = train_theta(k, 16, 8, 150, 0.02, 0.5, SIGMA, np.random.default_rng(0))
    grid = np.linspace(0.9, 1.0, 101)
    star = grid[np.argmax([quad_maxg(t, k) for t in grid])]
    assert path.shape == (151,)
    assert abs(path[-1] - star) < 0.01
    # and it is not where the k = 1 policy would settle
    assert abs(path[-1] - problem.optimal_theta(1, SIGMA, (0.0, 1.5))) > 0.05


# ----------------------------------------------------------------- end to end


@pytest.mark.slow
def test_command_writes_every_figure(tmp_path):
    cmd = [
        sys.executable, "-m", "pkpo.toy", "out_dir=rel/out", "n_estimates=300",
        "fig1.thetas.num=11", "fig1.ks=[1,4]", "fig4.ns=[4,8]", "fig5.n_draws=50",
        "train.steps=20", "train.ks=[1,2]", "estimators.ns=[8]", "estimators.n_estimates=500",
        "train_estimators.ks=[4]", "train_estimators.repeats=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "rel" / "out"
    for stem in ("fig1_maxg_at_k", "fig2_weights", "fig4_variance", "fig5_effective_rewards"):
        for ext in ("png", "pdf", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    train = pd.read_csv(out / "train_theta.csv")
    assert list(train.columns) == ["k", "step", "theta", "theta_star"]
    assert sorted(train.k.unique()) == [1, 2] and train.step.max() == 20
    fig1 = pd.read_csv(out / "fig1_maxg_at_k.csv")
    assert list(fig1.columns) == [
        "theta", "k", "maxg_at_k", "dmaxg_numeric", "dmaxg_estimator", "dmaxg_estimator_se",
    ]  # fmt: skip
    fig4 = pd.read_csv(out / "fig4_variance.csv")
    assert list(fig4.columns[:4]) == ["n", "estimator", "variance", "mean"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["optimal_theta"]) == {"1", "2", "4"}
    assert summary["fig4"]["variance"]["sloo_minus_one"]["8"] > 0
    table = pd.read_csv(out / "estimators_bias_variance.csv")
    assert set(table.theta_label) == {"1", "0.6", "k_optimal"} and set(table.n) == {8}
    assert (out / "fig4plus_variance.png").stat().st_size > 0
    assert set(summary["estimators"]["skipped"]) == {"maxrl", "passk_training"}
    trained = pd.read_csv(out / "train_estimators.csv")
    assert set(trained.k) == {4} and (trained.repeats.dropna() == 2).all()
    assert "wall_time_s" in summary and "done in" in proc.stdout + proc.stderr
    # Hydra's own files stay inside out_dir/.hydra: no outputs/ next to the caller
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    assert any((out / ".hydra").glob("*/config.yaml"))


# ------------------------------------------- every registered transform (compare)


@pytest.fixture(scope="module")
def compared() -> pd.DataFrame:
    """A small estimators stage: k = 4, n = 8, theta = 1 and the k-optimal theta."""
    return compare.estimator_table(
        [1.0, "k_optimal"], [8], 4, SIGMA, 20_000, 3.0, (0.0, 1.5), 128,
        np.random.default_rng(3),
    )  # fmt: skip


def _row(df: pd.DataFrame, name: str, label: str = "1") -> pd.Series:
    (row,) = df[(df.estimator == name) & (df.theta_label == label)].itertuples(index=False)
    return pd.Series(row._asdict())


def test_compare_exact_gradients_match_independent_quadrature(compared):
    for label in ("1", "k_optimal"):
        row = _row(compared, "pkpo_sloo_minus_one", label)
        assert row.dmaxg_k == pytest.approx(quad_dmaxg(row.theta, 4), abs=1e-5)
        tang = _row(compared, "tang", label)  # Eq. 33 with k = n targets max_g@n
        assert tang.target_value == pytest.approx(quad_dmaxg(row.theta, 8), abs=1e-5)
        loo = _row(compared, "loo", label)  # n d E[g], E[g] = max_g@1
        assert loo.target_value == pytest.approx(8 * quad_dmaxg(row.theta, 1), abs=1e-4)
    star = _row(compared, "maxpo", "k_optimal").theta
    grid = np.linspace(0.9, 1.0, 201)
    assert abs(star - grid[np.argmax([quad_maxg(t, 4) for t in grid])]) < 1e-3


@pytest.mark.parametrize("label", ["1", "k_optimal"])
def test_compare_bias_of_unbiased_estimators_is_within_noise(compared, label):
    for name in ("pkpo_sloo_minus_one", "maxpo", "pkpo_sloo"):
        row = _row(compared, name, label)
        truth = quad_dmaxg(row.theta, 4)
        assert abs(row["mean"] - truth) < 4 * row.mean_se, (name, row["mean"], truth)
        assert not row.maxg_k_significant
    # the pass@1 and pass@n estimators are unbiased for what target() says they estimate
    for name in ("raw", "loo", "dr_grpo", "tang", "grpo_passk"):
        row = _row(compared, name, label)
        assert abs(row.z_target) < 4, (name, row.z_target)


def test_compare_grpo_is_significantly_biased(compared):
    for label in ("1", "k_optimal"):
        row = _row(compared, "grpo", label)
        truth = quad_dmaxg(row.theta, 4)
        assert abs(row["mean"] - truth) > 3 * row.mean_se and row.maxg_k_significant
    # and even against its own large-n target at the k-optimal theta (measured z ~ +48)
    row = _row(compared, "grpo", "k_optimal")
    assert row.z_target > 3 and row.target_significant


def test_compare_group_sums(compared):
    maxpo, sloo = _row(compared, "maxpo"), _row(compared, "pkpo_sloo")
    assert abs(maxpo.group_sum_mean) < 1e-12 and maxpo.group_sum_sd < 1e-12
    # pkpo_sloo's baseline k/(n-1) rho(g without i) over-subtracts: the sum is negative
    assert sloo.group_sum_mean < -10 * sloo.group_sum_sd / math.sqrt(20_000)
    assert sloo.group_sum_sd > 1e-3


def test_compare_skips_binary_only_transforms_with_the_reason(compared):
    for name in ("maxrl", "passk_training"):
        row = _row(compared, name)
        assert "not 0 or 1" in row.skipped and math.isnan(row["mean"])


def test_reward_sd_matches_monte_carlo():
    x = 0.6 + SIGMA * np.random.default_rng(5).standard_normal(400_000)
    assert compare.reward_sd(0.6, SIGMA) == pytest.approx(raw_reward(x).std(), rel=5e-3)


def test_compare_target_of_an_unstated_transform_is_none():
    assert transforms.spec("maxrl").gradient is None  # MaxRL's estimate is biased
    assert compare.target("maxrl", 8, 4, 1.0, SIGMA) is None


def test_training_table_settles_at_independent_optima():
    df = compare.training_table(
        [1, 4], 16, 8, 150, 0.02, 0.5, 1, SIGMA, (0.0, 1.5), 128, np.random.default_rng(0)
    )
    grid = np.linspace(0.8, 1.0, 401)
    argmax = {k: grid[np.argmax([quad_maxg(t, k) for t in grid])] for k in (1, 4, 16)}
    ran = df[df.skipped == ""]
    for r in ran.itertuples():
        assert abs(r.theta_star_k - argmax[r.k]) < 1e-3, r
        j = int(r.target.removeprefix("max_g@").split(",")[0])  # "max_g@1, large-n limit"
        assert abs(r.theta_target - argmax[j]) < 1e-3, r
    pkpo = ran.set_index(["estimator", "k"]).theta_mean
    assert abs(pkpo["pkpo_sloo_minus_one", 4] - argmax[4]) < 0.015
    assert abs(pkpo["loo", 4] - argmax[1]) < 0.015  # loo ignores k: pass@1's optimum
    assert abs(pkpo["tang", 1] - argmax[16]) < 0.015
    assert set(df.estimator[df.skipped != ""]) == {"maxrl", "passk_training"}


def test_estimator_table_rejects_an_unknown_theta_name():
    with pytest.raises(ValueError, match="'k_optimal', got 'best'"):
        compare.estimator_table(
            ["best"], [8], 4, SIGMA, 10, 3.0, (0.0, 1.5), 64, np.random.default_rng(0)
        )


def test_figure_4_plus_draws_every_transform_it_is_given_even_without_a_style() -> None:
    from pkpo.toy.figures import plot_variance_all

    rows = [
        {"theta": 0.5, "k": 2, "n": n, "estimator": name, "target": "∇max_g@k",
         "variance": 1.0 / n, "scaled_variance": 2.0 / n, "skipped": skipped}
        for n in (4, 8)
        for name, skipped in (("loo", ""), ("zz_plugin", ""), ("aa_plugin", ""),
                              ("maxrl", "binary rewards only"))
    ]  # fmt: skip
    fig = plot_variance_all(pd.DataFrame(rows), 100)
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert labels == [f"{name} (targets ∇max_g@k)" for name in ("loo", "aa_plugin", "zz_plugin")]
    assert "not shown, they reject continuous rewards: maxrl" in fig._suptitle.get_text()
