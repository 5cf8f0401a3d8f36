"""Reading run folders: ``config.yaml`` + ``events.jsonl`` (schema in :mod:`pkpo.logger`).

Tolerant of crashed, running, resumed and older logs: :func:`scan_runs` reads every run
folder under some paths into :class:`RunLog` objects, :func:`runs_frame` / :func:`load_runs`
give them in long format (one row per run x step x metric), :func:`run_inventory` one row
per run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pkpo.arms import PAPER_SCALE, ArmConfig
from pkpo.logger import read_events

from .errors import warn

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
    "scale",
    "arm",
)
ARM_FIELDS = ("transform", "k_opt", "schedule", "k_start", "k_end", "entropy_coef", "scale")
"""The columns that state a run's arm (the fields of :class:`pkpo.arms.ArmConfig`)."""


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
    scale: str = PAPER_SCALE
    """``transform.scale`` (:func:`pkpo.transforms.rescale`); older runs: the paper's."""

    @property
    def arm_config(self) -> ArmConfig:
        """The run's arm, structured (:class:`pkpo.arms.ArmConfig`)."""
        return ArmConfig(*(getattr(self, name) for name in ARM_FIELDS))

    @property
    def arm(self) -> str:
        """The arm label (:mod:`pkpo.arms`): tang, annealed, EntropyReg or k_opt=K."""
        return self.arm_config.label

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
    entropy bonus; a missing transform, or the k_opt of a constant schedule, is taken from
    the first train event (an annealed run needs no k_opt).
    """
    first_train = first_train or {}
    found = {
        "task": _lookup(raw, "task.name"),
        "model": _lookup(raw, "model.name"),
        "seed": _lookup(raw, "seed"),
        "n": _lookup(raw, "n"),
        "transform": _lookup(raw, "transform.name"),
        # run folders from before k_opt moved to the schedule group keep it under transform
        "k_opt": _lookup(raw, "schedule.k_opt") or _lookup(raw, "transform.k_opt"),
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
    if found["schedule"] not in (None, "constant"):
        optional.add("k_opt")  # an annealed run has no one k_opt
    missing = [key for key, value in found.items() if value is None and key not in optional]
    if missing:
        filled = {key: fallbacks[key] for key in missing if fallbacks.get(key) is not None}
        warn(f"{where}: config lacks {', '.join(missing)}; using {filled or 'nothing'}")
        for key, value in filled.items():
            found[key] = value
    ints = ("seed", "n", "k_opt", "k_start", "k_end", "switch_step")
    for key in ints:
        if found[key] is not None:
            found[key] = int(found[key])
    found["entropy_coef"] = float(found["entropy_coef"] or 0.0)
    found["schedule"] = str(found["schedule"] or "constant")
    found["scale"] = str(_lookup(raw, "transform.scale") or PAPER_SCALE)
    return RunConfig(**found)


def _read_config(run_dir: Path) -> dict[str, Any]:
    for candidate in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if candidate.is_file():
            try:
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                warn(f"{candidate}: unreadable config ({err}); arm unknown")
                return {}
            return loaded if isinstance(loaded, dict) else {}
    warn(f"{run_dir}: no config.yaml; arm unknown")
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


_STRING_COLUMNS = ("task", "model", "transform", "schedule", "scale", "arm")
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
    switch_step, entropy_coef, scale, arm. Values are as logged (fractions, not percentages).
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


def runs_under(df: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """The rows of a long runs frame whose run folder lies inside ``folder`` (a study's)."""
    root = Path(folder).resolve()
    inside = df["run_dir"].astype(str).map(lambda d: Path(d).resolve().is_relative_to(root))
    return df[inside.to_numpy(dtype=bool)]


def arms_in(frame: pd.DataFrame) -> dict[str, ArmConfig]:
    """Each arm label of ``frame`` (runs in long or inventory format) -> its structured
    :class:`~pkpo.arms.ArmConfig`, rebuilt from the config columns, never from the label."""
    out: dict[str, ArmConfig] = {}
    # one row per label: runs that share a label share an arm (loo at any k_opt is k_opt=1)
    for row in frame.drop_duplicates("arm")[[*ARM_FIELDS]].itertuples(index=False):
        values = {k: (None if pd.isna(v) else v) for k, v in zip(ARM_FIELDS, row, strict=True)}
        for key in ("k_opt", "k_start", "k_end"):
            if values[key] is not None:
                values[key] = int(values[key])
        values["entropy_coef"] = float(values["entropy_coef"] or 0.0)
        arm = ArmConfig(**values)
        out[arm.label] = arm
    return out
