"""Claim 7's stall search: a committed criterion, every candidate it judged, the verdict.

A search is a folder holding ``criterion.yaml`` (:data:`CRITERION_FILE`), the base model's
held-out numbers per candidate (``search.json``, written by ``experiments/stall_search.py``)
and, per candidate that passed the base criterion, its k_opt = 1 pilot runs
(``<candidate>/<arm>_s<seed>``). The criterion looks at the base model and k_opt = 1 only:

1. base held-out pass@1 below ``base.pass@1_below`` and pass@16 at least
   ``base.pass@16_at_least``;
2. over the pilot's seeds, the mean of (held-out pass@1 at the last eval - at step 0) below
   ``pilot.pass@1_gain_below``: k_opt = 1 stalls.

The first candidate (in the file's order) that meets both stands in for the paper's hard
task (Figure 8); if none does, claim 7's verdict is :data:`NO_REGIME`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pkpo.arms import sweep_arm

from .render import Grid, number
from .runs import runs_under

CRITERION_FILE = "criterion.yaml"
SEARCH_FILE = "search.json"
NO_REGIME = "no stalling regime found at this scale"


@dataclass(frozen=True)
class StallCriterion:
    """A parsed ``criterion.yaml``; ``folder`` holds the search."""

    name: str
    folder: Path
    preset: str
    base_problems: int
    base_n: int
    pass1_below: float
    pass16_at_least: float
    arm: str
    seeds: tuple[int, ...]
    gain_below: float
    candidates: dict[str, list[str]]
    pilot_overrides: tuple[str, ...] = ()
    steps: int = 150

    @classmethod
    def load(cls, path: str | Path) -> StallCriterion:
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            base, pilot = raw["base"], raw["pilot"]
            return cls(
                name=str(raw["name"]),
                folder=path.parent,
                preset=str(raw["preset"]),
                base_problems=int(base["problems"]),
                base_n=int(base["n"]),
                pass1_below=float(base["pass@1_below"]),
                pass16_at_least=float(base["pass@16_at_least"]),
                arm=str(pilot["arm"]),
                seeds=tuple(int(s) for s in pilot["seeds"]),
                gain_below=float(pilot["pass@1_gain_below"]),
                candidates={str(k): list(v) for k, v in raw["candidates"].items()},
                pilot_overrides=tuple(str(o) for o in pilot.get("overrides") or ()),
            )
        except KeyError as err:
            raise ValueError(f"{path}: missing key {err}") from None

    @property
    def label(self) -> str:
        """The analysis label of the pilot arm's runs (``k_opt=1``)."""
        return sweep_arm(self.arm, self.steps).label

    def meets_base(self, base: dict[str, float]) -> bool:
        return base["pass@1"] < self.pass1_below and base["pass@16"] >= self.pass16_at_least


def find_searches(paths: Iterable[str | Path]) -> list[StallCriterion]:
    """Every ``criterion.yaml`` under ``paths``, parsed."""
    found = {p.resolve() for root in paths for p in Path(root).rglob(CRITERION_FILE)}
    return [StallCriterion.load(p) for p in sorted(found)]


def pilot_gains(df: pd.DataFrame, criterion: StallCriterion, candidate: str) -> pd.DataFrame:
    """Per seed of a candidate's pilot (runs under ``<folder>/<candidate>/``): held-out
    pass@1 at step 0 and at the last eval, its gain, and the last cumulative solve rate."""
    runs = runs_under(df, criterion.folder / candidate)
    runs = runs[(runs["arm"] == criterion.label).to_numpy()]
    rows = []
    for seed in criterion.seeds:
        run = runs[runs["seed"] == seed]
        evals = run[(run["event"] == "eval") & (run["metric"] == "pass@1")].sort_values("step")
        solve = run[(run["event"] == "train") & (run["metric"] == "cumulative_solve_rate")]
        if evals.empty:
            continue
        start, end = float(evals["value"].iloc[0]), float(evals["value"].iloc[-1])
        rows.append(
            {
                "seed": seed,
                "pass@1_start": start,
                "pass@1_end": end,
                "gain": end - start,
                "end_step": int(evals["step"].iloc[-1]),
                "solve_rate": float(solve.sort_values("step")["value"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class StallTable:
    criterion: StallCriterion
    rows: pd.DataFrame
    chosen: str | None

    @property
    def verdict(self) -> str:
        return f"split {self.chosen} stands in for the hard task" if self.chosen else NO_REGIME


def stall_table(df: pd.DataFrame, criterion: StallCriterion) -> StallTable:
    """Judge every candidate by the criterion: the base numbers from ``search.json``, the
    pilot's gains recomputed from the committed runs in ``df``."""
    search_path = criterion.folder / SEARCH_FILE
    search: dict[str, Any] = json.loads(search_path.read_text()) if search_path.exists() else {}
    rows = []
    for name, overrides in criterion.candidates.items():
        base = search.get(name, {}).get("base")
        row: dict[str, Any] = {"candidate": name, "overrides": tuple(overrides)}
        if base is None:
            rows.append({**row, "status": "not evaluated", "meets": False})
            continue
        row |= {"base_pass@1": base["pass@1"], "base_pass@16": base["pass@16"]}
        row["meets_base"] = criterion.meets_base(base)
        gains = pilot_gains(df, criterion, name) if row["meets_base"] else pd.DataFrame()
        complete = len(gains) == len(criterion.seeds)
        if complete:
            row |= {
                "pass@1_start": float(gains["pass@1_start"].mean()),
                "pass@1_end": float(gains["pass@1_end"].mean()),
                "gain": float(gains["gain"].mean()),
                "solve_rate": float(gains["solve_rate"].mean()),
            }
            row["stalls"] = row["gain"] < criterion.gain_below
        row["status"] = "pilot incomplete" if row["meets_base"] and not complete else "judged"
        row["meets"] = bool(row["meets_base"] and complete and row["stalls"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    chosen = next((r["candidate"] for r in rows if r["meets"]), None)
    return StallTable(criterion, frame, chosen)


def stall_grid(table: StallTable) -> Grid:
    c = table.criterion
    pct = functools.partial(number, scale=100, suffix=" %")  # fractions shown in per cent
    header = [
        "candidate",
        "overrides",
        "base pass@1",
        "base pass@16",
        "meets base",
        f"{c.label} pass@1, start → end (mean of {len(c.seeds)} seeds)",
        "gain (points)",
        "solve rate at end",
        "stalls",
        "meets",
    ]
    body = []
    for r in table.rows.to_dict("records"):
        cells = [r["candidate"], " ".join(f"`{o}`" for o in r["overrides"])]
        if r["status"] == "not evaluated":
            body.append([*cells, "not evaluated", *["—"] * 7])
            continue
        cells += [
            pct(r["base_pass@1"], ".2f"),
            pct(r["base_pass@16"], ".1f"),
            "yes" if r["meets_base"] else "no",
        ]
        if "gain" in r and not np.isnan(r.get("gain", np.nan)):
            cells += [
                f"{pct(r['pass@1_start'], '.2f')} → {pct(r['pass@1_end'], '.2f')}",
                f"{100 * r['gain']:+.2f}",
                pct(r["solve_rate"], ".1f"),
                "yes" if r["stalls"] else "no",
            ]
        elif r["meets_base"]:
            cells += ["pilot incomplete", "—", "—", "—"]
        else:
            cells += ["not run (base criterion not met)", "—", "—", "—"]
        cells.append("**yes**" if r["meets"] else "no")
        body.append(cells)
    notes = [
        f"Criterion ({c.folder.name}/{CRITERION_FILE}, committed before any candidate ran): "
        f"base pass@1 < {100 * c.pass1_below:g} % and pass@16 >= {100 * c.pass16_at_least:g} %; "
        f"then {c.label} over seeds {list(c.seeds)} gains < {100 * c.gain_below:g} points of "
        "held-out pass@1 from step 0 to its last eval.",
        f"Claim 7 (pass@k optimisation unblocks the hard split): {table.verdict}.",
    ]
    return Grid(f"Claim 7: stall search {c.name}", header, body, notes)
