"""The closing summary pkpo-train prints and the figure it draws (pkpo/summary.py),
on an events.jsonl written by hand here; expected numbers are computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pkpo import summary
from pkpo.logger import read_events


def _write(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def _eval(step: int, p1: float, se1: float, p4: float, se4: float) -> dict:
    return {
        "event": "eval",
        "step": step,
        "num_problems": 200,
        "n_eval": 16,
        "pass@1": p1,
        "pass@1_se": se1,
        "pass@4": p4,
        "pass@4_se": se4,
    }


def _train(step: int, reward: float, entropy: float, solved: int) -> dict:
    return {
        "event": "train",
        "step": step,
        "reward_mean": reward,
        "entropy": entropy,
        "cumulative_solve_rate": solved / 800,
        "solved": solved,
        "num_problems": 800,
    }


@pytest.fixture
def run(tmp_path: Path) -> Path:
    # 20 train steps: reward 0.1 for the first 10, 0.3 for the last 10; entropy 1.5 -> 1.0
    trains = [
        _train(s, 0.1 if s < 10 else 0.3, 1.5 if s < 10 else 1.0, 10 * (s + 1)) for s in range(20)
    ]
    return _write(
        tmp_path / "run",
        [
            {"event": "start", "time": 100.0},
            _eval(0, 0.10, 0.01, 0.30, 0.03),
            *trains,
            _eval(20, 0.16, 0.02, 0.34, 0.04),
            {"event": "end", "time": 172.0, "step": 20, "status": "finished"},
        ],
    )


def test_held_out_change_is_the_difference_over_the_combined_se() -> None:
    change = summary.held_out_change(_eval(0, 0.10, 0.01, 0, 0), _eval(5, 0.16, 0.02, 0, 0), 1)
    assert change["diff"] == pytest.approx(0.06)
    assert change["se"] == pytest.approx(0.05**0.5 / 10)  # sqrt(0.01^2 + 0.02^2)
    assert change["z"] == pytest.approx(0.06 / 0.0223607, rel=1e-5)  # 2.683


def test_summary_reports_before_after_solve_rate_entropy_and_where_things_are(run: Path) -> None:
    text = summary.run_summary(read_events(run / "events.jsonl"), run, run / "progress.png")
    assert "step 0 -> 20 (200 problems x 16 samples" in text
    assert "pass@1   0.100 +- 0.010 -> 0.160 +- 0.020  (+0.060, +2.7 s.e.)" in text
    assert "pass@4   0.300 +- 0.030 -> 0.340 +- 0.040  (+0.040, +0.8 s.e.)" in text  # 0.04/0.05
    assert "reward 0.100 -> 0.300, entropy 1.500 -> 1.000" in text
    assert "cumulative solve rate 0.250 (200 of 800" in text
    assert "finished in 72 s" in text
    assert f"run folder: {run}" in text and f"figure: {run / 'progress.png'}" in text


def test_a_run_with_one_evaluation_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    run = _write(tmp_path / "one", [_eval(0, 0.1, 0.01, 0.3, 0.03), _train(0, 0.1, 1.0, 3)])
    text = summary.run_summary(read_events(run / "events.jsonl"), run)
    assert "one held-out evaluation (step 0): nothing to compare" in text
    assert "pass@1 " not in text and "figure:" not in text


def test_progress_figure_is_a_png_in_the_run_folder(run: Path, tmp_path: Path) -> None:
    path = summary.plot_progress(read_events(run / "events.jsonl"), run)
    assert path == run / summary.FIGURE
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    records = [_eval(0, 0.1, 0.01, 0.3, 0.03)]
    empty = _write(tmp_path / "empty", records)
    assert summary.plot_progress(records, empty) is None and not (empty / summary.FIGURE).exists()


def test_summarize_reads_the_log_draws_the_figure_and_names_it(run: Path) -> None:
    text = summary.summarize(run)
    assert (run / summary.FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(+0.060, +2.7 s.e.)" in text and text.endswith(f"figure: {run / summary.FIGURE}")


def test_a_figure_that_cannot_be_written_costs_one_warning_not_the_run(
    run: Path, monkeypatch, capsys
) -> None:
    import errno
    import os

    from matplotlib.figure import Figure

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full_disk)
    text = summary.summarize(run)
    assert "(+0.060, +2.7 s.e.)" in text and "figure:" not in text
    assert capsys.readouterr().err == (
        f"[pkpo] warning: {run / summary.FIGURE} not written: [Errno 28] No space left on device\n"
    )
