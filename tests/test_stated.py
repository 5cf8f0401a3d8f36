"""Claims as stated: the schema, the committed re-reading recomputed by hand from the event
logs, and the per-problem analysis against passk-inference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import passk_inference
import pytest
import yaml
from scipy import stats

from pkpo import analysis as A
from pkpo.analysis import problems
from pkpo.analysis.confirmatory import Protocol
from pkpo.analysis.stated import StatedClaims, stated_table

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "results" / "tiny_arith_confirmatory"


def _events(run: str) -> list[dict]:
    lines = (STUDY / run / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _final_eval(run: str, metric: str, step: int = 150) -> float:
    return 100 * [e for e in _events(run) if e["event"] == "eval" and e["step"] == step][-1][metric]


def _entropy(run: str, step: int = 150) -> float:
    train = {e["step"]: e["entropy"] for e in _events(run) if e["event"] == "train"}
    return float(np.mean([train[s] for s in range(step - 10, step)]))


@pytest.fixture(scope="module")
def reread():
    protocol = Protocol.load(STUDY / "protocol.yaml")
    df = A.runs_under(A.load_runs([STUDY]), STUDY)
    return protocol, stated_table(df, protocol.rereading, protocol.labels, 150, "re-reading")


def test_the_rereading_is_exploratory_and_one_family(reread):
    protocol, table = reread
    assert protocol.rereading.status == "exploratory"
    # claim 1: 3 parts x 3 rivals; 2, 3: a trend each; 4: 3 rivals; 5: 2; 6: 4
    assert protocol.rereading.comparisons == len(table.rows) == 9 + 1 + 1 + 3 + 2 + 4


def test_claim_4_recomputed_by_hand_from_the_logs(reread):
    protocol, table = reread
    seeds = protocol.seeds
    rows = table.rows[table.rows["claim"] == "4"]
    m = len(table.rows)
    for rival, row in zip(("k2", "k4", "k8"), rows.itertuples(), strict=True):
        d = np.array(
            [
                _final_eval(f"k1_s{s}", "pass@1") - _final_eval(f"{rival}_s{s}", "pass@1")
                for s in seeds
            ]
        )
        half = stats.t.ppf(1 - 0.05 / (2 * m), len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert row.effect == pytest.approx(d.mean(), abs=1e-9)
        assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # the rule by hand: no rival's interval below 0; some lower end below -margin
    margin = protocol.rereading.margins["pass@1"].value
    lows, highs = rows["ci_low"], rows["ci_high"]
    want = (
        "contradicted"
        if (highs < 0).any()
        else "reproduced"
        if (lows > -margin).all()
        else "inconclusive"
    )
    assert table.parts[table.parts["claim"] == "4"]["verdict"].item() == want


def test_the_entropy_trend_recomputed_by_hand(reread):
    protocol, table = reread
    row = table.rows[table.rows["claim"] == "3"].iloc[0]
    x = np.log2([1, 2, 4, 8])
    per_seed = [
        np.polyfit(x, [_entropy(f"k{k}_s{s}") for k in (1, 2, 4, 8)], 1)[0] * 3
        for s in protocol.seeds
    ]
    assert row["effect"] == pytest.approx(np.mean(per_seed), abs=1e-9)


def test_an_unfinished_study_is_shown_as_an_interim_look():
    """Every planned run at the final eval: no interim mark. One run short: the counts are
    those of the protocol's design (7 arms x 7 seeds), and every verdict says interim."""
    protocol = Protocol.load(STUDY / "protocol.yaml")
    df = A.load_runs([STUDY])
    ((_, whole),) = A.stated_tables(df, protocol)[:1]
    assert whole.interim is None
    assert "(interim)" not in A.to_markdown(A.stated_grid(whole))
    short = df[df["run"] != "tiny_arith_confirmatory/k4_s1003"]
    ((_, table),) = A.stated_tables(short, protocol)[:1]
    assert table.interim.startswith(
        "Interim look: 48 of 49 planned runs have reached step 150 (6 of 7 seeds in every arm)"
    )
    grid = A.stated_headline_grid(table)
    assert grid.notes[0] == table.interim
    verdicts = [row[1] for row in grid.body if row[1]]
    assert verdicts and all(v.endswith("(interim)") for v in verdicts)


def test_a_bad_claims_section_is_refused_naming_the_key():
    arms = ["k1", "k2"]
    good = {
        "status": "confirmatory",
        "margins": {"pass@1": {"value": 0.5, "why": "a reason"}},
        "claims": [
            {
                "claim": "4",
                "parts": [{"rule": "best", "arm": "k1", "rivals": ["k2"], "metric": "pass@1"}],
            }
        ],
    }
    assert StatedClaims.parse(good, arms, "f:").comparisons == 1
    bad_part = {**good["claims"][0]["parts"][0]}
    for change, message in [
        ({"margins": {"pass@1": 0.5}}, r"margins.pass@1 needs `value` and `why`"),
        ({"status": "maybe"}, "status must be one of"),
        ({"claims": [{"claim": "4", "parts": [{**bad_part, "rule": "better"}]}]}, "rule must"),
        ({"claims": [{"claim": "4", "parts": [{**bad_part, "rivals": ["k9"]}]}]}, "k9"),
        ({"claims": [{"claim": "4", "parts": [{**bad_part, "metric": "pass@2"}]}]}, "pass@2"),
        ({"claims": []}, "at least one claim"),
    ]:
        with pytest.raises(ValueError, match=message):
            StatedClaims.parse({**good, **change}, arms, "f:")


def test_a_protocol_with_claims_needs_no_primary_family(tmp_path):
    raw = yaml.safe_load((STUDY / "protocol.yaml").read_text())
    reread = yaml.safe_load((STUDY / "rereading.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k not in ("primary", "secondary")}
    raw |= {"margins": reread["margins"], "claims": reread["claims"], "status": "confirmatory"}
    (tmp_path / "protocol.yaml").write_text(yaml.safe_dump(raw))
    protocol = Protocol.load(tmp_path / "protocol.yaml")
    assert protocol.stated.status == "confirmatory" and protocol.rereading is None
    assert protocol.margins["pass@1"] == reread["margins"]["pass@1"]["value"]


# ----------------------------------------------------------------------- per problem


def _counts() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 4, 60)
    rows = []
    for seed in (0, 1):
        for arm, lift in (("a", 0.08), ("b", 0.0)):
            c = rng.binomial(32, np.clip(p + lift, 0, 1))
            rows += [
                {"arm": arm, "seed": seed, "problem_id": f"p{i}", "c": int(ci), "n": 32}
                for i, ci in enumerate(c)
            ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def test_paired_comparison_is_passk_inference_on_rows_aligned_by_seed_and_problem():
    counts = _counts()
    got = problems.paired_comparison(counts, "a", "b", [1, 2, 4, 8])
    a = counts[counts["arm"] == "a"].sort_values(["seed", "problem_id"])
    b = counts[counts["arm"] == "b"].sort_values(["seed", "problem_id"])
    want = passk_inference.compare(
        b["c"].to_numpy(), 32, a["c"].to_numpy(), 32, ks=[1, 2, 4, 8], bootstrap=4000
    )
    assert got["lower"] == pytest.approx(want["lower"])
    assert got["upper"] == pytest.approx(want["upper"])
    # pass@1 difference by hand: the mean of c / n over rows
    by_hand = (a["c"].to_numpy() - b["c"].to_numpy()).mean() / 32
    assert got["rl_pass_at_k"][0] - got["base_pass_at_k"][0] == pytest.approx(by_hand)


def test_resample_se_matches_redrawing_the_samples():
    rng = np.random.default_rng(3)
    p, n = rng.beta(0.5, 3, 200), 64
    redraws = rng.binomial(n, p, size=(4000, 200)).mean(axis=1) / n
    c = rng.binomial(n, p)
    estimated = problems.resample_se(c, np.full(200, n))
    truth = math.sqrt((p * (1 - p) / n).sum()) / 200
    assert redraws.std() == pytest.approx(truth, rel=0.05)
    assert estimated == pytest.approx(truth, rel=0.15)


def test_eval_counts_from_the_committed_logs_give_back_each_runs_pass_at_1():
    long_study = REPO / "experiments" / "results" / "tiny_arith_long"
    runs = A.scan_runs([STUDY / "k1_s1000", long_study])  # before and after per-problem logs
    counts = problems.eval_counts(runs)
    assert set(counts["run"]) == {r.run for r in runs if "tiny_arith_long" in r.run}
    for run in runs:
        evals = [e for e in run.records if e["event"] == "eval" and "successes" in e]
        if not evals:
            continue
        last = max(evals, key=lambda e: e["step"])
        own = counts[counts["run"] == run.run]
        assert (own["c"] / own["n"]).mean() == pytest.approx(last["pass@1"], abs=1e-12)
