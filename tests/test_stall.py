"""Claim 7's stall search: the criterion's judgement against the committed logs read by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pkpo.analysis import load_runs
from pkpo.analysis import stall as S

SEARCH = Path(__file__).parents[1] / "experiments" / "results" / "stall_search"


def _criterion() -> S.StallCriterion:
    return S.StallCriterion.load(SEARCH / S.CRITERION_FILE)


def test_the_criterion_file_is_read_whole():
    c = _criterion()
    assert (c.preset, c.base_problems, c.base_n) == ("tiny_arith_noisy", 200, 64)
    assert (c.arm, c.seeds, c.pilot_overrides) == (
        "k1",
        (2000, 2001, 2002),
        ("eval.n=64", "eval.every=50"),
    )
    assert list(c.candidates)[:3] == ["add3", "add4", "sub2"]


def test_the_base_criterion_by_hand():
    c = _criterion()
    assert c.meets_base({"pass@1": 0.0099, "pass@16": 0.05})
    assert not c.meets_base({"pass@1": 0.01, "pass@16": 0.5})  # pass@1 not below 1 %
    assert not c.meets_base({"pass@1": 0.0, "pass@16": 0.0499})  # too few successes


@pytest.mark.slow
def test_the_committed_search_recomputed_from_its_logs_by_hand():
    c = _criterion()
    table = S.stall_table(load_runs([SEARCH]), c)
    search = json.loads((SEARCH / S.SEARCH_FILE).read_text())
    # base: read from search.json and compared with the thresholds written in the YAML
    for row in table.rows.to_dict("records"):
        base = search[row["candidate"]]["base"]
        expected = base["pass@1"] < 0.01 and base["pass@16"] >= 0.05
        assert row["meets_base"] == expected, row["candidate"]
    # pilot: held-out pass@1 at the first and last eval of each run's events.jsonl
    gains = []
    for seed in c.seeds:
        lines = (SEARCH / "sub2" / f"k1_s{seed}" / "events.jsonl").read_text().splitlines()
        evals = [json.loads(x) for x in lines if '"event": "eval"' in x]
        assert evals[0]["step"] == 0 and evals[-1]["step"] == 150
        gains.append(evals[-1]["pass@1"] - evals[0]["pass@1"])
    sub2 = table.rows.set_index("candidate").loc["sub2"]
    assert sub2["gain"] == pytest.approx(sum(gains) / 3)
    assert bool(sub2["stalls"]) == (sum(gains) / 3 < 0.005)
    assert table.chosen is None and table.verdict == S.NO_REGIME
