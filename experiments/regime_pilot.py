"""The long-horizon study's horizon, by the rule committed in ``regime.yaml`` before its runs.

Reads the pilot's k_opt = 1 runs beside the rule and, for each candidate horizon H in order,
on the seed means of held-out pass@k (points):

(a) plateau: the least-squares slope of mean pass@1 on step over the evals in [3H/4, H],
    times H/4, is below ``plateau_gain_below``;
(b) past the peak: mean pass@16 at H is at least ``pass16_drop_at_least`` below the largest
    mean pass@16 of the evals before H.

The horizon is the first H that meets (a) or (b), else the last candidate. Every pilot run
and every candidate's numbers are printed, whichever way they came out.

    python -m experiments.regime_pilot experiments/results/regime_pilot
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pkpo import analysis as A
from pkpo.analysis.stated import seed_values

RULE_FILE = "regime.yaml"


def seed_means(df: pd.DataFrame, rule: dict, metric: str) -> pd.DataFrame:
    """Held-out ``metric`` (points) per eval step (rows) and pilot seed (columns)."""
    evals = A.held_out(df)
    evals = evals[(evals["metric"] == metric) & evals["seed"].isin(rule["seeds"])]
    wide = evals.pivot_table(index="step", columns="seed", values="value", aggfunc="last")
    return 100 * wide.reindex(columns=rule["seeds"])  # a seed not yet run is all NaN


def judge(pass1: pd.DataFrame, pass16: pd.DataFrame, rule: dict) -> pd.DataFrame:
    """One row per candidate horizon: the plateau gain, the pass@16 drop from its earlier
    peak, and whether each part of the rule is met (NaN where the pilot has not reached H
    on every seed)."""
    complete = pass1.dropna().index
    mean1, mean16 = pass1.loc[complete].mean(axis=1), pass16.loc[complete].mean(axis=1)
    rows = []
    for horizon in rule["candidates"]:
        row = {"H": horizon}
        if horizon in complete:
            window = mean1[(mean1.index >= 3 * horizon / 4) & (mean1.index <= horizon)]
            slope = np.polyfit(window.index.to_numpy(float), window.to_numpy(), 1)[0]
            row["plateau_gain"] = float(slope * horizon / 4)
            row["pass16_drop"] = float(mean16[mean16.index < horizon].max() - mean16[horizon])
            row["plateau"] = row["plateau_gain"] < rule["plateau_gain_below"]
            row["past_peak"] = row["pass16_drop"] >= rule["pass16_drop_at_least"]
            row["pass@1"], row["pass@16"] = float(mean1[horizon]), float(mean16[horizon])
        rows.append(row)
    return pd.DataFrame(rows)


def horizon(table: pd.DataFrame, rule: dict) -> int | None:
    """The first candidate meeting (a) or (b); the last one if every candidate was judged and
    none did; None while the pilot has not reached every candidate it needs."""
    for row in table.to_dict("records"):
        if "plateau" not in row or pd.isna(row["plateau"]):
            return None
        if row["plateau"] or row["past_peak"]:
            return int(row["H"])
    return int(rule["candidates"][-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help=f"the pilot's folder (with {RULE_FILE})")
    args = parser.parse_args(argv)
    path = args.folder / RULE_FILE
    if not path.is_file():
        parser.error(f"no {RULE_FILE} in {args.folder}")
    rule = yaml.safe_load(path.read_text(encoding="utf-8"))
    logs = A.scan_runs([args.folder])  # read once: the frame for the rule, the per-problem
    df = A.runs_frame(logs)  # outcomes (which the frame leaves out) for the levels' noise
    pass1 = seed_means(df, rule, "pass@1")
    pass16 = seed_means(df, rule, "pass@16")
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print("held-out pass@1 (points) per seed:\n", pass1.round(2))
        print("held-out pass@16 (points) per seed:\n", pass16.round(2))
        table = judge(pass1, pass16, rule)
        print(table.round(3).to_string(index=False))
    chosen = horizon(table, rule)
    print(f"horizon: {chosen if chosen is not None else 'not decided yet (pilot incomplete)'}")
    if chosen is not None:
        print(f"k_opt = 1 at step {chosen}, mean over seeds (the next protocol's margins):")
        for metric, value in levels(df, logs, rule, chosen).items():
            print(f"  {metric}: {value:.4g}")
    return 0


def levels(df: pd.DataFrame, logs: list, rule: dict, step: int) -> dict[str, float]:
    """What k_opt = 1 reaches at ``step``, mean over the pilot's seeds: held-out pass@k and
    the training metrics as the claims read them (points; entropy in nats), and the eval
    noise of one paired pass@1 difference (sqrt(2) x one run's resample s.e., points)."""
    out = {}
    for metric in (*(f"pass@{k}" for k in (1, 2, 4, 8, 16)), "cumulative_solve_rate", "entropy"):
        values = seed_values(df, {rule["arm"]: "k_opt=1"}, step, ((rule["arm"], 1.0),), metric)
        out[metric] = float(values["d"].mean())
    counts = A.eval_counts(logs, step)
    noise = [A.resample_se(run["c"], run["n"]) for _, run in counts.groupby("run")]
    out["pass@1 eval noise of a paired difference"] = 100 * math.sqrt(2) * float(np.mean(noise))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
