"""The confirmatory protocol's design from its pilot: effects, seeds needed, power.

    python -m experiments.power_analysis \\
        experiments/results/tiny_arith_confirmatory/protocol.yaml \\
        experiments/results/tiny_arith_noisy

For the claims as stated (a protocol's ``claims:`` section, else its exploratory
``rereading.yaml``): the power of every part's decision rule at the protocol's seed count and
the seeds it needs for 80 %, by simulation from the pilot's per-seed s.d. of each contrast at
``--pilot-step`` (default the protocol's final step; :func:`pkpo.analysis.stated.power_table`).

For every comparison of a protocol's primary and secondary families, on the pilot's runs at
the protocol's final step: the per-seed contrast's mean and standard deviation, d_z = mean / sd,
the seeds a paired two-sided t-test needs for 80 % power at alpha / (number of primary
comparisons) (the first step of Holm; statsmodels), and the power at the protocol's seed
count, with d_z as measured and shrunk by a quarter for the winner's curse.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import pandas as pd
from statsmodels.stats.power import TTestPower

from pkpo.analysis.confirmatory import Protocol
from pkpo.analysis.runs import load_runs
from pkpo.analysis.stated import power_table, seed_values

POWER = 0.8
SHRINK = 0.75


def seeds_needed(dz: float, alpha: float) -> float:
    if not math.isfinite(dz) or dz == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = TTestPower().solve_power(effect_size=abs(dz), alpha=alpha, power=POWER)
    return float(n) if n is not None and math.isfinite(n) else math.nan


def design_table(protocol: Protocol, pilot: pd.DataFrame) -> pd.DataFrame:
    alpha = protocol.alpha / len(protocol.families["primary"])
    seeds = len(protocol.seeds)
    rows = []
    for family, contrasts in protocol.families.items():
        for contrast in contrasts:
            d = seed_values(
                pilot, protocol.labels, protocol.final_step, contrast.terms, contrast.metric
            )["d"]
            sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
            dz = float(d.mean()) / sd if sd and sd > 0 else math.nan
            power = TTestPower().power
            rows.append(
                {
                    "family": family,
                    "claim": contrast.claim,
                    "comparison": contrast.text(protocol.labels),
                    "pilot seeds": len(d),
                    "mean": round(float(d.mean()), 3),
                    "sd": round(sd, 3),
                    "d_z": round(dz, 2),
                    "seeds needed": round(seeds_needed(dz, alpha), 1),
                    f"power at {seeds}": round(power(abs(dz), seeds, alpha), 2),
                    f"power at {seeds}, d_z x {SHRINK}": round(
                        power(abs(dz) * SHRINK, seeds, alpha), 2
                    ),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", type=Path)
    parser.add_argument("pilot", type=Path, help="the pilot sweep's folder")
    parser.add_argument("--pilot-step", type=int, help="the pilot's eval step to read")
    args = parser.parse_args(argv)
    protocol = Protocol.load(args.protocol)
    pilot = load_runs([args.pilot])
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        claims = protocol.stated or protocol.rereading
        if claims is not None:
            step = args.pilot_step or protocol.final_step
            powers = power_table(claims, pilot, protocol.labels, step, len(protocol.seeds))
            print(f"claims as stated ({claims.status}), power at {len(protocol.seeds)} seeds:")
            print(powers.to_string(index=False))
        if protocol.families["primary"]:
            print(design_table(protocol, pilot).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
