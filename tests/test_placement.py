"""Runs side by side: how many fit a device (by hand), and two testbed runs side by side give
the events each gives alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import repro_sweep
from pkpo.placement import Device, parse_parallel, runs_per_device

# what differs between two runs of the same config: clocks, speeds, memory, their own folder
UNREPEATABLE = {"time", "tokens_per_s", "peak_rss_gib", "run_dir", "path", "seconds"}


@pytest.mark.parametrize(
    ("device", "footprint", "threads", "want"),
    [
        (Device("h200", 139.0, 16), 7.7, 1, 16),  # 125.1 GiB usable // 7.7 = 16; 16 cores
        (Device("h200", 139.0, 16), 7.7, 4, 4),  # cores bind: 16 // 4
        (Device("h100", 79.0, 16), 7.7, 1, 9),  # 71.1 // 7.7 = 9
        (Device("cpu", 20.0, 2), 1.0, 1, 2),  # 18 by memory, 2 by cores
        (Device("cpu", 20.0, 2), 1.0, 0, 1),  # torch's default threads take every core
        (Device("small", 4.0, 16), 7.7, 1, 1),  # none fits: one run, as without placement
    ],
)
def test_runs_per_device_by_hand(device, footprint, threads, want):
    assert runs_per_device(device, footprint, threads) == want


def test_parallel_is_auto_or_a_positive_number():
    assert parse_parallel("auto") == "auto"
    assert parse_parallel("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="--parallel must be 'auto' or a positive integer"):
            parse_parallel(bad)
    with pytest.raises(ValueError, match="footprint_gib must be positive"):
        runs_per_device(Device("cpu", 20.0, 2), 0.0, 1)


def test_a_bad_parallel_is_one_line_before_any_run(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        repro_sweep.main(["--parallel", "lots", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--parallel must be 'auto' or a positive integer, got 'lots'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in UNREPEATABLE and "time/" not in k}
        for line in lines
    ]


@pytest.mark.slow
def test_two_runs_side_by_side_give_the_events_of_each_alone(tmp_path: Path) -> None:
    steps = ["steps=2", "eval.problems=8", "eval.n=4", "save_every=0"]
    arms = ["k1", "k4"]
    common = ["--preset", "tiny_arith_noisy", "--seeds", "0", "--retries", "0"]
    pair = [*common, "--arms", *arms, "--parallel", "2", "--out", str(tmp_path / "pair")]
    assert repro_sweep.main([*pair, *steps]) == 0
    for arm in arms:
        alone = [*common, "--arms", arm, "--parallel", "1", "--out", str(tmp_path / arm)]
        assert repro_sweep.main([*alone, *steps]) == 0
        side_by_side = _events(tmp_path / "pair" / f"{arm}_s0")
        assert [e["event"] for e in side_by_side].count("train") == 2
        assert side_by_side == _events(tmp_path / arm / f"{arm}_s0")


def test_a_bad_override_is_one_line_before_any_run(tmp_path: Path, capsys) -> None:
    argv = ["--preset", "tiny_arith_noisy", "--out", str(tmp_path / "out"), "no_such_key=1"]
    with pytest.raises(SystemExit) as exit_:
        repro_sweep.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Could not override 'no_such_key'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
