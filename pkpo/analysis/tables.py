"""Numbers of the results tables: final metrics, mean ± s.e. over seeds, the paper's layout.

:func:`final_metrics` takes each run's last held-out eval (and last train event),
:func:`aggregate_seeds` the mean ± s.e. over seeds, and :func:`results_table` lays them out
as the paper's Table 1 (Table 5 for ARC) for one (model, task, n): rows
:data:`PAPER_ROWS` and any other arm present, EntropyReg at its best coefficient.
:func:`paper_numbers` reads the published Tables 1-8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from pkpo.arms import ENTROPY_REG, PAPER_ROWS

from .errors import warn
from .runs import arms_in, pick_split
from .style import display_model, display_task

TABLE_K_EVALS = (1, 2, 4, 8, 16)
"""k_eval columns of Tables 1-4, 7 and 8."""


@dataclass(frozen=True)
class PaperTable:
    """Table ``number`` of the paper reports ``model`` on ``task`` (our task name)."""

    number: int
    model: str
    task: str


PAPER_TABLES = tuple(
    PaperTable(i, model, task)
    for i, (model, task) in enumerate(
        [
            ("gemma2_9b", "math"),
            ("llama31_8b", "math"),
            ("gemma2_9b", "mbpp"),
            ("llama31_8b", "mbpp"),
            ("gemma2_9b", "arc"),
            ("llama31_8b", "arc"),
            ("gemma2_2b", "math"),
            ("gemma2_2b", "mbpp"),
        ],
        start=1,
    )
)


def settings(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """The (model, task, n) combinations that have runs, sorted."""
    if df.empty:
        return []
    keys = df[["model", "task", "n"]].drop_duplicates().dropna()
    return sorted((str(m), str(t), int(n)) for m, t, n in keys.itertuples(index=False))


def setting_frame(df: pd.DataFrame, model: str, task: str, n: int | None = None) -> pd.DataFrame:
    """The rows of one (model, task[, n]) setting."""
    mask = (df["model"] == model) & (df["task"] == task)
    if n is not None:
        mask &= df["n"] == n
    return df[mask]


def held_out(df: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """The eval rows of each run's held-out split (:func:`pick_split`)."""
    evals = df[df["event"] == "eval"]
    ordered = evals.sort_values("step", kind="stable")
    chosen = ordered.groupby("run", observed=True)["split"].agg(
        lambda logged: pick_split(list(logged), split)
    )
    wanted = evals["run"].astype(str).map(chosen.rename(index=str)).astype(str)
    return evals[evals["split"].astype(str).to_numpy() == wanted.to_numpy()]


def _at_last_step(rows: pd.DataFrame) -> pd.DataFrame:
    last = rows.groupby("run", observed=True)["step"].transform("max")
    return rows[rows["step"] == last]


def final_metrics(df: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """Each run's metrics at its last held-out ``eval`` event and its last ``train`` event.

    ``split``: the held-out split, by default each run's own (:func:`pick_split`). Columns
    as :func:`load_runs`; ``step`` is the step of that last event.
    """
    train = df[df["event"] == "train"]
    parts = [_at_last_step(held_out(df, split)), _at_last_step(train)]
    return pd.concat(parts, ignore_index=True)


def aggregate_seeds(
    values: pd.DataFrame, by: Sequence[str], value: str = "value", seed: str = "seed"
) -> pd.DataFrame:
    """Mean and standard error over seeds: s.e. = std(ddof=1) / sqrt(#seeds).

    ``values`` has one row per run (one seed each) and group; rows with a missing value
    do not count. Returns ``by`` + mean, se (NaN for one seed), n_seeds, seeds, runs.
    """
    present = values.dropna(subset=[value])

    def summarise(group: pd.DataFrame) -> pd.Series:
        x = group[value].to_numpy(dtype=float)
        se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
        return pd.Series(
            {
                "mean": x.mean(),
                "se": se,
                "n_seeds": len(x),
                "seeds": tuple(sorted(group[seed].tolist(), key=str)),
                "runs": tuple(sorted(group["run"].astype(str))) if "run" in group else (),
            }
        )

    if present.empty:
        columns = [*by, "mean", "se", "n_seeds", "seeds", "runs"]
        return pd.DataFrame(columns=columns)
    grouped = present.groupby(list(by), observed=True, sort=False)
    return grouped[list(present.columns)].apply(summarise).reset_index()


def _entropy_rows(frame: pd.DataFrame) -> np.ndarray:
    """Row mask of the EntropyReg arms on the k_opt = 1 baseline, any coefficient."""
    entropy = {label for label, arm in arms_in(frame).items() if arm.shown.kind == ENTROPY_REG}
    return frame["arm"].astype(str).isin(entropy).to_numpy(dtype=bool)


def best_entropy_arm(final: pd.DataFrame) -> tuple[str | None, dict[str, float]]:
    """The EntropyReg coefficient with the highest mean held-out pass@1 at the final eval.

    ``final`` is :func:`final_metrics` of one setting. Returns (best arm or None, mean
    held-out pass@1 per EntropyReg arm); the paper reports only the best of its sweep.
    """
    arms = final.loc[_entropy_rows(final)]
    pass1 = arms[(arms["event"] == "eval") & (arms["metric"] == "pass@1")]
    means = pass1.groupby(pass1["arm"].astype(str))["value"].mean().to_dict()
    if not means:
        return None, {}
    return max(means, key=lambda arm: means[arm]), means


def one_run_per_seed(frame: pd.DataFrame, where: str) -> tuple[set[str], dict[str, str]]:
    """Per (arm, seed), the run of a long frame that trained longest (ties: by name); a
    duplicate warns. Returns the kept runs and {dropped run: why}."""
    reach = frame[frame["event"] == "train"].groupby(frame["run"].astype(str))["step"].max()
    runs = frame[["run", "arm", "seed"]].drop_duplicates().astype({"run": str, "arm": str})
    runs["reach"] = runs["run"].map(reach).fillna(-1)
    runs = runs.sort_values(["reach", "run"], ascending=[False, True])
    duplicate = runs.duplicated(["arm", "seed"], keep="first")
    dropped = {}
    for row in runs[duplicate].itertuples():
        dropped[row.run] = f"repeats seed {row.seed} of {row.arm}; the longer run is used"
        warn(f"{where}: {row.run} {dropped[row.run]}")
    return set(runs.loc[~duplicate, "run"]), dropped


def _drop_short_runs(final: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Keep the runs whose last held-out eval is at the setting's latest eval step.

    A run that crashed or is still going would otherwise enter a table's mean with an
    earlier policy (a crash before the first update contributes the base model). Returns
    the kept rows and {dropped run: why}.
    """
    evals = final[final["event"] == "eval"]
    if evals.empty:
        return final, {}
    reach = evals.groupby(evals["run"].astype(str))["step"].max()
    latest = int(reach.max())
    short = reach[reach < latest]
    why = {
        run: f"last held-out eval at step {step}, before step {latest} of the longest runs; "
        "not averaged"
        for run, step in short.items()
    }
    return final[~final["run"].astype(str).isin(why)], why


@dataclass(frozen=True)
class Column:
    metric: str
    event: str
    label: str


def table_columns(task: str) -> tuple[Column, ...]:
    """Table 5 layout for ARC, Table 1 layout (k_eval = 1..16, held out) otherwise."""
    if task == "arc":
        return (
            Column("cumulative_solve_rate", "train", "Cumulative Solve Rate"),
            Column("pass@1", "eval", "pass@1"),
            Column("pass@16", "eval", "pass@16"),
        )
    return tuple(Column(f"pass@{k}", "eval", f"k_eval={k}") for k in TABLE_K_EVALS)


@dataclass
class ResultsTable:
    """A results table in tidy form: ``cells`` has one row per (row, column) of the layout."""

    key: str
    title: str
    model: str
    task: str
    n: int | None
    columns: tuple[Column, ...]
    cells: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    paper: PaperTable | None = None
    used_runs: dict[str, str] = field(default_factory=dict)
    """run -> the row it fed."""
    skipped_runs: dict[str, str] = field(default_factory=dict)
    """run of this setting -> why no cell uses it."""

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(self.cells["row"]))


def _empty_reason(row_runs: pd.DataFrame, column: Column) -> str:
    if row_runs.empty:
        return "no runs"
    if not (row_runs["event"] == column.event).any():
        return f"no {column.event} event yet"
    return "not logged"


def results_table(
    final: pd.DataFrame,
    model: str,
    task: str,
    n: int | None = None,
    *,
    paper: PaperTable | None = None,
    split: str | None = None,
) -> ResultsTable:
    """The paper's table for one (model, task[, n]): mean +- s.e. over seeds, in percent.

    ``final`` is :func:`final_metrics` of all runs. Rows: k_opt = 1, 2, 4, 8, tang,
    EntropyReg (the best coefficient, :func:`best_entropy_arm`), then any other arm present
    (annealed, other k_opt, other transforms). A row without runs stays, marked; so does a
    cell without the metric.
    """
    where = f"{model}/{task}" + ("" if n is None else f"/n={n}")
    sub = setting_frame(final, model, task, n).copy()
    sub["arm"] = sub["arm"].astype(str)
    best, entropy_means = best_entropy_arm(sub)
    not_best = _entropy_rows(sub) & (sub["arm"] != best).to_numpy(dtype=bool)
    skipped = {
        run: f"EntropyReg coefficient not the best of the sweep ({best})"
        for run in sub.loc[not_best, "run"].unique()
    }
    sub = sub.loc[~not_best]
    sub["row"] = sub["arm"].where(sub["arm"] != best, ENTROPY_REG)
    kept, dropped = one_run_per_seed(sub, where)
    sub = sub[sub["run"].astype(str).isin(kept)]
    skipped.update(dropped)
    sub, short = _drop_short_runs(sub)
    skipped.update(short)
    columns = table_columns(task)
    configs = arms_in(sub)
    others = sorted(set(sub["row"]) - set(PAPER_ROWS), key=lambda a: configs[a].sort_key())
    rows = [*PAPER_ROWS, *others]
    values = pd.concat(
        [
            sub[(sub["event"] == c.event) & (sub["metric"] == c.metric)].assign(column=c.label)
            for c in columns
        ],
        ignore_index=True,
    )
    values["value"] = 100.0 * values["value"]

    splits = sorted(set(values.loc[values["event"] == "eval", "split"]))
    notes = [
        f"Values in %: the last held-out eval event (split: {', '.join(splits) or '—'}) of each run"
        + (", cumulative solve rate from the last train event" if task == "arc" else "")
        + ". Cell: mean ± s.e. over seeds, s.e. = std(ddof=1)/√n, n = number of seeds "
        "(n=1: no s.e.).",
    ]
    if entropy_means:
        sweep = ", ".join(f"{arm}: {100 * v:.2f}" for arm, v in entropy_means.items())
        notes.append(
            "EntropyReg = the best coefficient of the sweep by mean held-out pass@1 at the "
            f"final eval ({sweep}); chosen: {best}."
        )
    steps = values.groupby(["row", "column"])["step"].agg(["min", "max"])
    notes += [
        f"{row}, {column}: the seeds' final steps differ ({lo}–{hi}); runs unfinished?"
        for (row, column), (lo, hi) in steps.iterrows()
        if lo != hi
    ]
    if short:
        notes.append(
            "Not averaged, their last held-out eval is before the latest one (crashed or "
            "unfinished): "
            + ", ".join(f"{run} ({why.split(',')[0]})" for run, why in short.items())
        )
    title = f"{display_model(model)} on {display_task(task)}" + ("" if n is None else f" (n={n})")
    if paper:
        title = f"Table {paper.number}: {title} — ours vs the paper's Table {paper.number}"
    key = "_".join(
        [*([f"table{paper.number}"] if paper else []), model, task, *([f"n{n}"] if n else [])]
    )
    return ResultsTable(
        key=key,
        title=title,
        model=model,
        task=task,
        n=n,
        columns=columns,
        cells=_table_cells(sub, values, rows, columns),
        notes=notes,
        paper=paper,
        used_runs=dict(zip(sub["run"], sub["row"], strict=True)),
        skipped_runs=skipped,
    )


def _table_cells(
    runs: pd.DataFrame, values: pd.DataFrame, rows: Sequence[str], columns: Sequence[Column]
) -> pd.DataFrame:
    """One row per (row, column): the seed statistics, or why the cell is empty."""
    stats = aggregate_seeds(values, ["row", "column"]).set_index(["row", "column"])
    cells = []
    for row in rows:
        for column in columns:
            cell = {"row": row, "column": column.label, "metric": column.metric}
            if (row, column.label) in stats.index:
                cell.update(stats.loc[(row, column.label)].to_dict(), note="")
            else:
                reason = _empty_reason(runs[runs["row"] == row], column)
                cell.update(mean=math.nan, se=math.nan, n_seeds=0, seeds=(), runs=(), note=reason)
            cells.append(cell)
    return pd.DataFrame(cells)


def paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's Tables 1-8 (``analysis/paper/tables.csv``, installed as package data of
    ``pkpo.notebooks``): table, model, benchmark, row, column (pass@K or
    cumulative_solve_rate), mean, se, all in %."""
    source = files("pkpo.notebooks") / "paper" / "tables.csv" if path is None else Path(path)
    with source.open(encoding="utf-8") as csv:
        return pd.read_csv(csv)
