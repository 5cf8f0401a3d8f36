"""The claims table (pkpo/analysis/claims.py): the committed SmolLM2 runs against a hand
computation straight from their events.jsonl (json + numpy, no pkpo.analysis), and the
declared verdict rule on synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pkpo import analysis as A
from pkpo.analysis import claims as C

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"
REPRO = RESULTS / "repro_arith"
TESTBED = RESULTS / "tiny_arith"
SETTING = ("smollm2_135m", "arithmetic", 16)


# ---------------------------------------------------------------- the committed runs


def hand_records(folder: Path) -> list[dict]:
    """The run's records, the last one of each (event, step, split) kept (resumes)."""
    last = {}
    for line in (folder / "events.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[(record["event"], record.get("step"), record.get("split"))] = record
    return list(last.values())


def hand_values(
    arm: str, step: int, metric: str, event: str = "eval", folder: Path = REPRO
) -> np.ndarray:
    """Per seed of the arm (folders ``<arm>_s<seed>``) with a held-out eval at ``step``: the
    eval metric there, or the train metric of the last train step before it; in points."""
    out = []
    for run in sorted(folder.glob(f"{arm}_s*/")):
        records = hand_records(run)
        at = [r for r in records if r["event"] == "eval" and r["step"] == step]
        if not at or at[0]["split"] != "test":
            continue
        if event == "eval":
            out.append(100 * at[0][metric])
        else:
            train = [r for r in records if r["event"] == "train" and r["step"] < step]
            out.append(100 * max(train, key=lambda r: r["step"])[metric])
    return np.array(out)


@pytest.fixture(scope="module")
def table() -> C.ClaimsTable:
    return C.claims_table(A.load_runs([REPRO]), *SETTING)


def row(table: C.ClaimsTable, comparison: str, kind: str = "final"):
    rows = table.rows[(table.rows["comparison"] == comparison) & (table.rows["kind"] == kind)]
    assert len(rows) == 1, comparison
    return rows.iloc[0]


@pytest.mark.parametrize(("kind", "step"), [("final", 60), ("intermediate", 20)])
def test_claim4_k1_minus_k4_at_pass1_matches_a_hand_welch_test(table, kind, step) -> None:
    k1, k4 = hand_values("k1", step, "pass@1"), hand_values("k4", step, "pass@1")
    assert (len(k1), len(k4)) == (3, 2)  # k4_s2 died of GPU out-of-memory before step 1
    got = row(table, "k_opt=1 − k_opt=4, pass@1", kind)
    welch = stats.ttest_ind(k1, k4, equal_var=False)
    assert got["step"] == step
    assert got["effect"] == pytest.approx(k1.mean() - k4.mean(), abs=1e-9)
    se = math.sqrt(k1.var(ddof=1) / 3 + k4.var(ddof=1) / 2)
    assert got["se"] == pytest.approx(se, rel=1e-9)
    assert got["t"] == pytest.approx(welch.statistic, rel=1e-9)
    assert got["p"] == pytest.approx(welch.pvalue, rel=1e-9)
    assert tuple(got["n_seeds"]) == (3, 2)
    assert got["verdict"] == "inconclusive"  # 2 seeds < 3: inconclusive by rule
    assert math.isnan(got["p_holm"])  # and outside the Holm family


def test_claim2_solve_rate_and_claim5_contrast_match_a_hand_computation(table) -> None:
    k1 = hand_values("k1", 60, "cumulative_solve_rate", "train")
    k8 = hand_values("k8", 60, "cumulative_solve_rate", "train")
    got = row(table, "k_opt=8 − k_opt=1, cumulative solve rate")
    assert got["effect"] == pytest.approx(k8.mean() - k1.mean(), abs=1e-9)
    assert tuple(got["n_seeds"]) == (1, 3) and math.isnan(got["se"])  # one k8 seed: no s.e.
    assert got["verdict"] == "inconclusive"

    annealed = hand_values("anneal", 60, "pass@16")
    k1_16, k8_16 = hand_values("k1", 60, "pass@16"), hand_values("k8", 60, "pass@16")
    got = row(table, "annealed (8→1) − ½ (k_opt=1 + k_opt=8), pass@16")
    expected = annealed.mean() - 0.5 * k1_16.mean() - 0.5 * k8_16.mean()
    assert got["effect"] == pytest.approx(expected, abs=1e-9)


def test_every_claim_of_the_thin_smollm2_sweep_is_inconclusive_or_without_data(table) -> None:
    seeds = {arm: len(hand_values(arm, 60, "pass@1")) for arm in ("k1", "k2", "k4", "k8")}
    seeds.update(tang=len(hand_values("tang", 60, "pass@1")))
    assert seeds == {"k1": 3, "k2": 1, "k4": 2, "k8": 1, "tang": 1}  # every claim needs one of
    verdicts = dict(zip(table.claims["claim"], table.claims["verdict"], strict=True))
    assert verdicts == {  # k2, k4, k8 or tang, all below 3 seeds; no loo-scale or hard runs
        "1": "inconclusive",
        "2": "inconclusive",
        "3": "inconclusive",
        "4": "inconclusive",
        "5": "inconclusive",
        "5′": "no data",
        "6": "inconclusive",
        "7": "no data",
    }


# ------------------------------------------------------------------- the rule


def synthetic(pass1: dict[str, list[float]], task: str = "arithmetic", ks=(1,)):
    """A long runs frame: per arm label (``k_opt=K``, ``k_opt=K [transform]`` or a k-free
    transform's name), one finished run per value (seed), held-out pass@1 at steps 0 (0.1
    for all) and 10 (the value); pass@k for the other ``ks`` the same."""
    runs = []
    for arm, values in pass1.items():
        if arm.startswith("k_opt="):
            k, _, named = arm.removeprefix("k_opt=").partition(" [")
            k = int(k)
            transform = named.rstrip("]") or ("loo" if k == 1 else "pkpo_sloo_minus_one")
        else:
            k, transform = 1, arm
        for seed, value in enumerate(values):
            config = A.RunConfig(task, "m", seed, 16, transform, k)
            records = [
                {"event": "eval", "step": step, "split": "test", **{f"pass@{k}": v for k in ks}}
                for step, v in ((0, 0.1), (10, value))
            ]
            name = f"{arm}_s{seed}"
            runs.append(A.RunLog(name, Path(name), config, records, "finished"))
    return A.runs_frame(runs)


def claim4(frame) -> tuple[str, list[str]]:
    table = C.claims_table(frame, "m", "arithmetic", 16)
    final = table.rows[(table.rows["claim"] == "4") & (table.rows["kind"] == "final")]
    verdict = table.claims.set_index("claim").loc["4", "verdict"]
    return verdict, list(final["verdict"])


def seeds(mean: float, n: int = 5) -> list[float]:
    return [mean + 0.01 * d for d in np.linspace(-1, 1, n)]


def test_a_clear_effect_of_the_claimed_sign_is_reproduced() -> None:
    frame = synthetic({"k_opt=1": seeds(0.5), **{f"k_opt={k}": seeds(0.2) for k in (2, 4, 8)}})
    assert claim4(frame) == ("reproduced", ["reproduced"] * 3)


def test_a_clear_effect_of_the_opposite_sign_is_contradicted() -> None:
    frame = synthetic({"k_opt=1": seeds(0.2), **{f"k_opt={k}": seeds(0.5) for k in (2, 4, 8)}})
    assert claim4(frame) == ("contradicted", ["contradicted"] * 3)


@pytest.mark.parametrize("n_seeds", [1, 2])
def test_fewer_than_three_seeds_is_inconclusive_however_large_the_effect(n_seeds) -> None:
    arms = {"k_opt=1": seeds(0.9, n_seeds), **{f"k_opt={k}": seeds(0.1) for k in (2, 4, 8)}}
    assert claim4(synthetic(arms)) == ("inconclusive", ["inconclusive"] * 3)


def test_one_contradicted_comparison_contradicts_the_claim() -> None:
    arms = {"k_opt=1": seeds(0.5), "k_opt=2": seeds(0.2), "k_opt=4": seeds(0.2)}
    assert claim4(synthetic({**arms, "k_opt=8": seeds(0.8)})) == (
        "contradicted",
        ["reproduced", "reproduced", "contradicted"],
    )


def test_noise_is_inconclusive_and_a_missing_arm_has_no_data() -> None:
    rng = np.random.default_rng(0)
    arms = {f"k_opt={k}": list(0.3 + 0.05 * rng.standard_normal(5)) for k in (1, 2, 4)}
    verdict, rows = claim4(synthetic(arms))
    assert rows[:2] == ["inconclusive", "inconclusive"] and rows[2] == "no data"
    assert verdict == "inconclusive"


def test_the_estimator_zoo_is_a_holm_family_of_its_own() -> None:
    paper = {"k_opt=1": seeds(0.5), **{f"k_opt={k}": seeds(0.2) for k in (2, 4, 8)}}
    alone = C.claims_table(synthetic(paper, ks=(1, 4)), "m", "arithmetic", 16)
    assert not alone.rows["claim"].str.startswith("Z").any()  # no zoo arm, no zoo claims
    zoo = {"maxrl": seeds(0.6), "grpo": seeds(0.3), "k_opt=4 [maxpo]": seeds(0.2)}
    both = C.claims_table(synthetic({**paper, **zoo}, ks=(1, 4)), "m", "arithmetic", 16)
    final = both.rows[both.rows["kind"] == "final"].set_index("comparison")
    ours = alone.rows[alone.rows["kind"] == "final"].set_index("comparison")
    # the paper's claims keep their Holm p; the zoo's are adjusted among themselves
    np.testing.assert_array_equal(final.loc[ours.index, "p_holm"], ours["p_holm"])
    z = final[final["family"] == "zoo"]
    eligible = z[z["eligible"]]
    np.testing.assert_allclose(eligible["p_holm"], C.holm(list(eligible["p"])))
    verdicts = both.claims.set_index("claim")["verdict"]
    assert verdicts["Z3"] == "reproduced"  # maxrl 0.6 > grpo 0.3 (pass@4, the largest k_eval)
    assert verdicts["Z1"] == "inconclusive"  # maxpo 0.2 = k_opt=4 0.2: no effect
    assert verdicts["Z2"] == "no data"  # no passk_training runs
    assert z.loc["k_opt=4 − grpo, pass@4", "verdict"] == "contradicted"  # 0.2 < 0.3
    assert len(eligible) == 3  # Z1, Z3 and Z4's grpo comparison


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04); NaN is no test
    got = C.holm([0.04, 0.01, math.nan, 0.03])
    np.testing.assert_allclose(got, [0.06, 0.03, math.nan, 0.06])


def test_two_arm_contrast_is_welchs_t_test() -> None:
    a, b = np.array([1.0, 2.5, 3.0, 4.2]), np.array([0.5, 0.7, 2.0])
    got = C.contrast_test([a, b], [1, -1])
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert got["t"] == pytest.approx(welch.statistic) and got["p"] == pytest.approx(welch.pvalue)
    assert math.isnan(C.contrast_test([a, b[:1]], [1, -1])["p"])  # one seed: no test


def test_the_switch_table_is_a_hand_mean_of_the_logged_steps_around_the_switch() -> None:
    train = {r["step"]: r for r in hand_records(REPRO / "anneal_s0") if r["event"] == "train"}
    frame = A.switch_frame(A.load_runs([REPRO]), *SETTING).set_index("metric")
    assert set(frame["switch_step"]) == {30} and set(frame["seeds"]) == {1}  # s1, s2: OOM
    for metric in ("adv_std", "grad_norm", "kl_old"):
        before = np.mean([train[s][metric] for s in range(25, 30)])
        after = np.mean([train[s][metric] for s in range(30, 35)])
        assert frame.loc[metric, "before"] == pytest.approx(before, rel=1e-12)
        assert frame.loc[metric, "after"] == pytest.approx(after, rel=1e-12)
        assert frame.loc[metric, "ratio"] == pytest.approx(after / before, rel=1e-12)
    assert frame.loc["adv_std", "ratio"] > 5  # the paper scale's shock at 8 -> 1
