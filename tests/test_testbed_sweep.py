"""The committed testbed sweeps (experiments/results/tiny_arith*: the supervised start of
model=tiny_arith and the noisy one of model=tiny_arith_noisy): every run is there, and
``pkpo-analyze`` regenerates its claims tables and figures from the logs, with verdicts that
agree with a hand computation straight from events.jsonl (json + scipy, no pkpo.analysis).

The hand computation of a verdict: the comparison's effect and Welch test by scipy, then
Holm-Bonferroni by hand over the comparison's family of eligible final-eval comparisons
(claims 1-7, or the estimator zoo's Z1-Z4; the other members' p as the table reports them),
then the declared rule.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pkpo import analysis as A
from pkpo.analysis import cli as analyze
from pkpo.analysis import figures

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"
MAIN, HARD = RESULTS / "tiny_arith", RESULTS / "tiny_arith_hard"
NOISY, NOISY_HARD = RESULTS / "tiny_arith_noisy", RESULTS / "tiny_arith_noisy_hard"
SEEDS = (0, 1, 2, 3, 4)
PAPER_ARMS = ("k1", "k2", "k4", "k8", "tang", "anneal", "anneal_loo", "pkpo_sloo_centred-k4")
ZOO_ARMS = ("maxpo-k4", "passk_training-k4", "grpo", "dr_grpo", "maxrl", "grpo_passk")
MAIN_ARMS = PAPER_ARMS + ZOO_ARMS
HARD_ARMS = ("k1", "k4", "k8")
SWEEPS = ((MAIN, MAIN_ARMS), (HARD, HARD_ARMS), (NOISY, PAPER_ARMS), (NOISY_HARD, HARD_ARMS))
FINAL = 150


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def per_seed(folder: Path, arm: str, metric: str, source: str = "eval") -> np.ndarray:
    """Per seed: the held-out metric at the final eval, or the last train event's before it;
    in points."""
    out = []
    for seed in SEEDS:
        logged = records(folder / f"{arm}_s{seed}")
        if source == "eval":
            (value,) = [r[metric] for r in logged if r["event"] == "eval" and r["step"] == FINAL]
        else:
            train = [r for r in logged if r["event"] == "train" and r["step"] < FINAL]
            value = max(train, key=lambda r: r["step"])[metric]
        out.append(100 * value)
    return np.array(out)


def hand_holm(p: float, family: list[float]) -> float:
    """Holm's adjusted p of ``p``, a member of ``family``: max over the sorted prefix of
    (m - i) p_(i), capped at 1."""
    ordered = sorted(family)
    m, running = len(ordered), 0.0
    for i, q in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * q))
        if q == p:
            return running
    raise AssertionError(f"{p} is not in the family")


def hand_verdict(effect: float, p_holm: float) -> str:
    if p_holm < 0.05:
        return "reproduced" if effect > 0 else "contradicted"
    return "inconclusive"


@pytest.mark.parametrize(("folder", "arms"), SWEEPS, ids=lambda x: getattr(x, "name", None))
def test_every_run_of_the_sweep_is_committed_and_finished(folder: Path, arms) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    entropy = [name for name in manifest if name.startswith("ent")]
    expected = {f"{arm}_s{seed}" for arm in arms for seed in SEEDS} | set(entropy)
    assert set(manifest) == expected and len(entropy) == len(SEEDS)
    for name, entry in manifest.items():
        assert entry["status"] == "done" and entry["exit_codes"] == [0], name
        ends = [r for r in records(folder / name) if r["event"] == "end"]
        assert ends[-1]["status"] == "finished", name
        assert not (folder / name / "checkpoints").exists()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("report")
    folders = [str(folder) for folder, _ in SWEEPS]
    args = [*folders, "--out", str(out), "--notebooks", "tables,rl_figures"]
    assert analyze.main(args) == 0
    yield out
    shutil.rmtree(out / ".cache")  # the pickled runs frame (~70 MB)


def claims_rows(report: Path, task: str, model: str = "tiny_arith") -> list[dict]:
    with (report / "tables" / f"claims_{model}_{task}_n16.csv").open() as f:
        return list(csv.DictReader(f))


def row_of(rows: list[dict], claim: str, comparison: str) -> dict:
    (row,) = [
        r for r in rows if (r["claim"], r["comparison"], r["kind"]) == (claim, comparison, "final")
    ]
    return row


@pytest.mark.parametrize(
    ("folder", "task", "claim", "comparison", "arms", "metric", "source"),
    [
        (MAIN, "tiny_arith", "4", "k_opt=1 − k_opt=4, pass@1", ("k1", "k4"), "pass@1", "eval"),
        (MAIN, "tiny_arith", "6", "k_opt=4 − tang, pass@4", ("k4", "tang"), "pass@4", "eval"),
        (HARD, "tiny_arith_hard", "7", "k_opt=8 − k_opt=1, cumulative solve rate", ("k8", "k1"),
         "cumulative_solve_rate", "train"),
        (MAIN, "tiny_arith", "Z1", "k_opt=4 [maxpo] − k_opt=4, pass@4", ("maxpo-k4", "k4"),
         "pass@4", "eval"),
        (MAIN, "tiny_arith", "Z3", "maxrl − grpo, pass@16", ("maxrl", "grpo"), "pass@16", "eval"),
        (NOISY, "tiny_arith", "4", "k_opt=1 − k_opt=4, pass@1", ("k1", "k4"), "pass@1", "eval"),
        (NOISY, "tiny_arith", "1", "k_opt=8 − k_opt=1, pass@8", ("k8", "k1"), "pass@8", "eval"),
        (NOISY_HARD, "tiny_arith_3d_hard", "7", "k_opt=8 − k_opt=1, cumulative solve rate",
         ("k8", "k1"), "cumulative_solve_rate", "train"),
    ],
)  # fmt: skip
def test_a_verdict_of_the_claims_table_matches_a_hand_computation(
    report: Path,
    folder: Path,
    task: str,
    claim: str,
    comparison: str,
    arms,
    metric: str,
    source: str,
) -> None:
    a, b = (per_seed(folder, arm, metric, source) for arm in arms)
    welch = stats.ttest_ind(a, b, equal_var=False)
    model = "tiny_arith_noisy" if folder in (NOISY, NOISY_HARD) else "tiny_arith"
    rows = claims_rows(report, task, model)
    got = row_of(rows, claim, comparison)
    assert int(got["step"]) == FINAL and got["n_seeds"] == "5;5"
    assert float(got["effect"]) == pytest.approx(a.mean() - b.mean(), abs=1e-9)
    assert float(got["p"]) == pytest.approx(welch.pvalue, rel=1e-9)
    family = [
        float(r["p"])
        for r in rows
        if r["kind"] == "final" and r["eligible"] == "True" and r["family"] == got["family"]
    ]
    assert got["family"] == ("zoo" if claim.startswith("Z") else "paper")
    expected = hand_verdict(a.mean() - b.mean(), hand_holm(float(got["p"]), family))
    assert got["verdict"] == expected


def test_the_figures_of_both_splits_are_regenerated(report: Path) -> None:
    figures = report / "figures"
    for name in ("fig3", "fig6", "fig7"):
        assert (figures / f"{name}_tiny_arith_tiny_arith_n16.png").stat().st_size > 10_000
    assert (figures / "fig8_tiny_arith_tiny_arith_hard_n16.png").stat().st_size > 10_000


def test_figures_6_to_8_draw_the_papers_arms_not_the_zoos_k_free_ones() -> None:
    frame = A.setting_frame(A.load_runs([MAIN]), "tiny_arith", "tiny_arith", 16)
    drawn = {arm.label for arm in figures._arms_for_progress(frame, None)}
    assert drawn == {
        "k_opt=1",
        "k_opt=2",
        "k_opt=4",
        "k_opt=8",
        "k_opt=4 [pkpo_sloo_centred]",
        "k_opt=4 [maxpo]",
        "k_opt=4 [passk_training]",
        "tang",
        "EntropyReg (0.001)",
    }
