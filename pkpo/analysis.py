"""Tables 1-8 and Figures 1-8 of the paper, regenerated from run logs.

Inputs are the RL loop's run folders (``config.yaml`` + ``events.jsonl``, schema in
:mod:`pkpo.logger`) and the toy experiment's CSV folders (``fig1_maxg_at_k.csv`` ...).
Everything here is a small function over pandas frames so that the notebooks in
``analysis/`` and the tests share one implementation:

* reading: :func:`scan_runs` (tolerant of crashed, running, resumed and older logs),
  :func:`load_runs` (long format: one row per run x step x metric), :func:`run_inventory`,
  :func:`find_toy_dirs`;
* numbers: :func:`final_metrics`, :func:`aggregate_seeds` (mean +- s.e. over seeds),
  :func:`results_table` (the paper's Table 1 layout, or Table 5's for ARC);
* rendering: :func:`table_grid`, :func:`comparison_grid` and :func:`to_markdown`,
  :func:`to_latex`, :func:`to_html`;
* figures (matplotlib ``Figure`` objects; :class:`NoDataError` when a figure has nothing to
  show): ``fig_toy_*`` for Figures 1, 2, 4 and 5, :func:`fig_annealing` (3),
  :func:`fig_solve_rate_entropy` (6), :func:`fig_rolling_pass_at_k` (7),
  :func:`fig_arc_progress` (8);
* the report: :class:`Report` (files + a manifest per notebook) and :func:`write_index`.

Arms. A run's arm is ``tang`` (Tang et al. 2025, pass@n), ``annealed (a→b)`` (a k_opt
schedule), ``EntropyReg (c)`` (entropy bonus c > 0 on the k_opt = 1 baseline) or
``k_opt=K``; a transform other than the paper's (``loo`` for K = 1, ``pkpo_sloo_minus_one``,
Eq. 33, otherwise) is appended in brackets, e.g. ``k_opt=4 [pkpo_sloo]``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments.toy.style import K_COLORS

# ----------------------------------------------------------------------------- constants

TABLE_K_EVALS = (1, 2, 4, 8, 16)
"""k_eval columns of Tables 1-4, 7 and 8."""

TRAIN_K_EVALS = (1, 2, 4, 8, 12, 16)
"""k_eval values the loop logs at every step (Section 5.2); Figure 7 has one panel each."""

PAPER_ROWS = ("k_opt=1", "k_opt=2", "k_opt=4", "k_opt=8", "tang", "EntropyReg")
"""Rows every results table shows, with or without runs ([TZSM25] is ``tang``)."""

BENCHMARKS = {"math": "MATH", "mbpp": "Coding", "arc": "ARC"}
"""Our task names -> the paper's benchmark names (mbpp trains on MBPP, evaluates on HumanEval)."""

MODEL_NAMES = {"gemma2_9b": "GEMMA2-9B", "llama31_8b": "LLAMA3.1-8B", "gemma2_2b": "GEMMA2-2B"}

PAPER_DEFAULT_TRANSFORMS = {"loo", "pkpo_sloo_minus_one"}
"""The paper's transforms: LOO (Eq. 26) for k_opt = 1 and s^(loo-1) (Eq. 33) otherwise."""

PREFERRED_SPLIT = "test"
"""The held-out split when a run evaluates on several (the loop logs its task's eval_split)."""
CONFIG_COLUMNS = (
    "task",
    "model",
    "seed",
    "n",
    "transform",
    "k_opt",
    "schedule",
    "k_start",
    "k_end",
    "switch_step",
    "entropy_coef",
    "arm",
)
PARAMS_ENV = "PKPO_ANALYSIS_PARAMS"
"""Environment variable naming the JSON file of parameters the notebooks read."""


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


class AnalysisWarning(UserWarning):
    """A log read partially or with defaults (corrupted line, missing key, duplicate seed)."""


class NoDataError(ValueError):
    """A table or figure has no runs (or no logged metric) to show; the message says which."""


def _warn(message: str) -> None:
    warnings.warn(message, AnalysisWarning, stacklevel=3)


# ----------------------------------------------------------------------------- colours

ARM_COLORS = {"tang": "#000000", "annealed": "#d62ad6", "EntropyReg": "#8c8c8c"}
"""Colours of the arms that are not a constant k_opt; k_opt = k uses ``K_COLORS[k]``, the
toy figures' colour of k (``experiments/toy/style.py``), so k means one colour everywhere.
Black, magenta and grey lie outside the turbo colour map those come from."""


def k_color(k: int) -> Any:
    """The colour of k (k_opt or the toy's k) in every figure."""
    return K_COLORS[min(max(int(k), 1), max(K_COLORS))]


_K_ARM = re.compile(r"^k_opt=(\d+)")


def arm_style(arm: str) -> dict[str, Any]:
    """Line colour and style of an arm: its k colour, dashed for a non-paper transform."""
    match = _K_ARM.match(arm)
    if match:
        color = k_color(int(match.group(1)))
    else:
        color = next((c for name, c in ARM_COLORS.items() if arm.startswith(name)), "#17becf")
    linestyle = "--" if "[" in arm or "+" in arm else "-"
    return {"color": color, "linestyle": linestyle}


def arm_sort_key(arm: str) -> tuple[int, float, str]:
    """Table/legend order: k_opt=1, 2, 4, ... then tang, EntropyReg, annealed, the rest."""
    match = _K_ARM.match(arm)
    if match:
        return (0, int(match.group(1)), arm)
    for rank, name in enumerate(("tang", "EntropyReg", "annealed"), start=1):
        if arm.startswith(name):
            return (rank, 0, arm)
    return (9, 0, arm)


# ----------------------------------------------------------------------------- reading logs


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The records of one ``events.jsonl``, resume duplicates removed (:func:`dedupe_records`).

    A line that is not a JSON object with an ``event`` (a line cut short by a crash, or
    two lines fused by a resume after one) is skipped with an :class:`AnalysisWarning`.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                _warn(f"{path}:{lineno}: unreadable line skipped ({err.msg}): {line[:80]!r}")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("event"), str):
                _warn(f"{path}:{lineno}: line without an 'event' field skipped")
                continue
            records.append(record)
    return dedupe_records(records)


def dedupe_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last record of each (event, step, split), in file order.

    A resumed run replays the steps after its last checkpoint, so the later record of a
    step is the one whose model state continued; records without a step are all kept.
    """
    last: dict[tuple[Any, ...], int] = {}
    for i, record in enumerate(records):
        step = record.get("step")
        key = ("", i) if step is None else (record["event"], step, record.get("split"))
        last[key] = i
    return [records[i] for i in sorted(last.values())]


@dataclass(frozen=True)
class RunConfig:
    """The config keys that identify a run's arm (``config.yaml``, resolved by Hydra)."""

    task: str | None = None
    model: str | None = None
    seed: int | None = None
    n: int | None = None
    transform: str | None = None
    k_opt: int | None = None
    schedule: str = "constant"
    k_start: int | None = None
    k_end: int | None = None
    switch_step: int | None = None
    entropy_coef: float = 0.0

    @property
    def arm(self) -> str:
        """The arm label (module docstring): tang, annealed, EntropyReg or k_opt=K."""
        if self.transform == "tang":
            return "tang"
        if self.schedule != "constant":
            kind = "" if self.schedule == "step" else f"{self.schedule} "
            return f"annealed ({kind}{self.k_start}→{self.k_end})"
        if self.transform is None or (self.k_opt is None and self.transform != "loo"):
            base = "unknown"
        else:
            k = 1 if self.transform in ("loo", "none") else self.k_opt
            suffix = "" if self.transform in PAPER_DEFAULT_TRANSFORMS else f" [{self.transform}]"
            base = f"k_opt={k}{suffix}"
        if self.entropy_coef > 0:
            coef = f"{self.entropy_coef:g}"
            return f"EntropyReg ({coef})" if base == "k_opt=1" else f"{base} + EntropyReg ({coef})"
        return base

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONFIG_COLUMNS}


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def parse_config(raw: dict[str, Any], where: str, first_train: dict[str, Any] | None = None):
    """A :class:`RunConfig` from a resolved config; missing keys warn and take defaults.

    An older config without a schedule or entropy term ran the constant schedule with no
    entropy bonus; a missing transform or k_opt is taken from the first train event.
    """
    first_train = first_train or {}
    found = {
        "task": _lookup(raw, "task.name"),
        "model": _lookup(raw, "model.name"),
        "seed": _lookup(raw, "seed"),
        "n": _lookup(raw, "n"),
        "transform": _lookup(raw, "transform.name"),
        "k_opt": _lookup(raw, "transform.k_opt"),
        "schedule": _lookup(raw, "schedule.name"),
        "k_start": _lookup(raw, "schedule.k_start"),
        "k_end": _lookup(raw, "schedule.k_end"),
        "switch_step": _lookup(raw, "schedule.switch_step"),
        "entropy_coef": _lookup(raw, "trainer.entropy_coef"),
    }
    fallbacks = {
        "schedule": "constant",
        "entropy_coef": 0.0,
        "transform": first_train.get("transform"),
        "k_opt": first_train.get("k_opt"),
    }
    optional = {"k_start", "k_end", "switch_step"}
    missing = [key for key, value in found.items() if value is None and key not in optional]
    if missing:
        filled = {key: fallbacks[key] for key in missing if fallbacks.get(key) is not None}
        _warn(f"{where}: config lacks {', '.join(missing)}; using {filled or 'nothing'}")
        for key, value in filled.items():
            found[key] = value
    ints = ("seed", "n", "k_opt", "k_start", "k_end", "switch_step")
    for key in ints:
        if found[key] is not None:
            found[key] = int(found[key])
    found["entropy_coef"] = float(found["entropy_coef"] or 0.0)
    found["schedule"] = str(found["schedule"] or "constant")
    return RunConfig(**found)


def _read_config(run_dir: Path) -> dict[str, Any]:
    for candidate in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if candidate.is_file():
            try:
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                _warn(f"{candidate}: unreadable config ({err}); arm unknown")
                return {}
            return loaded if isinstance(loaded, dict) else {}
    _warn(f"{run_dir}: no config.yaml; arm unknown")
    return {}


@dataclass
class RunLog:
    """One run folder, read: its config, deduplicated records and status."""

    run: str
    run_dir: Path
    config: RunConfig
    records: list[dict[str, Any]]
    status: str
    detail: str = ""

    def last_step(self, event: str = "train", split: str | None = None) -> int | None:
        """The last step of ``event`` (for eval: on the held-out split, :func:`pick_split`)."""
        records = [
            r for r in self.records if r["event"] == event and isinstance(r.get("step"), int)
        ]
        if event == "eval" and records:
            split = pick_split([r.get("split") for r in records], split)
            records = [r for r in records if r.get("split") == split]
        return max((r["step"] for r in records), default=None)


def pick_split(logged: Sequence[Any], split: str | None = None) -> Any:
    """A run's held-out split among its eval events' splits (in log order): ``split`` if
    given, else "test" if logged, else the split of its last eval."""
    if split is not None:
        return split
    return PREFERRED_SPLIT if PREFERRED_SPLIT in logged else logged[-1]


def run_status(
    records: Sequence[dict[str, Any]], mtime: float, stale_after_s: float, now: float
) -> tuple[str, str]:
    """(finished | crashed | running, detail) from the last start/end records of a log.

    A log with no ``end`` after its last ``start`` is running if it was written to within
    ``stale_after_s`` seconds, otherwise crashed (the process died without logging).
    """
    last = {"start": -1, "end": -1}
    for i, record in enumerate(records):
        if record["event"] in last:
            last[record["event"]] = i
    if last["end"] > last["start"]:
        end = records[last["end"]]
        if end.get("status") == "finished":
            return "finished", ""
        return "crashed", f"end status {end.get('status')!r}: {end.get('error') or ''}".strip()
    idle = now - mtime
    if idle <= stale_after_s:
        return "running", f"no end event; last write {idle / 60:.0f} min ago"
    return "crashed", f"no end event; log idle for {idle / 3600:.1f} h"


def _find_run_dirs(root: Path) -> list[Path]:
    if not root.exists():
        raise FileNotFoundError(f"run path {root} does not exist")
    if root.is_file():
        raise NotADirectoryError(f"run path {root} is a file; give a folder of run folders")
    return sorted(p.parent for p in root.rglob("events.jsonl"))


def scan_runs(
    paths: Iterable[str | Path], *, stale_after_s: float = 3600.0, now: float | None = None
) -> list[RunLog]:
    """Every run folder (a folder with ``events.jsonl``) found recursively under ``paths``.

    Runs are named by their path below the given folder (prefixed by its name), so a
    run's name is stable across machines.
    """
    now = time.time() if now is None else now
    runs: list[RunLog] = []
    seen: set[Path] = set()
    names: set[str] = set()
    for root in map(Path, paths):
        for run_dir in _find_run_dirs(root):
            resolved = run_dir.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            events = run_dir / "events.jsonl"
            records = read_events(events)
            first_train = next((r for r in records if r["event"] == "train"), None)
            config = parse_config(_read_config(run_dir), str(run_dir), first_train)
            status, detail = run_status(records, events.stat().st_mtime, stale_after_s, now)
            name = (Path(root.absolute().name) / run_dir.relative_to(root)).as_posix()
            while name in names:  # two given folders with the same name and layout
                name += "'"
            names.add(name)
            runs.append(RunLog(name, resolved, config, records, status, detail))
    return runs


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_NOT_METRICS = {"event", "time", "step", "split", "schema", "resumed_from_step"}


_STRING_COLUMNS = ("task", "model", "transform", "schedule", "arm")
_INT_COLUMNS = ("seed", "n", "k_opt", "k_start", "k_end", "switch_step")


def runs_frame(runs: Sequence[RunLog]) -> pd.DataFrame:
    """Long format of :func:`load_runs` from already scanned runs.

    String columns are categorical and the config's integers nullable, which keeps a few
    million rows (long runs x ~40 metrics) to a few hundred MB.
    """
    owner, events, splits, steps, metrics, values = [], [], [], [], [], []
    for i, run in enumerate(runs):
        for record in run.records:
            step = record.get("step")
            if not isinstance(step, int):
                continue
            found = [
                (key, float(value))
                for key, value in record.items()
                if key not in _NOT_METRICS and _numeric(value)
            ]
            owner += [i] * len(found)
            events += [record["event"]] * len(found)
            splits += [record.get("split")] * len(found)
            steps += [step] * len(found)
            metrics += [key for key, _ in found]
            values += [value for _, value in found]
    index = np.asarray(owner, dtype=np.int64)
    df = pd.DataFrame(
        {
            "run": pd.Categorical.from_codes(index, [r.run for r in runs]),
            "run_dir": pd.Categorical.from_codes(index, [str(r.run_dir) for r in runs]),
            "event": pd.Categorical(events),
            "split": pd.Categorical(splits),
            "step": np.asarray(steps, dtype=np.int64),
            "metric": pd.Categorical(metrics),
            "value": np.asarray(values, dtype=float),
        }
    )
    config = pd.DataFrame([r.config.columns() for r in runs], columns=list(CONFIG_COLUMNS))
    for column in CONFIG_COLUMNS:
        if column in _STRING_COLUMNS:
            per_run = config[column].astype("category").array
        elif column in _INT_COLUMNS:
            per_run = config[column].astype("Int64").array
        else:
            per_run = config[column].astype(float).array
        df[column] = per_run.take(index)
    return df


def load_runs(paths: Iterable[str | Path], **scan_options: Any) -> pd.DataFrame:
    """All runs under ``paths`` in long format: one row per run x step x metric.

    Columns: run, run_dir, event (train/eval), split (eval only), step, metric, value, and
    the config columns task, model, seed, n, transform, k_opt, schedule, k_start, k_end,
    switch_step, entropy_coef, arm. Values are as logged (fractions, not percentages).
    """
    return runs_frame(scan_runs(paths, **scan_options))


def run_inventory(runs: Sequence[RunLog], split: str | None = None) -> pd.DataFrame:
    """One row per run: name, folder, setting, arm, seed, status and steps reached."""
    rows = [
        {
            "run": run.run,
            "run_dir": str(run.run_dir),
            "model": run.config.model,
            "task": run.config.task,
            "n": run.config.n,
            "arm": run.config.arm,
            "seed": run.config.seed,
            "status": run.status,
            "detail": run.detail,
            "steps": run.last_step("train"),
            "last_eval_step": run.last_step("eval", split),
        }
        for run in runs
    ]
    columns = ["run", "run_dir", "model", "task", "n", "arm", "seed", "status", "detail"]
    inventory = pd.DataFrame(rows, columns=[*columns, "steps", "last_eval_step"])
    return inventory.astype(
        {"n": "Int64", "seed": "Int64", "steps": "Int64", "last_eval_step": "Int64"}
    )


def find_toy_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Folders (the paths themselves or below them) holding the toy experiment's CSVs."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if root.is_dir():
            found.update(p.parent.resolve() for p in root.rglob("fig1_maxg_at_k.csv"))
    return sorted(found)


# ----------------------------------------------------------------------------- numbers


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
    """Row mask of the EntropyReg arms (a numpy mask: Series.map on no rows is no mask)."""
    return np.array([_is_entropy_baseline(str(arm)) for arm in frame["arm"]], dtype=bool)


def _is_entropy_baseline(arm: str) -> bool:
    return arm.startswith("EntropyReg (")


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


def _keep_one_run_per_seed(final: pd.DataFrame, where: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per (arm, seed), the run that reached the latest step; a duplicate warns.

    Returns the kept rows and {dropped run: why}.
    """
    reach = final[final["event"] == "train"].groupby("run")["step"].max()
    runs = final[["run", "arm", "seed"]].drop_duplicates().copy()
    runs["reach"] = runs["run"].map(reach).fillna(-1)
    runs = runs.sort_values(["reach", "run"], ascending=[False, True])
    duplicate = runs.duplicated(["arm", "seed"], keep="first")
    dropped = {}
    for row in runs[duplicate].itertuples():
        dropped[row.run] = f"repeats seed {row.seed} of {row.arm}; the longer run is used"
        _warn(f"{where}: {row.run} {dropped[row.run]}")
    return final[final["run"].isin(runs.loc[~duplicate, "run"])], dropped


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


def _display_model(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def _display_task(task: str) -> str:
    return BENCHMARKS.get(task, task)


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
    sub["row"] = sub["arm"].where(sub["arm"] != best, "EntropyReg")
    sub, dropped = _keep_one_run_per_seed(sub, where)
    skipped.update(dropped)
    sub, short = _drop_short_runs(sub)
    skipped.update(short)
    columns = table_columns(task)
    rows = [*PAPER_ROWS, *sorted(set(sub["row"]) - set(PAPER_ROWS), key=arm_sort_key)]
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
    title = f"{_display_model(model)} on {_display_task(task)}" + ("" if n is None else f" (n={n})")
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
    """The paper's Tables 1-8 (``analysis/paper/tables.csv``): table, model, benchmark, row,
    column (pass@K or cumulative_solve_rate), mean, se, all in %."""
    if path is None:
        import analysis

        path = Path(analysis.__file__).parent / "paper" / "tables.csv"
    return pd.read_csv(path)


# ----------------------------------------------------------------------------- rendering


@dataclass
class Grid:
    """A rendered table: header, body rows of strings, optional header groups and notes."""

    title: str
    header: list[str]
    body: list[list[str]]
    notes: list[str] = field(default_factory=list)
    groups: list[tuple[str, int]] | None = None
    """(label, span) over the header after the first column (LaTeX and HTML only)."""


def format_cell(mean: float, se: float, n_seeds: int, note: str = "") -> str:
    """``12.34 ± 0.56 (n=3)``; ``12.34 (n=1)`` for one seed; ``— (no runs)`` when empty."""
    if n_seeds == 0 or math.isnan(mean):
        return f"— ({note or 'no runs'})"
    if n_seeds == 1 or math.isnan(se):
        return f"{mean:.2f} (n={n_seeds})"
    return f"{mean:.2f} ± {se:.2f} (n={n_seeds})"


def table_grid(table: ResultsTable) -> Grid:
    """Our numbers in the paper's layout: one row per arm, one column per k_eval."""
    body = []
    for row in table.rows:
        cells = table.cells[table.cells["row"] == row]
        body.append(
            [row, *(format_cell(c.mean, c.se, c.n_seeds, c.note) for c in cells.itertuples())]
        )
    return Grid(
        table.title,
        [_display_model(table.model), *(c.label for c in table.columns)],
        body,
        table.notes,
    )


def comparison_grid(table: ResultsTable, paper: pd.DataFrame) -> Grid:
    """Ours, the paper's and ours − paper (± both s.e. combined) per cell."""
    number = table.paper.number if table.paper else None
    mine = paper[paper["table"] == number]
    body = []
    for row in table.rows:
        line = [row]
        for cell in table.cells[table.cells["row"] == row].itertuples():
            published = mine[(mine["row"] == row) & (mine["column"] == cell.metric)]
            line.append(format_cell(cell.mean, cell.se, cell.n_seeds, cell.note))
            if published.empty:
                line += ["— (not in paper)", "—"]
                continue
            p_mean, p_se = published.iloc[0][["mean", "se"]]
            line.append(f"{p_mean:.2f} ± {p_se:.2f}")
            if cell.n_seeds == 0:
                line.append("—")
                continue
            diff = cell.mean - p_mean
            se = math.sqrt((0.0 if math.isnan(cell.se) else cell.se) ** 2 + p_se**2)
            line.append(f"{diff:+.2f} ± {se:.2f}")
        body.append(line)
    header = [_display_model(table.model)]
    for column in table.columns:
        header += [f"{column.label} ours", f"{column.label} paper", f"{column.label} Δ"]
    groups = [(column.label, 3) for column in table.columns]
    notes = [
        *table.notes,
        "Paper: the published mean ± s.e. (3 seeds). Δ = ours − paper ± √(s.e.² + s.e.²).",
    ]
    return Grid(table.title, header, body, notes, groups)


def to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table with its title and notes."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = [f"**{grid.title}**", "", line(grid.header), line(["---"] * len(grid.header))]
    parts += [line(row) for row in grid.body]
    parts += [""] + [f"- {note}" for note in grid.notes]
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "—": "---",
    "–": "--",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "√": r"$\surd$",
    "²": r"$^2$",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    return _LATEX_PATTERN.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def to_latex(grid: Grid) -> str:
    """A booktabs ``table`` environment; notes become a footnote-size paragraph."""
    spec = "l" + "c" * (len(grid.header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize"]
    lines += [rf"\caption{{{latex_escape(grid.title)}}}", rf"\begin{{tabular}}{{{spec}}}"]
    lines.append(r"\toprule")
    header = grid.header
    if grid.groups:
        spans = [rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}" for g, span in grid.groups]
        lines.append(" & ".join(["", *spans]) + r" \\")
        header = [header[0], *(h.rsplit(" ", 1)[-1] for h in header[1:])]
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in grid.body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if grid.notes:
        notes = " ".join(latex_escape(note) for note in grid.notes)
        lines.append(rf"\par\smallskip\parbox{{\linewidth}}{{\tiny {notes}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(grid: Grid) -> str:
    """An HTML ``<table>`` with a caption and the notes below it."""
    esc = html.escape
    parts = [f"<table class='results'><caption>{esc(grid.title)}</caption><thead>"]
    header = grid.header
    if grid.groups:
        spans = "".join(f"<th colspan='{span}'>{esc(g)}</th>" for g, span in grid.groups)
        parts.append(f"<tr><th></th>{spans}</tr>")
        header = [header[0], *(h.rsplit(" ", 1)[-1] for h in header[1:])]
    parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in grid.body:
        cells = "".join(
            f"<td class='{'empty' if c.startswith('—') else 'num'}'>{esc(c)}</td>" for c in row[1:]
        )
        parts.append(f"<tr><th>{esc(row[0])}</th>{cells}</tr>")
    parts.append("</tbody></table>")
    if grid.notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in grid.notes))
        parts.append("</ul>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- figures

PANEL_WIDTH, PANEL_HEIGHT = 3.6, 2.9


def _figure(rows: int, cols: int, **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A grid of panels against the training step, ``axes[row, col]``."""
    fig = Figure(figsize=(PANEL_WIDTH * cols, PANEL_HEIGHT * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **subplot_kw)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # x: the step
    return fig, axes


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend below the panels, with every labelled line of any panel once."""
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        # as many columns as fit the figure's width at ~5 pt per character of label
        width_pt = 72 * fig.get_size_inches()[0]
        fit = int(width_pt // (5 * max(map(len, labels)) + 40))
        fig.legend(
            [handles[label] for label in labels],
            labels,
            loc="outside lower center",
            ncols=max(1, min(len(labels), fit)),
            fontsize=8,
            frameon=False,
        )


def seed_curves(
    df: pd.DataFrame,
    metric: str,
    *,
    event: str = "train",
    split: str | None = None,
    window: int | None = None,
    scale: float = 1.0,
) -> pd.DataFrame:
    """Mean and s.e. over seeds of ``metric`` against step, per arm.

    ``event="eval"`` reads each run's held-out split (:func:`held_out`). ``window``: a
    trailing rolling mean over the last ``window`` logged steps of each run is taken first
    (the paper's "rolling pass@k"). Returns arm, step, mean, se, n_seeds.
    """
    rows = held_out(df, split) if event == "eval" else df[df["event"] == event]
    sub = rows[rows["metric"] == metric][["run", "arm", "seed", "step", "value"]]
    sub = sub.astype({"run": str, "arm": str})
    sub = sub.sort_values(["run", "step"])
    if window and window > 1:
        rolled = sub.groupby("run")["value"].rolling(window, min_periods=1).mean()
        sub["value"] = rolled.reset_index(level=0, drop=True)
    sub["value"] = scale * sub["value"]
    stats = sub.groupby(["arm", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["se"] = stats["std"] / np.sqrt(stats["count"])
    return stats.rename(columns={"count": "n_seeds"})[["arm", "step", "mean", "se", "n_seeds"]]


def _plot_arms(
    ax: Any, curves: pd.DataFrame, arms: Sequence[str], seeds: dict[str, str], **line: Any
) -> None:
    """Each arm's mean curve in its colour (:func:`arm_style`), a ± s.e. band where
    there are two or more seeds, labelled with its number of seeds."""
    for arm in arms:
        curve = curves[curves["arm"] == arm]
        if curve.empty:
            continue
        style = arm_style(arm)
        label = f"{arm} ({seeds.get(arm, '0 seeds')})"
        # short runs get markers: a lone point would not show as a line
        dots = {"marker": "o", "markersize": 3} if len(curve) < 30 else {}
        ax.plot(curve["step"], curve["mean"], label=label, linewidth=1.4, **style, **dots | line)
        band = curve["se"].notna()
        if band.any():
            ax.fill_between(
                curve["step"][band],
                (curve["mean"] - curve["se"])[band],
                (curve["mean"] + curve["se"])[band],
                color=style["color"],
                alpha=0.18,
                linewidth=0,
            )


def _seed_counts(df: pd.DataFrame) -> dict[str, str]:
    """Legend text per arm: its number of seeds, and how many of them stopped early.

    A seed that crashed still draws its early steps, so the band there averages more
    seeds than at the end; the legend says so instead of claiming every seed throughout.
    """
    reach = df.groupby(["arm", "seed"], observed=True)["step"].max().reset_index()
    labels = {}
    for arm, seeds in reach.groupby("arm", observed=True):
        total = len(seeds)
        full = int((seeds["step"] == seeds["step"].max()).sum())
        text = f"{total} seed{'s' if total != 1 else ''}"
        if full < total:
            text = f"{full} of {text}; {total - full} stopped early"
        labels[str(arm)] = text
    return labels


def _arms_for_progress(df: pd.DataFrame, split: str | None) -> list[str]:
    """Arms of Figures 6-8: everything but annealed, EntropyReg at its best coefficient."""
    best, _ = best_entropy_arm(final_metrics(df, split))
    arms = {str(a) for a in df["arm"].unique()}
    keep = [
        a
        for a in arms
        if not a.startswith("annealed") and (not _is_entropy_baseline(a) or a == best)
    ]
    return sorted(keep, key=arm_sort_key)


def _train_k_evals(df: pd.DataFrame, k_evals: Sequence[int] | None) -> list[int]:
    logged = {m for m in df.loc[df["event"] == "train", "metric"].unique()}
    wanted = TRAIN_K_EVALS if k_evals is None else k_evals
    return [k for k in wanted if f"pass@{k}" in logged]


def _setting_title(model: str, task: str, n: int | None) -> str:
    return f"{_display_model(model)} on {_display_task(task)}" + ("" if n is None else f", n={n}")


def _window_text(window: int | None) -> str:
    return f"rolling mean over {window} steps" if window and window > 1 else "no smoothing"


def fig_annealing(
    df: pd.DataFrame,
    *,
    k_evals: Sequence[int] = (1, 4, 16),
    window: int = 20,
    split: str | None = None,
) -> Figure:
    """Figure 3: annealed k_opt vs constant k_opt; held-out (top) and training (bottom)
    pass@k_eval against step, one column per k_eval, mean ± s.e. over seeds."""
    arms = sorted({str(a) for a in df["arm"].unique()}, key=arm_sort_key)
    annealed = [a for a in arms if a.startswith("annealed")]
    if not annealed:
        raise NoDataError(
            "Figure 3 needs runs with an annealed k_opt schedule (schedule != constant)"
        )
    arms = annealed + [a for a in arms if _K_ARM.match(a) and "[" not in a and "+" not in a]
    k_evals = _train_k_evals(df, k_evals)
    if not k_evals:
        raise NoDataError("Figure 3: the runs log no training pass@k")
    seeds = _seed_counts(df)
    fig, axes = _figure(2, len(k_evals), sharex=True)
    for col, k in enumerate(k_evals):
        held_out = seed_curves(df, f"pass@{k}", event="eval", split=split, scale=100)
        training = seed_curves(df, f"pass@{k}", window=window, scale=100)
        panels = (
            (held_out, "held-out", {"marker": "o", "markersize": 3}),
            (training, "training", {}),
        )
        for row, (curves, what, line) in enumerate(panels):
            ax = axes[row, col]
            _plot_arms(ax, curves, arms, seeds, **line)
            ax.set_title(f"{what} pass@{k}", fontsize=9)
            ax.set_ylabel(f"{what} pass@{k} (%)", fontsize=8)
        axes[1, col].set_xlabel("training step", fontsize=8)
    for switch in df.loc[df["arm"].isin(annealed), "switch_step"].dropna().unique():
        for ax in axes.flat:
            ax.axvline(float(switch), color=ARM_COLORS["annealed"], linewidth=0.8, linestyle=":")
    fig.suptitle(
        f"Figure 3: annealing k_opt vs constant k_opt — {_setting_title(*_setting(df))}\n"
        f"held-out: every eval; training: {_window_text(window)}; "
        "dotted: k_opt switch; band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def _setting(df: pd.DataFrame) -> tuple[str, str, int | None]:
    first = df.iloc[0]
    ns = df["n"].dropna().unique()
    return str(first["model"]), str(first["task"]), int(ns[0]) if len(ns) == 1 else None


def fig_solve_rate_entropy(
    df: pd.DataFrame, *, window: int = 20, split: str | None = None
) -> Figure:
    """Figure 6: (a) cumulative solve rate and (b) policy entropy against step, per arm."""
    if df.empty or not df["metric"].isin(["cumulative_solve_rate", "entropy"]).any():
        raise NoDataError("Figure 6: no cumulative_solve_rate or entropy logged")
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    fig, axes = _figure(1, 2)
    solve = seed_curves(df, "cumulative_solve_rate", scale=100)
    entropy = seed_curves(df, "entropy", window=window)
    _plot_arms(axes[0, 0], solve, arms, seeds)
    _plot_arms(axes[0, 1], entropy, arms, seeds)
    axes[0, 0].set(xlabel="training step", ylabel="cumulative solve rate (%)")
    axes[0, 1].set(xlabel="training step", ylabel="entropy (nats per token)")
    axes[0, 0].set_title("(a) cumulative solve rate (train set)", fontsize=9)
    axes[0, 1].set_title(f"(b) entropy, {_window_text(window)}", fontsize=9)
    for ax in axes.flat:
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
    fig.suptitle(
        f"Figure 6: solve rate and entropy per k_opt — {_setting_title(*_setting(df))}\n"
        "band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def fig_rolling_pass_at_k(
    df: pd.DataFrame,
    *,
    k_evals: Sequence[int] | None = None,
    window: int = 20,
    split: str | None = None,
) -> Figure:
    """Figure 7: rolling training pass@k_eval against step per arm, one panel per k_eval."""
    k_evals = _train_k_evals(df, k_evals)
    if not k_evals:
        raise NoDataError("Figure 7: the runs log no training pass@k")
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    rows = math.ceil(len(k_evals) / 3)
    cols = math.ceil(len(k_evals) / rows)
    fig, axes = _figure(rows, cols, sharex=True)
    for ax, k in zip(axes.flat, k_evals, strict=False):
        _plot_arms(ax, seed_curves(df, f"pass@{k}", window=window, scale=100), arms, seeds)
        ax.set_title(f"pass@{k} (k_eval={k})", fontsize=9)
        ax.set_ylabel(f"rolling pass@{k} (%)", fontsize=8)
    for i, ax in enumerate(axes.flat):
        if i >= len(k_evals):
            ax.set_visible(False)
        elif i + cols >= len(k_evals):  # nothing below it: label the shared step axis
            ax.set_xlabel("training step", fontsize=8)
            ax.tick_params(labelbottom=True)
    fig.suptitle(
        f"Figure 7: rolling training pass@k_eval per k_opt — {_setting_title(*_setting(df))}\n"
        f"{_window_text(window)} of each run's per-step pass@k, then mean ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def fig_arc_progress(df: pd.DataFrame, *, window: int = 20, split: str | None = None) -> Figure:
    """Figure 8: ARC progress per k_opt: cumulative solve rate and rolling pass@1/pass@k_max."""
    if df.empty:
        raise NoDataError("Figure 8 needs ARC runs (task=arc)")
    k_evals = _train_k_evals(df, None)
    if not k_evals:
        raise NoDataError("Figure 8: the ARC runs log no training pass@k")
    shown = [1, k_evals[-1]] if k_evals[-1] != 1 else [1]
    arms = _arms_for_progress(df, split)
    seeds = _seed_counts(df)
    fig, axes = _figure(1, 1 + len(shown))
    _plot_arms(axes[0, 0], seed_curves(df, "cumulative_solve_rate", scale=100), arms, seeds)
    axes[0, 0].set_title("cumulative solve rate (train set)", fontsize=9)
    axes[0, 0].set_ylabel("cumulative solve rate (%)", fontsize=8)
    for ax, k in zip(axes[0, 1:], shown, strict=True):
        _plot_arms(ax, seed_curves(df, f"pass@{k}", window=window, scale=100), arms, seeds)
        ax.set_title(f"training pass@{k}", fontsize=9)
        ax.set_ylabel(f"rolling pass@{k} (%)", fontsize=8)
    for ax in axes.flat:
        ax.set_xlabel("training step", fontsize=8)
    fig.suptitle(
        f"Figure 8: ARC-AGI-1 progress per k_opt — {_setting_title(*_setting(df))}\n"
        f"pass@k: {_window_text(window)}; band: ± s.e. over seeds",
        fontsize=9,
    )
    _legend(fig, axes)
    return fig


def _read_toy_csv(toy_dir: str | Path, name: str) -> pd.DataFrame:
    path = Path(toy_dir) / name
    if not path.is_file():
        raise NoDataError(f"{path} does not exist")
    return pd.read_csv(path)


def toy_settings(toy_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``summary.json``, the config) of a toy run, for the figures' titles and markers.

    The config is the one Hydra saved beside the outputs (``.hydra/<time>/config.yaml``,
    the latest); without it, ``conf/toy.yaml``'s defaults with a warning.
    """
    toy_dir = Path(toy_dir)
    summary_path = toy_dir / "summary.json"
    if not summary_path.is_file():
        raise NoDataError(f"{summary_path} does not exist (toy run unfinished?)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    saved = sorted(toy_dir.glob(".hydra/*/config.yaml"))
    if saved:
        config_path = saved[-1]
    else:
        config_path = Path(__file__).resolve().parents[1] / "conf" / "toy.yaml"
        _warn(f"{toy_dir}: no saved toy config; titles use the defaults of {config_path}")
    return summary, yaml.safe_load(config_path.read_text(encoding="utf-8"))


def fig_toy_maxg(toy_dir: str | Path) -> Figure:
    """Figure 1: max_g@k (Eq. 11) and its derivative against θ per k (the toy's own plot)."""
    from experiments.toy import figures

    curves = _read_toy_csv(toy_dir, "fig1_maxg_at_k.csv")
    summary, config = toy_settings(toy_dir)
    optimal = {int(k): float(v) for k, v in summary["optimal_theta"].items()}
    return figures.plot_maxg(curves, optimal, summary["sigma"], config["fig1"]["n"])


def fig_toy_weights(toy_dir: str | Path) -> Figure:
    """Figure 2: the effective weight μ_i / C(n, k) (Eq. 12) of each sorted sample, per k."""
    from experiments.toy import figures

    return figures.plot_weights(_read_toy_csv(toy_dir, "fig2_weights.csv"))


def fig_toy_variance(toy_dir: str | Path) -> Figure:
    """Figure 4: variance of gradient estimators of max_g@k against n."""
    from experiments.toy import figures

    variance = _read_toy_csv(toy_dir, "fig4_variance.csv")
    setting = toy_settings(toy_dir)[0]["fig4"]
    return figures.plot_variance(variance, setting["theta"], setting["k"], setting["n_estimates"])


def fig_toy_effective_rewards(toy_dir: str | Path) -> Figure:
    """Figure 5: binned mean transformed reward against raw reward, per estimator and k."""
    from experiments.toy import figures

    rewards = _read_toy_csv(toy_dir, "fig5_effective_rewards.csv")
    return figures.plot_effective_rewards(rewards, toy_settings(toy_dir)[1]["fig5"]["n"])


def fig_toy_training(toy_dir: str | Path) -> Figure:
    """θ during PKPO policy-gradient training per k, against each k's optimal θ."""
    from experiments.toy import figures

    training = _read_toy_csv(toy_dir, "train_theta.csv")
    return figures.plot_training(training, toy_settings(toy_dir)[1]["train"]["n"])


# ----------------------------------------------------------------------------- the report


def notebook_params(defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of a notebook run: the JSON file named by ``$PKPO_ANALYSIS_PARAMS``
    (written by ``pkpo-analyze``), over ``defaults`` for interactive use."""
    params = {
        "runs": ["runs"],
        "toy_dirs": None,
        "out": "report",
        "cache": None,
        "rolling_window": 20,
        "split": None,
        "fig3_k_evals": [1, 4, 16],
        "stale_after_s": 3600.0,
    }
    params.update(defaults or {})
    path = os.environ.get(PARAMS_ENV)
    if path:
        params.update(json.loads(Path(path).read_text(encoding="utf-8")))
    return params


def load_for_notebook(params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long runs frame, inventory): the CLI's cache when present, else read the runs."""
    cache = params.get("cache")
    if cache and Path(cache).is_file():
        cached = pd.read_pickle(cache)
        return cached["runs"], cached["inventory"]
    runs = scan_runs(params["runs"], stale_after_s=params["stale_after_s"])
    return runs_frame(runs), run_inventory(runs, params["split"])


_TEX_SYMBOLS = {r"\theta": "θ", r"\pm": "±", r"\mu": "μ", r"\sim": "~", r"\,": " "}


def _plain_text(text: str) -> str:
    """Matplotlib mathtext (``$\\mathrm{max}_g@k$``) as plain text for HTML captions."""
    text = re.sub(r"\\(?:mathrm|text)\{([^}]*)\}", r"\1", text)
    text = re.sub(r"\\binom\{([^}]*)\}\{([^}]*)\}", r"C(\1, \2)", text)
    for tex, plain in _TEX_SYMBOLS.items():
        text = text.replace(tex, plain)
    return text.replace("$", "").replace("^2", "²")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


class Report:
    """Writes one notebook's tables and figures under ``out`` and lists them in
    ``out/manifest/<section>.json`` for :func:`write_index`."""

    def __init__(self, out: str | Path, section: str):
        self.out = Path(out)
        self.section = section
        self.entries: list[dict[str, Any]] = []
        for sub in ("tables", "figures", "manifest"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

    def table(
        self,
        key: str,
        grid: Grid,
        *,
        tidy: pd.DataFrame | None = None,
        used_runs: dict[str, str] | None = None,
        skipped_runs: dict[str, str] | None = None,
    ) -> str:
        """Markdown, LaTeX, HTML (and the tidy CSV) of a table; returns the Markdown.

        ``used_runs`` (run -> table row) and ``skipped_runs`` (run -> why not) feed the
        inventory's "which runs fed which cell".
        """
        stem = self.out / "tables" / _slug(key)
        markdown = to_markdown(grid)
        stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
        stem.with_suffix(".tex").write_text(to_latex(grid), encoding="utf-8")
        stem.with_suffix(".html").write_text(to_html(grid), encoding="utf-8")
        files = [f"tables/{stem.name}{s}" for s in (".md", ".tex", ".html")]
        if tidy is not None:
            flat = tidy.map(lambda v: ";".join(map(str, v)) if isinstance(v, tuple) else v)
            flat.to_csv(stem.with_suffix(".csv"), index=False)
            files.append(f"tables/{stem.name}.csv")
        self.entries.append(
            {
                "kind": "table",
                "key": key,
                "title": grid.title,
                "files": files,
                "used_runs": used_runs or {},
                "skipped_runs": skipped_runs or {},
            }
        )
        self.write()
        return markdown

    def results(self, table: ResultsTable, grid: Grid) -> str:
        """:meth:`table` for a :func:`results_table` rendered as ``grid``; rows without
        runs are also listed under "no data"."""
        markdown = self.table(
            table.key,
            grid,
            tidy=table.cells,
            used_runs=table.used_runs,
            skipped_runs=table.skipped_runs,
        )
        seeds = table.cells.groupby("row", sort=False)["n_seeds"].max()
        empty = list(seeds.index[seeds == 0])
        if empty:
            reason = "no runs at all" if len(empty) == len(seeds) else "no runs for "
            self.missing(
                table.key,
                table.title,
                reason + ("" if len(empty) == len(seeds) else ", ".join(empty)),
            )
        return markdown

    def figure(self, key: str, fig: Figure, title: str | None = None) -> Path:
        """PNG (150 dpi) and PDF of a figure; returns the PNG's path.

        The index shows ``title`` (default: the figure's first suptitle line) and the rest
        of the suptitle as the caption.
        """
        stem = self.out / "figures" / _slug(key)
        fig.savefig(stem.with_suffix(".png"), dpi=150)
        fig.savefig(stem.with_suffix(".pdf"))
        heading = fig.get_suptitle() or "; ".join(
            ax.get_title() for ax in fig.axes if ax.get_title()
        )
        lines = _plain_text(heading).splitlines() or [key]
        self.entries.append(
            {
                "kind": "figure",
                "key": key,
                "title": title or lines[0],
                "caption": " ".join(lines[1:] if title is None else lines),
                "files": [f"figures/{stem.name}.png", f"figures/{stem.name}.pdf"],
            }
        )
        self.write()
        return stem.with_suffix(".png")

    def figure_or_missing(self, key: str, title: str, make: Callable[[], Figure]) -> Path | None:
        """``make()``'s figure saved as :meth:`figure`, or, on :class:`NoDataError`, a
        :meth:`missing` entry; returns the PNG's path or None."""
        try:
            fig = make()
        except NoDataError as err:
            self.missing(key, title, str(err))
            return None
        return self.figure(key, fig, title)

    def missing(self, key: str, title: str, reason: str) -> None:
        """A table or figure that could not be made, and why."""
        self.entries.append({"kind": "missing", "key": key, "title": title, "reason": reason})
        self.write()

    def write(self) -> None:
        path = self.out / "manifest" / f"{self.section}.json"
        path.write_text(json.dumps(self.entries, indent=1), encoding="utf-8")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child{text-align:left} td.empty{color:#999} caption{font-weight:bold;text-align:left}
ul.notes{font-size:12px;color:#555} img{max-width:100%;border:1px solid #eee}
.status-crashed{color:#b00} .status-running{color:#b60} .status-finished{color:#070}
nav a{margin-right:1em}
"""


def _inventory_html(inventory: pd.DataFrame, usage: dict[str, list[str]]) -> str:
    if inventory.empty:
        return "<p>No run folders (with events.jsonl) were found.</p>"
    esc = html.escape
    header = ["run", "model", "task", "n", "arm", "seed", "status", "steps", "last eval", "fed"]
    rows = []
    for r in inventory.itertuples():
        fed = "; ".join(usage.get(r.run, [])) or "(no table cell)"
        cells = [
            r.run,
            r.model,
            r.task,
            r.n,
            r.arm,
            r.seed,
            f"{r.status} {r.detail}".strip(),
            r.steps,
            r.last_eval_step,
            fed,
        ]
        texts = [
            "—" if c is None or (isinstance(c, float) and math.isnan(c)) else str(c) for c in cells
        ]
        texts = [t[:-2] if t.endswith(".0") else t for t in texts]
        tds = "".join(f"<td>{esc(t)}</td>" for t in texts[1:])
        name = f"<th title='{esc(r.run_dir)}'>{esc(texts[0])}</th>"
        rows.append(f"<tr class='status-{esc(r.status)}'>{name}{tds}</tr>")
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_index(
    out: str | Path,
    inventory: pd.DataFrame,
    *,
    sections: Sequence[str],
    problems: Sequence[str] = (),
    warnings_seen: Sequence[str] = (),
) -> Path:
    """``out/index.html``: run inventory, every table and figure of ``sections``' manifests,
    the list of what has no data, and the warnings and failures met on the way."""
    out = Path(out)
    esc = html.escape
    entries = []
    for section in sections:
        path = out / "manifest" / f"{section}.json"
        if path.is_file():
            entries += [dict(e, section=section) for e in json.loads(path.read_text())]
    usage: dict[str, list[str]] = {}
    for entry in entries:
        for run, row in entry.get("used_runs", {}).items():
            usage.setdefault(run, []).append(f"{entry['key']}: {row}")
        for run, why in entry.get("skipped_runs", {}).items():
            usage.setdefault(run, []).append(f"not in {entry['key']}: {why}")

    body = ["<h1>PKPO: tables and figures from run logs</h1>"]
    body.append(
        "<nav><a href='#inventory'>Runs</a><a href='#tables'>Tables</a>"
        "<a href='#figures'>Figures</a><a href='#missing'>No data</a>"
        "<a href='#warnings'>Warnings</a></nav>"
    )
    counts = inventory["status"].value_counts().to_dict() if not inventory.empty else {}
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"
    body.append(f"<h2 id='inventory'>Run inventory ({len(inventory)} runs: {summary})</h2>")
    body.append(
        "<p>steps: last training step logged; last eval: step of the last held-out eval; "
        "fed: the table cells (table key: row) the run contributes to. Hover a run name for "
        "its folder.</p>"
    )
    body.append(_inventory_html(inventory, usage))
    body.append("<h2 id='tables'>Tables</h2>")
    for entry in (e for e in entries if e["kind"] == "table"):
        html_file = next(f for f in entry["files"] if f.endswith(".html"))
        links = " ".join(
            f"<a href='{esc(f)}'>{esc(Path(f).suffix[1:])}</a>" for f in entry["files"]
        )
        body.append(f"<div class='table' id='{esc(entry['key'])}'>")
        body.append((out / html_file).read_text(encoding="utf-8"))
        body.append(f"<p>files: {links}</p></div>")
    body.append("<h2 id='figures'>Figures</h2>")
    for entry in (e for e in entries if e["kind"] == "figure"):
        png, pdf = entry["files"]
        body.append(
            f"<figure id='{esc(entry['key'])}'><img src='{esc(png)}' alt='{esc(entry['title'])}'>"
            f"<figcaption><b>{esc(entry['title'])}</b> {esc(entry.get('caption', ''))} "
            f"(<a href='{esc(pdf)}'>pdf</a>)</figcaption></figure>"
        )
    missing = [e for e in entries if e["kind"] == "missing"]
    body.append(f"<h2 id='missing'>No data ({len(missing)})</h2><ul>")
    body += [f"<li><b>{esc(e['title'])}</b>: {esc(e['reason'])}</li>" for e in missing]
    body.append("</ul>")
    body.append(
        f"<h2 id='warnings'>Problems and warnings ({len(problems) + len(warnings_seen)})</h2><ul>"
    )
    body += [f"<li class='status-crashed'>{esc(p)}</li>" for p in problems]
    body += [f"<li>{esc(w)}</li>" for w in warnings_seen]
    body.append("</ul>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>PKPO report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
