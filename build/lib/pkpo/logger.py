"""Run logging: one JSON-lines event log per run folder, mirrored to wandb.

``<run>/events.jsonl`` is the single source the analysis reads. Every line is one JSON
object with ``event``, ``time`` (unix seconds) and, for step events, ``step``:

* ``{"event": "start", "schema": 1, "run_dir": ..., "resumed_from_step": int | null}``
  (the resolved config is in ``<run>/config.yaml``, written before this line);
* ``{"event": "train", "step": t, "k_opt": int, "transform": str,
  "pass@1": ..., "pass@2": ..., (k_eval in {1, 2, 4, 8, 12, 16}, those <= n),
  "cumulative_solve_rate": ..., "solved": int, "num_problems": int,
  "entropy": ..., "reward_mean": ..., "adv_mean": ..., "adv_std": ..., "adv_abs_max": ...,
  "kl_old": ..., "kl": ... (to the reference policy, when kl_coef > 0),
  "clip_frac": ..., "ratio_dev": ..., "loss": ..., "grad_norm": ..., "lr": ...,
  "score_failures": int (verifier errors), "score_timeouts": int (samples whose reward a
  time limit decided: code that ran out of time, an answer that could not be compared in
  time, a hung verifier; counted apart from wrong answers), "sampled_tokens": int,
  "tokens_per_s": ...,
  "peak_rss_gib": ..., "gpu_peak_gib": ..., "gpu_reserved_peak_gib": ... (GPU: on CUDA only),
  "time/sample": s, "time/score": s, "time/transform": s, "time/update": s,
  "time/sync": s, "time/step": s (the whole step but the writing of this line)}``;
* ``{"event": "eval", "step": t, "split": str, "num_problems": int, "n_eval": int,
  "reward_mean": ..., "score_failures": int, "score_timeouts": int, "pass@1": ...,
  "pass@1_se": ..., ..., "problem_ids": [str, ...], "successes": [int, ...]}`` (standard
  errors are over problems of the per-problem unbiased estimates; ``successes[i]`` counts the
  samples of problem ``problem_ids[i]`` with reward 1, of ``n_eval``);
* ``{"event": "score_failure", "step": t, "problem_id": str, "error": str}``;
* ``{"event": "checkpoint", "step": t, "path": str, "seconds": float}``;
* ``{"event": "end", "step": t, "status": "finished" | "failed", "error": str | null}``.

A resumed run appends to the same file; readers keep the last record of each (event,
step) so that steps replayed after a crash are not double counted.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null keeps the line parseable everywhere
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


class EventLog:
    """Append-only JSON-lines log; each line is flushed and fsynced as it is written."""

    def __init__(self, run_dir: str | Path, wandb_run: Any = None):
        self.path = Path(run_dir) / "events.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._wandb = wandb_run

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": time.time()}
        record.update({k: _jsonable(v) for k, v in fields.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._wandb is not None and event in ("train", "eval"):
            prefix = "train" if event == "train" else f"eval_{record.get('split', 'test')}"
            metrics = {
                f"{prefix}/{k}": v
                for k, v in record.items()
                if isinstance(v, int | float) and k not in ("step", "time")
            }
            self._wandb.log(metrics, step=record.get("step"))
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


# ----------------------------------------------------------------------------- reading


class EventLogWarning(UserWarning):
    """A line of an event log that could not be read (cut short by a crash, fused lines)."""


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The records of one ``events.jsonl``, resume duplicates removed (:func:`dedupe_records`).

    A line that is not a JSON object with an ``event`` (a line cut short by a crash, or
    two lines fused by a resume after one) is skipped with an :class:`EventLogWarning`.
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
                warnings.warn(
                    f"{path}:{lineno}: unreadable line skipped ({err.msg}): {line[:80]!r}",
                    EventLogWarning,
                    stacklevel=2,
                )
                continue
            if not isinstance(record, dict) or not isinstance(record.get("event"), str):
                warnings.warn(
                    f"{path}:{lineno}: line without an 'event' field skipped",
                    EventLogWarning,
                    stacklevel=2,
                )
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
