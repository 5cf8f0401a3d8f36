"""Bad configs get one line naming the key and a non-zero exit, with and without dry_run."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BAD = [  # (override, what the line must name)
    ("trainer.lr=abc", "trainer.lr"),
    ("trainer.lr=-1e-4", "trainer.lr"),
    ("trainer.clip_eps=0", "trainer.clip_eps"),
    ("trainer.betas=[0.9,1.5]", "trainer.betas"),
    ("trainer.micro_batch_size=0", "trainer.micro_batch_size"),
    ("sampler.top_p=2", "sampler.top_p"),
    ("sampler.temperature=0", "sampler.temperature"),
    ("n=0", "n must"),
    ("eval.n=-2", "eval.n"),
    ("transform.name=foo", "transform.name"),
    ("schedule.k_opt=32", "k_opt=32"),  # bound that depends on n = 16
    ("schedule=step schedule.switch_step=-3", "schedule.switch_step"),
    ("schedule=step schedule.switch_step=999", "schedule.switch_step"),  # > steps
    ("model.path=/no/such/folder", "model.path"),
    ("model.sha256=0000", "model.sha256"),
    ("resume=/no/such/run", "resume"),
    ("task.digits=0", "task"),
    ("score_timeout_s=-5", "score_timeout_s"),
]


def _run(override: str, dry: bool, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [sys.executable, "-m", "pkpo.train", "experiment=tiny_arith_noisy", *override.split()]
    if dry:
        args.append("dry_run=true")
    args.append(f"hydra.run.dir={out}")
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("dry", [True, False], ids=["dry_run", "run"])
def test_each_bad_config_gets_one_line_and_a_non_zero_exit(dry, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: _run(case[0], dry, tmp_path / "run"), BAD))
    for (override, key), done in zip(BAD, results, strict=True):
        lines = [line for line in done.stderr.splitlines() if line.startswith("pkpo-train: error:")]
        assert done.returncode == 2, (override, done.returncode, done.stderr[-2000:])
        assert len(lines) == 1 and key in lines[0], (override, done.stderr[-2000:])
        assert "Traceback" not in done.stderr + done.stdout, override


@pytest.mark.slow
def test_hydra_full_error_still_shows_the_traceback():
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    args = [
        sys.executable,
        "-m",
        "pkpo.train",
        "experiment=tiny_arith_noisy",
        "n=0",
        "dry_run=true",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
