"""The GPU study's device script refuses bad input in one line, and its timing table takes
medians over the steps after the first (events written by hand)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from experiments.bench_gpu_window import run_row, table

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "gpu_study.sh"
REHEARSAL = REPO / "experiments" / "gpu_rehearsal" / "protocol.yaml"


def _train(step: int, seconds: float, sample: float) -> dict:
    times = {"time/step": seconds, "time/sample": sample, "time/score": 0.01}
    return {"event": "train", "step": step, "tokens_per_s": 100.0 * (step + 1), **times,
            "time/update": seconds - sample - 0.01, "peak_rss_gib": 1.0 + step % 3}  # fmt: skip


def test_timing_row_is_the_median_after_the_first_step(tmp_path: Path) -> None:
    events = [{"event": "start"}, _train(0, 30.0, 25.0), _train(1, 2.0, 1.0)]
    events += [_train(2, 4.0, 1.5), _train(3, 3.0, 2.0)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    row = run_row(tmp_path, wall_s=50.0)
    assert row["first step"] == 30.0
    assert row["step"] == 3.0 and row["sample"] == 1.5  # medians of (2, 4, 3) and (1, 1.5, 2)
    assert row["update"] == pytest.approx(0.99)  # median of 0.99, 2.49, 0.99
    assert row["tok/s"] == 300.0 and row["steps"] == 4 and row["wall"] == 50.0
    assert row["peak GiB"] == 3.0  # the highest of 1, 2, 3, 1
    want = "| run | 3.00 | 1.50 | 0.01 | 0.99 | 30.00 | 300 | 3.00 | 4 | 50.00 |"
    assert want in table({"run": row})


def _script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ((str(REHEARSAL),), {"OUT": ""}, "gpu_study: error: set OUT to the folder for the results"),
        (("no/such.yaml",), {}, "gpu_study: error: PROTOCOL: no file no/such.yaml"),
        ((str(REHEARSAL),), {"CARRY": "empty"}, "gpu_study: error: CARRY: no wheels in"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, args, env, line) -> None:
    env = {"OUT": str(tmp_path / "out"), **env}
    if "CARRY" in env:
        env["CARRY"] = str(tmp_path / env["CARRY"])
    done = _script(*args, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(line) and done.stderr.count("\n") == 1
