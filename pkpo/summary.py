"""The closing summary of one run: what ``pkpo-train`` prints when a run ends, and the figure
it draws beside the log (``<run>/progress.png``: held-out pass@k and training reward by step).

Both take the records of the run's ``events.jsonl`` (schema in :mod:`pkpo.logger`), which
:func:`summarize` reads once; so they also work on a finished run folder:
``python -m pkpo.summary <run folder>``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pkpo.logger import read_events

FIGURE = "progress.png"
WINDOW = 10  # train steps averaged at the start and at the end of a run


def _pass_ks(record: dict[str, Any]) -> list[int]:
    """The k of every ``pass@k`` an eval event logged with its standard error."""
    return sorted(
        int(key[5:]) for key in record if key.startswith("pass@") and f"{key}_se" in record
    )


def held_out_change(first: dict[str, Any], last: dict[str, Any], k: int) -> dict[str, float]:
    """pass@k at two evaluations, their difference and the difference in standard errors.

    The s.e. of the difference is sqrt(se_first^2 + se_last^2): it treats the two
    evaluations as independent; on the same held-out problems they are positively
    correlated, so this overstates the s.e. and the z it gives is conservative.
    """
    key = f"pass@{k}"
    before, after = float(first[key]), float(last[key])
    se = math.hypot(float(first[f"{key}_se"]), float(last[f"{key}_se"]))
    diff = after - before
    return {"before": before, "after": after, "diff": diff, "se": se, "z": diff / se if se else 0.0}


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in records if isinstance(r.get(key), int | float)]
    return float(np.mean(values)) if values else float("nan")


def running_seconds(events: Sequence[dict[str, Any]]) -> float:
    """The wall time the run's attempts ran: each from its ``start`` to its last record, the
    time between a crash and the resume left out."""
    total, began, last = 0.0, None, None
    for record in (r for r in events if isinstance(r.get("time"), int | float)):
        if record["event"] == "start":
            total += 0.0 if began is None else last - began
            began = record["time"]
        last = record["time"]
    return total + (0.0 if began is None else last - began)


def summarize(run_dir: str | Path) -> str:
    """Read ``<run_dir>/events.jsonl`` once, draw ``progress.png`` and return the summary.

    A figure that cannot be written (a full disk, a read-only folder) costs one warning
    line, not the run: its log is already whole, and a non-zero exit would have a sweep
    launcher count a finished run as failed."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / "events.jsonl")
    try:
        figure = plot_progress(events, run_dir)
    except OSError as err:
        print(f"[pkpo] warning: {run_dir / FIGURE} not written: {err}", file=sys.stderr)
        figure = None
    return run_summary(events, run_dir, figure)


def run_summary(events: Sequence[dict[str, Any]], run_dir: Path, figure: Path | None = None) -> str:
    """A few lines on what a run did: held-out pass@k at its first and last evaluation (with
    the change in standard errors), the training reward and entropy over its first and last
    ``WINDOW`` steps, the cumulative solve rate, and where its folder and figure are."""
    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    lines = [f"[pkpo] summary of {run_dir}"]
    if len(evals) >= 2:
        first, last = evals[0], evals[-1]
        lines.append(
            f"  held-out pass@k, step {first['step']} -> {last['step']} "
            f"({last['num_problems']} problems x {last['n_eval']} samples; +- s.e.):"
        )
        for k in _pass_ks(last):
            c = held_out_change(first, last, k)
            lines.append(
                f"    pass@{k:<3d} {c['before']:.3f} +- {first[f'pass@{k}_se']:.3f} -> "
                f"{c['after']:.3f} +- {last[f'pass@{k}_se']:.3f}  "
                f"({c['diff']:+.3f}, {c['z']:+.1f} s.e.)"
            )
    elif evals:
        lines.append(f"  one held-out evaluation (step {evals[0]['step']}): nothing to compare")
    if train:
        head, tail = train[:WINDOW], train[-WINDOW:]
        lines.append(
            f"  training ({len(train)} steps; means of the first and last {len(tail)}): reward "
            f"{_mean(head, 'reward_mean'):.3f} -> {_mean(tail, 'reward_mean'):.3f}, entropy "
            f"{_mean(head, 'entropy'):.3f} -> {_mean(tail, 'entropy'):.3f} nats/token"
        )
        end = train[-1]
        lines.append(
            f"  cumulative solve rate {end['cumulative_solve_rate']:.3f} "
            f"({end['solved']} of {end['num_problems']} training problems solved at least once)"
        )
    ends = [e for e in events if e["event"] == "end"]
    attempts = sum(e["event"] == "start" for e in events)
    if ends and attempts:
        took = f"{running_seconds(events):.0f} s"
        took += f" over {attempts} attempts" if attempts > 1 else ""
        lines.append(f"  {ends[-1]['status']} in {took}")
    lines.append(f"  run folder: {run_dir}")
    if figure is not None:
        lines.append(f"  figure: {figure}")
    return "\n".join(lines)


def plot_progress(events: Sequence[dict[str, Any]], run_dir: Path) -> Path | None:
    """Draw held-out pass@k (+- s.e.) and the training reward by step of a run's ``events``
    into ``<run_dir>/progress.png``; returns its path, or None when it logged no train step."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: runs happen on machines without displays
    import matplotlib.pyplot as plt

    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    if not train:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    steps = [e["step"] for e in evals]
    for k in _pass_ks(evals[-1]) if evals else []:
        mean = np.array([e[f"pass@{k}"] for e in evals])
        se = np.array([e[f"pass@{k}_se"] for e in evals])
        (line,) = left.plot(steps, mean, marker="o", ms=3, label=f"pass@{k}")
        left.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2)
    left.set(xlabel="step", ylabel="held-out pass@k", title="held-out evaluation (+- s.e.)")
    if evals:
        left.legend(fontsize=7, ncol=2)
    train_steps = np.array([e["step"] for e in train])
    reward = np.array([e["reward_mean"] for e in train])
    window = min(WINDOW, len(reward))
    rolling = np.convolve(reward, np.ones(window) / window, mode="valid")
    right.plot(train_steps, reward, color="0.75", lw=0.8, label="reward (per step)")
    right.plot(train_steps[window - 1 :], rolling, color="C0", label=f"reward ({window}-step mean)")
    right.plot(
        train_steps,
        [e["cumulative_solve_rate"] for e in train],
        color="C2",
        label="cumulative solve rate",
    )
    right.set(xlabel="step", ylabel="training problems", title="training")
    right.legend(fontsize=7)
    fig.suptitle(run_dir.name, fontsize=9)
    path = run_dir / FIGURE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m pkpo.summary RUN_DIR [RUN_DIR ...]``: draw and print each summary."""
    for run_dir in sys.argv[1:] if argv is None else argv:
        print(summarize(run_dir), flush=True)


if __name__ == "__main__":
    main()
