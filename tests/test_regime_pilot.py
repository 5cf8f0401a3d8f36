"""The long-horizon study's horizon rule (experiments/results/regime_pilot/regime.yaml) on
hand-made curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments import regime_pilot

RULE = {
    "seeds": [1, 2],
    "candidates": [400, 600, 800],
    "plateau_gain_below": 0.5,
    "pass16_drop_at_least": 5.0,
}
STEPS = np.arange(0, 850, 50)


def _frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({1: values, 2: values}, index=pd.Index(STEPS, name="step"))


def test_the_committed_rule_is_the_one_tested():
    path = Path(__file__).parents[1] / "experiments" / "results" / "regime_pilot" / "regime.yaml"
    committed = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("plateau_gain_below", "pass16_drop_at_least"):
        assert committed[key] == RULE[key]
    assert committed["candidates"][: len(RULE["candidates"])] == RULE["candidates"]


def test_a_plateau_is_found_by_the_fitted_gain_over_the_last_quarter():
    # pass@1 rises 1 point per 50 steps until 500, then flat: over [450, 600] the fitted gain
    # is positive, over [600, 800] it is 0
    pass1 = _frame(np.minimum(STEPS, 500) / 50.0)
    pass16 = _frame(np.full(len(STEPS), 40.0))
    table = regime_pilot.judge(pass1, pass16, RULE)
    slope_400 = np.polyfit([300, 350, 400], [6, 7, 8], 1)[0]
    assert table.loc[0, "plateau_gain"] == pytest.approx(slope_400 * 100)
    assert table.loc[2, "plateau_gain"] == pytest.approx(0.0, abs=1e-9)
    assert regime_pilot.horizon(table, RULE) == 800


def test_past_the_pass16_peak_stops_first():
    pass1 = _frame(STEPS / 50.0)  # never a plateau
    pass16 = _frame(np.where(STEPS <= 200, 40 + STEPS / 20, 50 - (STEPS - 200) / 40))
    table = regime_pilot.judge(pass1, pass16, RULE)
    # peak 50 at step 200; at 400 the drop is 5 points: met
    assert table.loc[0, "pass16_drop"] == pytest.approx(5.0)
    assert regime_pilot.horizon(table, RULE) == 400


def test_no_horizon_while_a_seed_has_not_reached_it():
    pass1 = _frame(STEPS / 50.0)
    pass1.loc[pass1.index > 300, 2] = np.nan  # seed 2 still running
    table = regime_pilot.judge(pass1, _frame(np.full(len(STEPS), 40.0)), RULE)
    assert regime_pilot.horizon(table, RULE) is None
