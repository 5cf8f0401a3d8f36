"""The confirmatory study's statistics against independent computations, and its protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from pkpo.analysis import confirmatory


def test_blocked_test_of_two_arms_is_the_paired_t_test_and_the_two_way_anova():
    rng = np.random.default_rng(3)
    seeds = 7
    block = rng.normal(0, 5, seeds)  # seed effects shared by both arms
    a = 10 + block + rng.normal(1.0, 0.7, seeds)
    b = 10 + block + rng.normal(0.0, 0.7, seeds)
    got = confirmatory.blocked_test(a - b, margin=0.5)
    paired = stats.ttest_rel(a, b)
    assert got["p"] == pytest.approx(paired.pvalue, rel=1e-10)
    # arm + seed fixed effects (ordinary least squares): the same estimate and p for 2 arms
    long = pd.DataFrame(
        {"y": np.r_[a, b], "arm": ["a"] * seeds + ["b"] * seeds, "seed": np.r_[0:seeds, 0:seeds]}
    )
    fit = smf.ols("y ~ C(arm, Treatment('b')) + C(seed)", long).fit()
    name = "C(arm, Treatment('b'))[T.a]"
    assert got["effect"] == pytest.approx(fit.params[name], rel=1e-10)
    assert got["p"] == pytest.approx(fit.pvalues[name], rel=1e-8)
    low, high = fit.conf_int().loc[name]
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), rel=1e-8)
    # Welch's t ignores the blocks and loses the effect in the seed-to-seed spread
    assert stats.ttest_ind(a, b, equal_var=False).pvalue > 10 * got["p"]


def test_blocked_test_by_hand():
    d = np.array([1.0, 2.0, 3.0, 2.5, 1.5])  # mean 2, sd sqrt(0.625), n 5
    se = math.sqrt(0.625 / 5)
    got = confirmatory.blocked_test(d, margin=1.0)
    assert got["effect"] == 2.0
    t4 = stats.t(df=4)
    assert got["p"] == pytest.approx(2 * t4.sf(2.0 / se))
    assert got["ci_high"] - 2.0 == pytest.approx(t4.ppf(0.975) * se)
    # TOST within +-1: the larger of the two one-sided p-values; here the upper one,
    # t = (2 - 1) / se against "mean < 1", p = P(T < 2.83) -- far from equivalent
    assert got["p_tost"] == pytest.approx(t4.cdf((2.0 - 1.0) / se))
    # 5 of 5 seeds: the exact lower bound solves p^5 = 0.025 (Clopper-Pearson), not 1
    assert got["pi"] == 1.0 and got["pi_high"] == 1.0
    assert got["pi_low"] == pytest.approx(0.025 ** (1 / 5), rel=1e-9)


def test_tost_finds_equivalence_within_the_margin():
    d = np.array([0.1, -0.2, 0.05, 0.15, -0.1, 0.0, 0.12])
    got = confirmatory.blocked_test(d, margin=1.0)
    lower = stats.ttest_1samp(d + 1.0, 0.0, alternative="greater").pvalue
    upper = stats.ttest_1samp(d - 1.0, 0.0, alternative="less").pvalue
    assert got["p_tost"] == pytest.approx(max(lower, upper))
    assert got["p_tost"] < 0.001 and got["p"] > 0.5


def test_probability_of_improvement_leaves_ties_out_with_an_exact_interval():
    got = confirmatory.blocked_test([1.0, -1.0, 0.0, 2.0], margin=1.0)
    assert got["pi"] == pytest.approx(2 / 3)  # the tie is left out, as in the sign test
    # Clopper-Pearson from the beta quantiles (2 of 3)
    assert got["pi_low"] == pytest.approx(stats.beta.ppf(0.025, 2, 2), rel=1e-9)
    assert got["pi_high"] == pytest.approx(stats.beta.ppf(0.975, 3, 1), rel=1e-9)


def test_blocked_test_without_spread_has_no_p():
    got = confirmatory.blocked_test([0.5, 0.5, 0.5], margin=1.0)
    assert got["effect"] == 0.5 and math.isnan(got["p"]) and math.isnan(got["p_tost"])


def test_holm_against_the_step_down_by_hand():
    p = [0.01, 0.04, math.nan, 0.03]
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    got = confirmatory.holm(p, 0.05)
    assert got[0] == pytest.approx(0.03)
    assert got[3] == pytest.approx(0.06)
    assert got[1] == pytest.approx(0.06)
    assert math.isnan(got[2])


@pytest.mark.parametrize(
    ("effect", "p", "tost", "claimed", "expected"),
    [
        (2.0, 0.01, 0.9, "greater", "reproduced"),
        (-2.0, 0.01, 0.9, "greater", "contradicted"),
        (0.1, 0.6, 0.01, "greater", "equivalent"),
        (0.5, 0.2, 0.2, "greater", "inconclusive"),
        (0.1, 0.6, 0.01, "keeps", "reproduced"),
        (1.0, 0.01, 0.9, "keeps", "reproduced"),
        (-1.0, 0.01, 0.9, "keeps", "contradicted"),
        (-0.3, 0.01, 0.02, "keeps", "reproduced"),
        (-0.3, 0.2, 0.2, "keeps", "inconclusive"),
        (math.nan, math.nan, math.nan, "greater", "no data"),
    ],
)
def test_comparison_verdicts(effect, p, tost, claimed, expected):
    assert confirmatory.comparison_verdict(effect, p, tost, claimed, 0.05) == expected


def test_claim_verdicts():
    assert confirmatory.claim_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert confirmatory.claim_verdict(["reproduced", "inconclusive"]) == "inconclusive"
    assert confirmatory.claim_verdict(["reproduced", "contradicted"]) == "contradicted"
    assert confirmatory.claim_verdict(["equivalent"]) == "equivalent"
    assert confirmatory.claim_verdict(["no data"]) == "no data"


def test_a_bad_protocol_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "protocol.yaml"
    good = {
        "name": "x",
        "preset": "tiny_arith_noisy",
        "arms": ["k1", "k8"],
        "seeds": [1],
        "steps": 10,
        "final_step": 10,
        "alpha": 0.05,
        "margins": {"pass@8": 2.0},
        "primary": [
            {"claim": "1", "terms": {"k8": 1, "k1": -1}, "metric": "pass@8", "claimed": "greater"}
        ],
    }
    import yaml

    path.write_text(yaml.safe_dump(good, sort_keys=False))
    protocol = confirmatory.Protocol.load(path)
    assert protocol.labels == {"k1": "k_opt=1", "k8": "k_opt=8"}
    assert protocol.families["primary"][0].text(protocol.labels) == "k_opt=8 − k_opt=1, pass@8"
    for change, message in [
        ({"primary": [{**good["primary"][0], "claimed": "bigger"}]}, "claimed"),
        ({"primary": [{**good["primary"][0], "terms": {"k4": 1}}]}, "not in `arms`"),
        ({"margins": {"pass@1": 1.0}}, "margins"),
        ({"primary": []}, "needs `claims`"),
    ]:
        path.write_text(yaml.safe_dump({**good, **change}, sort_keys=False))
        with pytest.raises(ValueError, match=message):
            confirmatory.Protocol.load(path)


def test_the_committed_protocol_parses():
    from pathlib import Path

    root = Path(__file__).parents[1] / "experiments" / "results"
    protocol = confirmatory.Protocol.load(
        root / "tiny_arith_confirmatory" / confirmatory.PROTOCOL_FILE
    )
    assert len(protocol.families["primary"]) == 7
    claims = {c.claim for c in protocol.families["primary"]}
    assert claims == {"1", "2", "3", "4", "5", "6"}
    assert len(set(protocol.seeds)) == len(protocol.seeds) and min(protocol.seeds) >= 1000
    assert protocol.overrides == ("eval.n=64", "eval.every=50")  # as written in the file


STUDY = Path(__file__).parents[1] / "experiments" / "results" / "tiny_arith_confirmatory"


def _events(run: str) -> list[dict]:
    lines = (STUDY / run / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _pass_at_8(run: str) -> float:
    final = [e for e in _events(run) if e["event"] == "eval" and e["step"] == 150]
    return 100 * final[-1]["pass@8"]


def _entropy(run: str) -> float:  # mean of the 10 train steps before the final eval
    steps = {e["step"]: e["entropy"] for e in _events(run) if e["event"] == "train"}
    return float(np.mean([steps[s] for s in range(140, 150)]))


@pytest.mark.slow
def test_two_claims_of_the_committed_study_recomputed_by_hand():
    from pkpo.analysis import confirmatory_table, load_runs

    protocol = confirmatory.Protocol.load(STUDY / confirmatory.PROTOCOL_FILE)
    table = confirmatory_table(load_runs([STUDY]), protocol)
    primary = table.rows[table.rows["family"] == "primary"].reset_index(drop=True)
    for claim, value in (("1", _pass_at_8), ("3", _entropy)):
        k8 = np.array([value(f"k8_s{s}") for s in protocol.seeds])
        k1 = np.array([value(f"k1_s{s}") for s in protocol.seeds])
        row = primary[primary["claim"] == claim].iloc[0]
        assert row["n"] == len(protocol.seeds)
        assert row["effect"] == pytest.approx(float(np.mean(k8 - k1)), rel=1e-9)
        assert row["p"] == pytest.approx(stats.ttest_rel(k8, k1).pvalue, rel=1e-9)
    # Holm by hand over the seven primary p-values: the i-th smallest times (m - i + 1),
    # running maximum, capped at 1
    p = primary["p"].to_numpy()
    order = np.argsort(p)
    adjusted = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
    np.testing.assert_allclose(primary["p_holm"].to_numpy()[order], adjusted, rtol=1e-12)


def test_the_sweep_status_counts_the_manifest_by_arm(tmp_path):
    """Hand-written manifest: one arm with a run done after a stopped attempt, one failed and
    one never started; a manifest from before attempts were kept (exit codes only)."""
    text = (STUDY.parent / "tiny_arith_long" / "protocol.yaml").read_text(encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text(text, encoding="utf-8")
    protocol = confirmatory.Protocol.load(tmp_path / "protocol.yaml")
    assert confirmatory.sweep_grid(protocol) is None  # no manifest, no table
    stopped = {"started": "t0", "exit": None, "signal": "SIGTERM", "steps": 57, "wall_s": 73.2}
    manifest = {
        "k1_s4000": {"status": "done", "attempts": [stopped, {"exit": 0, "wall_s": 400.0}]},
        "k1_s4001": {"status": "done", "attempts": [{"exit": 0, "wall_s": 300.0}]},
        "k1_s4002": {"status": "failed", "attempts": [{"exit": 1, "wall_s": 9.0}]},
        "k2_s4000": {"status": "done", "exit_codes": [1, 0], "wall_s": 250.0},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    grid = confirmatory.sweep_grid(protocol)
    rows = {row[0]: row[1:] for row in grid.body}
    # planned, done, failed, not done yet, attempts, median wall of the finished attempts
    assert rows["k_opt=1"] == ["15", "2", "1", "12", "4", "350"]
    assert rows["k_opt=2"] == ["15", "1", "0", "14", "2", "250"]
    assert rows["tang"] == ["15", "0", "0", "15", "0", "—"]
